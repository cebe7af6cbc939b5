"""
The sites firewall: its rules as plain values, the fake against the shared contract, and how
the runtime keeps it (installed at start, restored by the reconcile, database grants let
through and remembered, no dynamic site without it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from director.common.config import ConfigError, parse_config
from director.common.nginx import NginxConfigDirectory
from director.common.threads import InlineRunner
from director.orchestrator.firewall import (
    LINK_LOCAL,
    FirewallError,
    SitesFirewall,
    chain_names,
    host_port,
    parse_rules,
)
from director.orchestrator.runtime import RuntimePaths, SiteRuntime
from director.orchestrator.sites import HostedSite
from director.testing.fake_docker import FakeDockerGateway
from director.testing.fake_firewall import FakeFirewall
from director.testing.firewall_contract import CHECKS
from tests.unit.test_orchestrator_runtime import AcceptingNginx, ThreadedMemoryReactor

SUBNET = "172.29.0.0/16"


class RulesTests(SynchronousTestCase):
    def test_chain_names(self) -> None:
        """One pair of chains per subnet, within iptables' 28 characters even at worst."""
        self.assertEqual(
            chain_names("172.29.0.0/16"), ("DIRECTOR-IN-172.29.0.0/16", "DIRECTOR-FW-172.29.0.0/16")
        )
        self.assertLessEqual(max(map(len, chain_names("255.255.255.0/24"))), 28)
        self.assertRaises(FirewallError, chain_names, "10.0.0.0/25")
        self.assertRaises(FirewallError, chain_names, "10.0.0.1/24")
        self.assertRaises(FirewallError, chain_names, "fd00::/64")

    def test_rules_text(self) -> None:
        """
        Input: replies and the allowed ports go on, the rest is rejected. Forward: the subnet
        itself (other sites) and the blocked networks are rejected.
        """
        rules = SitesFirewall(SUBNET, frozenset({("172.17.0.1", 5432), ("172.17.0.1", 3306)}))
        i, f = rules.chains
        self.assertEqual(
            rules.input_rules(),
            [
                f"-A {i} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                f"-A {i} -d 172.17.0.1/32 -p tcp -m tcp --dport 3306 -j RETURN",
                f"-A {i} -d 172.17.0.1/32 -p tcp -m tcp --dport 5432 -j RETURN",
                f"-A {i} -p tcp -j REJECT --reject-with tcp-reset",
                f"-A {i} -j REJECT --reject-with icmp-port-unreachable",
            ],
        )
        self.assertEqual(
            rules.forward_rules(),
            [
                f"-A {f} -d {SUBNET} -p tcp -j REJECT --reject-with tcp-reset",
                f"-A {f} -d {SUBNET} -j REJECT --reject-with icmp-port-unreachable",
                f"-A {f} -d {LINK_LOCAL} -p tcp -j REJECT --reject-with tcp-reset",
                f"-A {f} -d {LINK_LOCAL} -j REJECT --reject-with icmp-port-unreachable",
            ],
        )
        text = rules.restore_text()
        self.assertTrue(text.startswith(f"*filter\n:{i} - [0:0]\n:{f} - [0:0]\n"))
        self.assertTrue(text.endswith("COMMIT\n"))
        self.assertEqual(rules.jump_line("INPUT", i), f"-A INPUT -s {SUBNET} -j {i}")

    def test_parse_round_trip(self) -> None:
        """What the rules list as parses back to the same rules; foreign lines are ignored."""
        rules = SitesFirewall(
            SUBNET, frozenset({("172.17.0.1", 5432)}), ("169.254.0.0/16", "10.0.0.0/8")
        )
        i, _ = rules.chains
        listed = [*rules.input_rules(), f"-A {i} -p udp -j ACCEPT"]
        self.assertEqual(parse_rules(SUBNET, listed, rules.forward_rules()), rules)
        self.assertIsNone(parse_rules(SUBNET, None, None))
        self.assertEqual(parse_rules(SUBNET, [], None), SitesFirewall(SUBNET, blocked=()))

    def test_host_port(self) -> None:
        """Only IPv4 addresses with a real port can be let through."""
        self.assertEqual(host_port("172.17.0.1", 5432), ("172.17.0.1", 5432))
        self.assertIsNone(host_port("db.example.org", 5432))
        self.assertIsNone(host_port("::1", 5432))
        self.assertIsNone(host_port("172.17.0.1", 0))

    def test_config(self) -> None:
        """On by default with link-local blocked; bad values name the key."""
        section = parse_config("", Path("/")).orchestrator
        self.assertIs(section.sites_firewall, True)
        self.assertEqual(section.sites_blocked, LINK_LOCAL)
        text = (
            '[orchestrator]\nsites_firewall = false\nsites_blocked = "169.254.0.0/16, 10.0.0.0/8"'
        )
        section = parse_config(text, Path("/")).orchestrator
        self.assertIs(section.sites_firewall, False)
        self.assertEqual(
            parse_config(
                '[orchestrator]\nsites_blocked = ""', Path("/")
            ).orchestrator.sites_blocked,
            "",
        )
        for bad in ('sites_firewall = "yes"', 'sites_blocked = "10.0.0.1/8"', "sites_blocked = 3"):
            with self.assertRaises(ConfigError) as e:
                parse_config(f"[orchestrator]\n{bad}", Path("/"))
            self.assertIn("orchestrator.sites_", str(e.exception))


class FakeFirewallContractTests(SynchronousTestCase):
    pass


