"""
What L{RouterClient} gets from a router. The same checks run against the real app in memory
(L{director.router.web.RouterAPI} over C{StubTreq}, with the fake nginx directory and ACME
server) and against L{FakeRouter} (tests/unit/test_router_client_contract.py).

A test case mixes L{RouterContract} in and provides C{client} and C{call} (as for every
L{director.testing.component_contract.ComponentContract}); its sites domain is C{sites.test}.
"""

from __future__ import annotations

from director.clients.router import RouterClient
from director.contract.sites import RouteSpec
from director.testing.component_contract import ComponentContract


class RouterContract(ComponentContract):
    client: RouterClient

    def test_whoami(self) -> None:
        self.assertEqual(self.call(self.client.whoami())["component"], "router")

    def test_a_site_and_its_domains(self) -> None:
        answer = self.call(self.client.put_site("web", ["WWW.Example.org", "example.org."], "10m"))
        self.assertEqual(
            answer["site"],
            {
                "name": "web",
                "host": "web.sites.test",
                "domains": ["www.example.org", "example.org"],
                "max_body_size": "10m",
                "upstream": None,
            },
        )
        self.assertEqual(sorted(answer["certificates"]), ["example.org", "www.example.org"])
        for domain, state in answer["certificates"].items():
            self.assertEqual((state["domain"], state["site"]), (domain, "web"))
            self.assertIn("state", state)
        self.assertEqual(self.call(self.client.get_site("web")), answer)
        self.assertEqual(self.call(self.client.list_sites()), [answer["site"]])
        state = self.call(self.client.certificate("www.example.org"))
        self.assertEqual(state, answer["certificates"]["www.example.org"])

    def test_a_site_follows_its_upstream(self) -> None:
        """A site's upstream is kept in one form; a PUT again moves it, or back to the default."""
        answer = self.call(self.client.put_site("web", [], "1m", upstream="10.0.0.5:08180"))
        self.assertEqual(answer["site"]["upstream"], "10.0.0.5:8180")
        self.call(self.client.put_site("app", [], "1m", upstream="[2001:DB8::5]:8180"))
        moved = self.call(self.client.put_site("web", [], "1m", upstream="orch-2.internal:8180"))
        self.assertEqual(moved["site"]["upstream"], "orch-2.internal:8180")
        self.assertEqual(self.call(self.client.get_site("web")), moved)
        listed = {s["name"]: s["upstream"] for s in self.call(self.client.list_sites())}
        self.assertEqual(listed, {"web": "orch-2.internal:8180", "app": "[2001:db8::5]:8180"})
        back = self.call(self.client.put_site("web", [], "1m"))
        self.assertIsNone(back["site"]["upstream"])

    def test_a_bad_upstream_is_refused_and_changes_nothing(self) -> None:
        self.call(self.client.put_site("web", [], "1m", upstream="10.0.0.5:8180"))
        for bad in ("10.0.0.5", "10.0.0.5:0", "a;b:80", "[::1:80", "x y:80"):
            e = self.refused(self.client.put_site("web", [], "1m", upstream=bad))
            self.assertEqual((e.status, e.code), (400, "invalid_request"), bad)
        self.assertEqual(
            self.call(self.client.get_site("web"))["site"]["upstream"], "10.0.0.5:8180"
        )

    def test_a_site_at_its_url_format(self) -> None:
        """A path host is shared by its sites; a host format's host is its site's alone."""
        under = RouteSpec(url_host="user.example.org", url_path=True)
        answer = self.call(self.client.put_route("web", under))
        self.assertEqual(
            (answer["site"]["url_host"], answer["site"]["url_path"]), ("user.example.org", True)
        )
        self.assertEqual(answer["certificates"]["user.example.org"]["site"], ":path-host")
        self.call(self.client.put_route("app", under))
        own = self.call(self.client.put_route("club", RouteSpec(url_host="club.example.org")))
        self.assertEqual(own["certificates"]["club.example.org"]["site"], "club")
        for domain in ("user.example.org", "club.example.org"):
            e = self.refused(self.client.put_site("other", [domain], "1m"))
            self.assertEqual((e.status, e.code), (409, "domain_taken"), domain)
        listed = {
            s["name"]: (s.get("url_host"), s.get("url_path", False))
            for s in self.call(self.client.list_sites())
        }
        self.assertEqual(
            listed,
            {
                "web": ("user.example.org", True),
                "app": ("user.example.org", True),
                "club": ("club.example.org", False),
            },
        )
        back = self.call(self.client.put_route("web", RouteSpec()))
        self.assertEqual(back["site"].get("url_host"), None)

    def test_unknown(self) -> None:
        e = self.refused(self.client.get_site("web"))
        self.assertEqual((e.status, e.code), (404, "unknown_site"))
        e = self.refused(self.client.certificate("www.example.org"))
        self.assertEqual((e.status, e.code), (404, "unknown_domain"))

    def test_a_domain_belongs_to_one_site(self) -> None:
        self.call(self.client.put_site("web", ["www.example.org"], "1m"))
        e = self.refused(self.client.put_site("other", ["www.example.org"], "1m"))
        self.assertEqual((e.status, e.code), (409, "domain_taken"))
        self.assertEqual([s["name"] for s in self.call(self.client.list_sites())], ["web"])

    def test_bad_input_is_refused_and_changes_nothing(self) -> None:
        self.call(self.client.put_site("web", ["www.example.org"], "1m"))
        for name, domains, size, code in (
            ("web", ["not a domain"], "1m", "invalid_domain"),
            ("web", ["x.sites.test"], "1m", "reserved_domain"),
            ("Web!", [], "1m", "invalid_site_name"),
            ("web", [], "lots", "invalid_max_body_size"),
        ):
            e = self.refused(self.client.put_site(name, domains, size))
            self.assertEqual((e.status, e.code), (400, code), (name, domains, size))
        self.assertEqual(
            self.call(self.client.get_site("web"))["site"]["domains"], ["www.example.org"]
        )

    def test_removal(self) -> None:
        self.call(self.client.put_site("web", ["www.example.org"], "1m"))
        self.assertTrue(self.call(self.client.remove_site("web")))
        self.assertFalse(self.call(self.client.remove_site("web")))
        self.assertEqual(self.call(self.client.list_sites()), [])
        self.assertEqual(self.refused(self.client.certificate("www.example.org")).status, 404)
