"""The router's HTTP API through the real Klein app (StubTreq), with a fake nginx directory."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from director.common.nginx import NginxError
from director.common.threads import InlineRunner
from director.router.certificates import CertificateKeeper
from director.router.layout import RouterLayout
from director.router.renewal import RenewalPolicy
from director.router.routing import Router, load_table
from director.router.testing import (
    FRONT_SETTINGS,
    FakeACMEClient,
    FakeConfigDirectory,
    webroot_fetcher,
)
from director.router.web import RouterAPI

SETTINGS = FRONT_SETTINGS
URL = "http://router.test"


def group_of(block: str) -> str:
    """The name of the upstream block in C{block}."""
    match = re.search(r"^upstream (director_to_[a-z0-9_]+) \{$", block, re.M)
    assert match is not None, block
    return match.group(1)


class HoldingDirectory(FakeConfigDirectory):
    """Keeps changes pending until the test lets them through (or makes nginx refuse)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[Mapping[str, str | None], Deferred[None]]] = []

    def apply(self, changes: Mapping[str, str | None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.held.append((dict(changes), d))
        return d

    def release(self, ok: bool = True) -> None:
        changes, d = self.held.pop(0)
        if ok:
            super().apply(changes).chainDeferred(d)
        else:
            d.errback(NginxError("nginx rejected the configuration: test", "test"))


class RouterAPIHarness(SynchronousTestCase):
    """The router's app on a fake nginx directory and a fake CA, and calls to it."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        base = Path(self.mktemp())
        self.layout = RouterLayout(base / "router", base / "shared")
        self.nginx = FakeConfigDirectory()
        self.make(self.nginx)

    def make(self, nginx: FakeConfigDirectory) -> None:
        ca = FakeACMEClient(webroot_fetcher(self.layout.challenge_dir), self.clock.seconds)
        keeper = CertificateKeeper(
            self.clock, InlineRunner(), InlineRunner(), self.layout, ca, RenewalPolicy()
        )
        self.router = Router(SETTINGS, self.layout, nginx, InlineRunner(), keeper)
        self.router.prepare()
        keeper.startService()
        self.addCleanup(keeper.stopService)
        self.http: Any = StubTreq(RouterAPI(self.router).app.resource())

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        d = self.http.request(method, URL + path, data=data)
        return d

    def result(self, d: Any) -> tuple[int, Any]:
        self.http.flush()  # deliver responses that finished after the request was sent
        response = self.successResultOf(d)
        content = self.successResultOf(self.http.content(response))
        return response.code, json.loads(content)

    def req(self, method: str, path: str, body: Any = None, raw: bytes | None = None):
        return self.result(self.call(method, path, body, raw))

    def snapshot(self) -> tuple[dict[str, str], int, bytes | None]:
        table = self.layout.site_table
        return (
            dict(self.nginx.files),
            len(self.nginx.applied),
            table.read_bytes() if table.exists() else None,
        )


class APITests(RouterAPIHarness):
    def test_put_then_get(self) -> None:
        code, body = self.req(
            "PUT", "/v1/sites/alpha", {"domains": ["WWW.Example.test"], "max_body_size": "10M"}
        )
        self.assertEqual(code, 200)
        self.assertEqual(
            body["site"],
            {
                "name": "alpha",
                "host": "alpha.sites.test",
                "domains": ["www.example.test"],
                "max_body_size": "10m",
                "upstream": None,
            },
        )
        self.assertEqual(body["certificates"]["www.example.test"]["state"], "pending")
        self.assertEqual(self.req("GET", "/v1/sites/alpha"), (200, body))
        code, listing = self.req("GET", "/v1/sites")
        self.assertEqual(listing["sites"], [body["site"]])
        self.assertIn("client_max_body_size 10m;", self.nginx.files["site-alpha.conf"])
        saved = json.loads(self.layout.site_table.read_text())
        self.assertEqual(saved["sites"]["alpha"]["domains"], ["www.example.test"])

    def upstream_files(self) -> dict[str, str]:
        return {n: t for n, t in self.nginx.files.items() if n.startswith("upstream-")}

    def test_site_sent_to_its_upstream(self) -> None:
        """A site with an upstream is proxied to one shared block for that address."""
        code, body = self.req("PUT", "/v1/sites/alpha", {"upstream": "10.0.0.7:08180"})
        self.assertEqual((code, body["site"]["upstream"]), (200, "10.0.0.7:8180"))
        self.req("PUT", "/v1/sites/beta", {"upstream": "10.0.0.7:8180"})
        self.req("PUT", "/v1/sites/gamma", {})
        [(name, block)] = self.upstream_files().items()
        self.assertRegex(name, r"^upstream-10-0-0-7-8180-[0-9a-f]{10}\.conf$")
        group = group_of(block)
        self.assertIn("server 10.0.0.7:8180 max_fails=1 fail_timeout=10s;", block)
        self.assertIn("keepalive 64;", block)
        for site in ("alpha", "beta"):
            self.assertIn(f"proxy_pass http://{group};", self.nginx.files[f"site-{site}.conf"])
            self.assertNotIn("director_orchestrators", self.nginx.files[f"site-{site}.conf"])
        self.assertIn(
            "proxy_pass http://director_orchestrators;", self.nginx.files["site-gamma.conf"]
        )
        saved = json.loads(self.layout.site_table.read_text())
        self.assertEqual(saved["sites"]["alpha"]["upstream"], "10.0.0.7:8180")
        self.assertIsNone(saved["sites"]["gamma"]["upstream"])

    def test_upstream_block_lives_while_a_site_uses_it(self) -> None:
        """Moving or removing sites removes a block once no site uses it, in the same change."""
        self.req("PUT", "/v1/sites/alpha", {"upstream": "10.0.0.7:8180"})
        self.req("PUT", "/v1/sites/beta", {"upstream": "10.0.0.7:8180"})
        self.req("PUT", "/v1/sites/alpha", {"upstream": "[2001:db8::2]:8180"})
        self.assertEqual(len(self.upstream_files()), 2)
        self.req("DELETE", "/v1/sites/beta")
        [block] = self.upstream_files().values()
        self.assertIn("server [2001:db8::2]:8180 max_fails", block)
        self.assertEqual(list(self.nginx.applied[-1].values()), [None, None])
        self.req("PUT", "/v1/sites/alpha", {"upstream": None})
        self.assertEqual(self.upstream_files(), {})
        self.assertIn(
            "proxy_pass http://director_orchestrators;", self.nginx.files["site-alpha.conf"]
        )

    def test_upstream_block_comes_before_the_site_in_a_change(self) -> None:
        """nginx checks a failed batch file by file: the block must go first, removals last."""
        self.req("PUT", "/v1/sites/alpha", {"upstream": "10.0.0.7:8180"})
        self.req("PUT", "/v1/sites/alpha", {"upstream": "10.0.0.8:8180"})
        names = list(self.nginx.applied[-1])
        self.assertEqual(len(names), 3)
        self.assertTrue(names[0].startswith("upstream-10-0-0-8-"))
        self.assertEqual(names[1], "site-alpha.conf")
        self.assertTrue(names[2].startswith("upstream-10-0-0-7-"))
        self.assertIsNone(self.nginx.applied[-1][names[2]])

    def test_refused_upstream_changes_nothing(self) -> None:
        self.req("PUT", "/v1/sites/alpha", {"upstream": "10.0.0.7:8180"})
        before = self.snapshot()
        for bad in ("10.0.0.7", "10.0.0.7:99999", "a;b:80", "x:80 backup", "[::1%lo]:80", 80):
            code, error = self.req("PUT", "/v1/sites/alpha", {"upstream": bad})
            self.assertEqual((code, error["error"]), (400, "invalid_request"), bad)
            self.assertIn("upstream", error["message"])
            self.assertEqual(self.snapshot(), before, bad)

    def test_nginx_refusing_an_upstream_restores_everything(self) -> None:
        self.req("PUT", "/v1/sites/alpha", {"upstream": "10.0.0.7:8180"})
        self.nginx.reject = lambda name, text: "no host" if "nowhere.invalid" in text else None
        before = self.snapshot()
        code, error = self.req("PUT", "/v1/sites/alpha", {"upstream": "nowhere.invalid:80"})
        self.assertEqual((code, error["error"]), (500, "nginx_rejected"))
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.router.table.upstreams, {"10.0.0.7:8180"})

    def test_upstreams_survive_a_restart(self) -> None:
        """prepare() writes every used block from the saved table and drops stale ones."""
        self.req("PUT", "/v1/sites/alpha", {"upstream": "10.0.0.7:8180"})
        blocks = self.upstream_files()
        sites_dir = self.layout.nginx_prefix / "sites"
        (sites_dir / "upstream-stale-0000000000.conf").write_text("upstream stale {}\n")
        table = load_table(self.layout.site_table, "sites.test", "2m", Logger())
        self.assertEqual(table.get("alpha").upstream, "10.0.0.7:8180")  # type: ignore[union-attr]
        Router(SETTINGS, self.layout, FakeConfigDirectory(), InlineRunner(), table=table).prepare()
        on_disk = {p.name: p.read_text() for p in sites_dir.glob("upstream-*.conf")}
        self.assertEqual(on_disk, blocks)
        [group] = {group_of(t) for t in blocks.values()}
        self.assertIn(f"proxy_pass http://{group};", (sites_dir / "site-alpha.conf").read_text())

    def test_put_is_idempotent(self) -> None:
        first = self.req("PUT", "/v1/sites/alpha", {"domains": ["a.example.test"]})
        files = dict(self.nginx.files)
        second = self.req("PUT", "/v1/sites/alpha", {"domains": ["a.example.test"]})
        self.assertEqual(first, second)
        self.assertEqual(self.nginx.files, files)

    def test_certificate_state(self) -> None:
        self.req("PUT", "/v1/sites/alpha", {"domains": ["a.example.test"]})
        self.clock.advance(0)
        code, state = self.req("GET", "/v1/certificates/a.example.test")
        self.assertEqual((code, state["state"], state["site"]), (200, "valid", "alpha"))
        code, everything = self.req("GET", "/v1/certificates")
        self.assertEqual(everything["acme"], True)
        self.assertEqual(everything["certificates"]["a.example.test"], state)
        code, error = self.req("GET", "/v1/certificates/nope.example.test")
        self.assertEqual((code, error["error"]), (404, "unknown_domain"))

    def test_bad_requests_change_nothing(self) -> None:
        """Each bad request gets a 4xx JSON error and leaves the config on disk as it was."""
        self.req("PUT", "/v1/sites/beta", {"domains": ["taken.example.test"]})
        before = self.snapshot()
        cases: list[tuple[str, Any, bytes | None, int, str]] = [
            (
                "alpha",
                {"domains": ['a.test"; include /etc/passwd; "']},
                None,
                400,
                "invalid_domain",
            ),
            ("alpha", {"domains": ["a.test;"]}, None, 400, "invalid_domain"),
            ("alpha", {"domains": ["a.test{"]}, None, 400, "invalid_domain"),
            ("alpha", {"domains": ["a.test}"]}, None, 400, "invalid_domain"),
            ("alpha", {"domains": ["a test"]}, None, 400, "invalid_domain"),
            ("alpha", {"domains": ["a.test\nserver {"]}, None, 400, "invalid_domain"),
            ("alpha", {"domains": ["$host"]}, None, 400, "invalid_domain"),
            ("alpha", {"domains": ["'a.test'"]}, None, 400, "invalid_domain"),
            ("alpha", {"domains": ["a" * 64 + ".test"]}, None, 400, "invalid_domain"),
            ("alpha", {"domains": ["x" * 300]}, None, 400, "invalid_domain"),
            ("alpha", {"domains": ["sites.test"]}, None, 400, "reserved_domain"),
            ("alpha", {"domains": ["evil.sites.test"]}, None, 400, "reserved_domain"),
            ("alpha", {"domains": ["TAKEN.example.test"]}, None, 409, "domain_taken"),
            ("alpha", {"max_body_size": "1m;"}, None, 400, "invalid_max_body_size"),
            ("alpha", {"domains": "a.test"}, None, 400, "invalid_request"),
            ("alpha", None, b"{not json", 400, "invalid_json"),
            ("alpha", None, b"[1]", 400, "invalid_request"),
            ("Bad.Name", {}, None, 400, "invalid_site_name"),
            ("a%3Bb", {}, None, 400, "invalid_site_name"),
        ]
        for site, body, raw, status, code in cases:
            got_status, error = self.req("PUT", f"/v1/sites/{site}", body, raw)
            self.assertEqual((got_status, error["error"]), (status, code), (site, body, raw))
            self.assertTrue(error["message"])
            self.assertEqual(self.snapshot(), before, (site, body))
        self.assertEqual(self.req("GET", "/v1/sites/alpha")[0], 404)

    def test_delete(self) -> None:
        self.req("PUT", "/v1/sites/alpha", {"domains": ["a.example.test"]})
        self.assertEqual(
            self.req("DELETE", "/v1/sites/alpha"), (200, {"site": "alpha", "removed": True})
        )
        self.assertNotIn("site-alpha.conf", self.nginx.files)
        self.assertEqual(
            self.req("DELETE", "/v1/sites/alpha"), (200, {"site": "alpha", "removed": False})
        )
        code, error = self.req("GET", "/v1/sites/alpha")
        self.assertEqual((code, error["error"]), (404, "unknown_site"))
        # The domain is free again.
        self.assertEqual(self.req("PUT", "/v1/sites/beta", {"domains": ["a.example.test"]})[0], 200)

    def test_nginx_refusal_restores_the_table(self) -> None:
        """If `nginx -t` refuses a change, the API says so and the site stays as it was."""
        self.req("PUT", "/v1/sites/alpha", {"domains": ["a.example.test"]})
        self.nginx.reject = lambda name, text: "boom" if "b.example.test" in text else None
        before = self.snapshot()
        code, error = self.req("PUT", "/v1/sites/alpha", {"domains": ["b.example.test"]})
        self.assertEqual((code, error["error"]), (500, "nginx_rejected"))
        self.assertIn("boom", error["message"])
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(
            self.req("GET", "/v1/sites/alpha")[1]["site"]["domains"], ["a.example.test"]
        )
        # b.example.test was never taken.
        self.nginx.reject = None
        self.assertEqual(self.req("PUT", "/v1/sites/beta", {"domains": ["b.example.test"]})[0], 200)

    def test_domain_reserved_while_a_change_is_pending(self) -> None:
        """Two sites racing for one domain: the second is refused even before nginx answers."""
        holding = HoldingDirectory()
        self.make(holding)
        first = self.call("PUT", "/v1/sites/alpha", {"domains": ["a.example.test"]})
        self.assertNoResult(first)
        code, error = self.req("PUT", "/v1/sites/beta", {"domains": ["a.example.test"]})
        self.assertEqual((code, error["error"]), (409, "domain_taken"))
        holding.release(ok=False)
        self.assertEqual(self.result(first)[0], 500)
        second = self.call("PUT", "/v1/sites/beta", {"domains": ["a.example.test"]})
        holding.release()
        self.assertEqual(self.result(second)[0], 200)

    def test_domain_given_up_stays_reserved_until_live(self) -> None:
        """A domain a pending change drops cannot be taken: nginx may refuse the change."""
        holding = HoldingDirectory()
        self.make(holding)
        first = self.call("PUT", "/v1/sites/alpha", {"domains": ["a.example.test"]})
        holding.release()
        self.assertEqual(self.result(first)[0], 200)
        dropping = self.call("PUT", "/v1/sites/alpha", {"domains": []})
        code, error = self.req("PUT", "/v1/sites/beta", {"domains": ["a.example.test"]})
        self.assertEqual((code, error["error"]), (409, "domain_taken"))
        holding.release(ok=False)
        self.assertEqual(self.result(dropping)[0], 500)
        self.assertEqual(self.router.table.owner("a.example.test"), "alpha")
        removing = self.call("DELETE", "/v1/sites/alpha")
        code, error = self.req("PUT", "/v1/sites/beta", {"domains": ["a.example.test"]})
        self.assertEqual(code, 409)
        holding.release()
        self.assertEqual(self.result(removing), (200, {"site": "alpha", "removed": True}))
        taking = self.call("PUT", "/v1/sites/beta", {"domains": ["a.example.test"]})
        holding.release()
        self.assertEqual(self.result(taking)[0], 200)

    def test_changes_to_one_site_are_serialised(self) -> None:
        """A second change to the same site waits for the first; the last one wins."""
        holding = HoldingDirectory()
        self.make(holding)
        first = self.call("PUT", "/v1/sites/alpha", {"domains": ["a.example.test"]})
        second = self.call("PUT", "/v1/sites/alpha", {"domains": ["b.example.test"]})
        self.assertEqual(len(holding.held), 1)
        holding.release()
        self.assertEqual(self.result(first)[0], 200)
        holding.release()
        self.assertEqual(self.result(second)[0], 200)
        self.assertIn("b.example.test", holding.files["site-alpha.conf"])
        self.assertNotIn("a.example.test", holding.files["site-alpha.conf"])

    def test_without_a_router(self) -> None:
        """The bare app (as in the access-table tests) answers health and whoami only."""
        http: Any = StubTreq(RouterAPI().app.resource())
        response = self.successResultOf(http.get(URL + "/v1/sites"))
        self.assertEqual(response.code, 503)
        response = self.successResultOf(http.get(URL + "/healthz"))
        self.assertEqual(response.code, 200)