def _make(check: Any) -> Any:
    def test(self: FakeFirewallContractTests) -> None:
        self.successResultOf(Deferred.fromCoroutine(check(FakeFirewall(), "10.99.0.0/24")))

    test.__doc__ = check.__doc__ or check.__name__
    return test


for _check in CHECKS:
    setattr(FakeFirewallContractTests, "test_" + _check.__name__[len("check_") :], _make(_check))


class RuntimeFirewallTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadedMemoryReactor()
        self.docker = FakeDockerGateway(images=("director/python:3",))
        self.firewall = FakeFirewall()
        self.base = Path(self.mktemp())
        self.runtime = self.make_runtime()

    def make_runtime(self) -> SiteRuntime:
        nginx_dir = self.base / "nginx-sites"
        nginx_dir.mkdir(parents=True, exist_ok=True)
        runtime = SiteRuntime(
            self.reactor,
            self.docker,
            NginxConfigDirectory(
                self.reactor, nginx_dir, cast(Any, AcceptingNginx()), InlineRunner()
            ),
            InlineRunner(),
            RuntimePaths(self.base),
            listen="127.0.0.1:8180",
            sites_domain="sites.test",
            subnet=SUBNET,
            firewall=self.firewall,
            blocked=(LINK_LOCAL, "10.0.0.0/8"),
        )
        runtime.prepare()
        self.addCleanup(runtime.unfollow)
        return runtime

    def apply(self, site: HostedSite) -> Any:
        d = self.runtime.apply(site)
        for _ in range(10):
            self.reactor.advance(0.05)
        return d

    def test_start_installs_and_reconcile_restores(self) -> None:
        """Start-up installs the firewall; the periodic reconcile puts it back if removed."""
        self.successResultOf(Deferred.fromCoroutine(self.runtime.start()))
        self.assertEqual(
            self.firewall.installed[SUBNET],
            SitesFirewall(SUBNET, blocked=(LINK_LOCAL, "10.0.0.0/8")),
        )
        self.successResultOf(self.firewall.remove(SUBNET))
        self.runtime.follow()
        self.reactor.advance(30)
        self.assertIn(SUBNET, self.firewall.installed)

    def test_database_grant_let_through_and_remembered(self) -> None:
        """A granted database port is allowed at once and again after a restart."""
        self.successResultOf(
            Deferred.fromCoroutine(self.runtime.allow_host_port("172.17.0.1", 5432))
        )
        self.assertEqual(self.firewall.installed[SUBNET].allow, {("172.17.0.1", 5432)})
        self.firewall.installed.clear()  # a reboot: the rules are gone, the state is not
        self.runtime = self.make_runtime()
        self.successResultOf(Deferred.fromCoroutine(self.runtime.start()))
        self.assertEqual(self.firewall.installed[SUBNET].allow, {("172.17.0.1", 5432)})

    def test_database_host_name_not_let_through(self) -> None:
        """A host name cannot be a rule: nothing is allowed, and the log says why."""
        self.successResultOf(
            Deferred.fromCoroutine(self.runtime.allow_host_port("db.example.org", 5432))
        )
        self.assertNotIn(SUBNET, self.firewall.installed)

    def test_no_dynamic_site_without_firewall(self) -> None:
        """
        Without the firewall a dynamic site is refused and gets no service; a static site
        (no container) is still served; once the firewall works the dynamic site starts.
        """
        self.firewall.broken = "iptables: Permission denied (you must be root)"
        self.successResultOf(Deferred.fromCoroutine(self.runtime.start()))
        self.assertEqual(len(self.flushLoggedErrors(FirewallError)), 1)
        dynamic = HostedSite(id=5, name="dyn", type="dynamic", image="director/python:3")
        self.failureResultOf(self.apply(dynamic), FirewallError)
        self.assertEqual(self.docker.services, {})
        self.successResultOf(self.apply(HostedSite(id=6, name="static", type="static")))
        self.firewall.broken = None
        self.successResultOf(self.apply(dynamic))
        self.assertIn(dynamic.service_name, self.docker.services)
        self.assertIn(SUBNET, self.firewall.installed)

    def test_ensured_once_per_apply_when_in_place(self) -> None:
        """Once in place, applying sites does not ask for the firewall again."""
        self.successResultOf(Deferred.fromCoroutine(self.runtime.start()))
        before = self.firewall.ensured
        self.successResultOf(
            self.apply(HostedSite(id=5, name="dyn", type="dynamic", image="director/python:3"))
        )
        self.assertEqual(self.firewall.ensured, before)

    def test_api_answers_503_firewall(self) -> None:
        """Through the API, a dynamic site refused for want of the firewall is a clear 503."""
        import json

        from treq.testing import StubTreq

        from director.orchestrator.web import OrchestratorAPI

        self.firewall.broken = "iptables: Permission denied (you must be root)"
        api = OrchestratorAPI(self.runtime, InlineRunner(), reactor=self.reactor)
        treq: Any = StubTreq(api.app.resource())
        body = {"name": "dyn", "type": "dynamic", "image": "director/python:3"}
        response = self.successResultOf(treq.put("http://o/v1/sites/5", json=body))
        self.assertEqual(response.code, 503)
        answer = json.loads(self.successResultOf(response.content()))
        self.assertEqual(answer["error"], "firewall")
        self.assertNotIn("iptables", answer["message"])
        self.assertEqual(self.docker.services, {})
        self.flushLoggedErrors(FirewallError)
