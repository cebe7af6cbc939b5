"""
The behaviour every L{IFirewall} must have. The same checks run against L{FakeFirewall}
(tests/unit/test_firewall.py) and the real iptables firewall (tests/integration/
test_sites_firewall.py), which keeps the fake honest. Each check gets a subnet no container
uses, and leaves no firewall for it behind.
"""

from __future__ import annotations

from typing import Any

from zope.interface.verify import verifyObject

from director.orchestrator.firewall import LINK_LOCAL, IFirewall, SitesFirewall


async def check_interface(firewall: Any, subnet: str) -> None:
    assert verifyObject(IFirewall, firewall)


async def check_ensure_is_idempotent(firewall: Any, subnet: str) -> None:
    """The first ensure installs the rules, the same ensure again changes nothing."""
    wanted = SitesFirewall(subnet, frozenset({("172.17.0.1", 5432)}))
    assert await firewall.rules(subnet) is None
    try:
        assert await firewall.ensure(wanted) is True
        assert await firewall.ensure(wanted) is False
        assert await firewall.rules(subnet) == wanted
        assert (await firewall.rules(subnet)).blocked == (LINK_LOCAL,)
    finally:
        await firewall.remove(subnet)


async def check_allowances_are_kept(firewall: Any, subnet: str) -> None:
    """Ports another orchestrator (or an earlier run) allowed stay; blocked networks follow."""
    try:
        await firewall.ensure(SitesFirewall(subnet, frozenset({("172.17.0.1", 5432)})))
        await firewall.ensure(
            SitesFirewall(subnet, frozenset({("172.17.0.1", 3306)}), ("10.0.0.0/8",))
        )
        assert await firewall.rules(subnet) == SitesFirewall(
            subnet, frozenset({("172.17.0.1", 5432), ("172.17.0.1", 3306)}), ("10.0.0.0/8",)
        )
        assert await firewall.ensure(SitesFirewall(subnet, blocked=("10.0.0.0/8",))) is False
    finally:
        await firewall.remove(subnet)


async def check_remove(firewall: Any, subnet: str) -> None:
    """Remove takes the firewall away (once); ensure afterwards starts afresh."""
    await firewall.ensure(SitesFirewall(subnet, frozenset({("172.17.0.1", 5432)})))
    assert await firewall.remove(subnet) is True
    assert await firewall.remove(subnet) is False
    assert await firewall.rules(subnet) is None
    try:
        assert await firewall.ensure(SitesFirewall(subnet)) is True
        assert await firewall.rules(subnet) == SitesFirewall(subnet)
    finally:
        await firewall.remove(subnet)


CHECKS = [check_interface, check_ensure_is_idempotent, check_allowances_are_kept, check_remove]
