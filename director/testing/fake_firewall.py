"""
An in-memory L{IFirewall} for unit tests. It passes the same contract
(L{director.testing.firewall_contract}) as the real iptables firewall.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from director.orchestrator.firewall import FirewallError, IFirewall, SitesFirewall


@implementer(IFirewall)
class FakeFirewall:
    """What each subnet's firewall enforces; C{broken} makes every call fail (as without root)."""

    def __init__(self) -> None:
        self.installed: dict[str, SitesFirewall] = {}
        self.ensured = 0  # calls of ensure, to count what the runtime asks for
        self.broken: str | None = None

    def ensure(self, rules: SitesFirewall) -> Deferred[bool]:
        self.ensured += 1
        if self.broken is not None:
            return fail(FirewallError(self.broken))
        present = self.installed.get(rules.subnet)
        wanted = rules if present is None else replace(rules, allow=rules.allow | present.allow)
        self.installed[rules.subnet] = wanted
        return succeed(wanted != present)

    def rules(self, subnet: str) -> Deferred[SitesFirewall | None]:
        if self.broken is not None:
            return fail(FirewallError(self.broken))
        return succeed(self.installed.get(SitesFirewall(subnet).subnet))

    def remove(self, subnet: str) -> Deferred[bool]:
        if self.broken is not None:
            return fail(FirewallError(self.broken))
        return succeed(self.installed.pop(SitesFirewall(subnet).subnet, None) is not None)
