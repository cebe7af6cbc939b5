"""
Per-purpose URL formats (director.url_formats): the config check, a site's URL and route in
the manager (API, dashboard, operations, reconcile), and what the router makes of a route:
a host format's server name, a path host's shared file; injection refused everywhere.
"""

from __future__ import annotations

import html
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from director.cli_setup import render_config
from director.common.config import ConfigError, parse_config
from director.common.threads import InlineRunner
from director.contract.errors import ValidationError
from director.contract.sites import RouteSpec
from director.contract.urls import UrlFormat, UrlFormats
from director.manager.models import DEFAULT_LIMITS, Site
from director.manager.reconcile import router_drift
from director.router.domains import SiteEntry
from director.router.path_hosts import render_path_host
from director.router.routing import Router, load_table
from director.router.testing import FakeConfigDirectory
from director.testing.manager import ManagerHarness
from tests.unit import test_router_api as router_api

BASE = Path("/etc/director")
FORMATS = UrlFormats.parse(
    "sites.test", {"personal": "user.example.org/{name}/", "activity": "{name}.clubs.example.org"}
)


def config_with(table: str, extra: str = "") -> Any:
    text = f'[director]\nsites_domain = "sites.test"\n[director.url_formats]\n{table}\n{extra}'
    return parse_config(text, BASE)


class FormatTests(SynchronousTestCase):
    def test_host_and_path_formats(self) -> None:
        self.assertEqual(UrlFormat.parse("{name}.u.example.org"), UrlFormat("u.example.org"))
        self.assertEqual(UrlFormat.parse("u.example.org/{name}/"), UrlFormat("u.example.org", True))
        self.assertEqual(FORMATS.url("al", "personal"), "http://user.example.org/al/")
        self.assertEqual(FORMATS.url("al", "activity", "https"), "https://al.clubs.example.org/")
        self.assertEqual(FORMATS.url("al", "project", port=8080), "http://al.sites.test:8080/")
        self.assertEqual(FORMATS.route("al", "personal"), ("user.example.org", True))
        self.assertEqual(FORMATS.route("al", "activity"), ("al.clubs.example.org", False))
        self.assertEqual(FORMATS.route("al", "other"), (None, False))
        self.assertEqual(FORMATS.reserved(), ("clubs.example.org", "user.example.org"))

    def test_bad_formats_refused(self) -> None:
        for text in [
            "user.example.org/{name}",  # no final slash
            "user.example.org/x/{name}/",  # one path segment only
            "{name}-x.example.org",
            "{name}.{name}.example.org",
            "example.org",
            "http://u.example.org/{name}/",
            "u.example.org:8080/{name}/",
            "{name}.Ex ample.org",
            "{name}.a;b.org",
            "{name}.a}.org",
            "localhost/{name}/",  # a path host has two labels
            "{name}." + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 40,
            3,
        ]:
            with self.assertRaises(ValidationError, msg=text):
                UrlFormat.parse(text)


class ConfigTests(SynchronousTestCase):
    def test_default_is_the_sites_domain(self) -> None:
        config = parse_config("", BASE)
        self.assertEqual(dict(config.director.url_formats), {})
        self.assertEqual(config.url_formats().url("a1", "personal"), "http://a1.sites.localhost/")

    def test_table_read_and_checked(self) -> None:
        config = config_with(
            'personal = "user.example.org/{name}/"\nactivity = "{name}.clubs.example.org"'
        )
        self.assertEqual(config.url_formats(), FORMATS)
        # Written back by `director init` as an inline table that reads the same.
        again = parse_config(render_config(config), BASE)
        self.assertEqual(again.url_formats(), FORMATS)

    def test_errors_name_the_key(self) -> None:
        for table, words in [
            ('personl = "{name}.u.org"', "director.url_formats.personl: not a purpose"),
            ('personal = "u.org/{name}"', "director.url_formats.personal: a URL format is"),
            ('personal = "x.sites.test/{name}/"', "is under the sites domain sites.test"),
            ('other = "director.localhost/{name}/"', "the dashboard's host director.localhost"),
            ("personal = 3", "expected a table of purpose"),
            (
                'personal = "u.example.org/{name}/"\nproject = "{name}.example.org"',
                "would give a site the host of a path format",
            ),
        ]:
            with self.assertRaises(ConfigError, msg=table) as caught:
                config_with(table)
            self.assertIn(words, str(caught.exception))


class RouteSpecTests(SynchronousTestCase):
    def test_default_route_keeps_its_old_form(self) -> None:
        self.assertEqual(
            RouteSpec().to_json(), {"domains": [], "max_body_size": None, "upstream": None}
        )
        spec = RouteSpec(url_host="User.Example.org", url_path=True)
        parsed = RouteSpec.from_json(spec.to_json())
        self.assertEqual((parsed.url_host, parsed.url_path), ("user.example.org", True))

    def test_refused(self) -> None:
        for body in [
            {"url_path": True},
            {"url_host": "u.example.org", "url_path": 1},
            {"url_host": "u.example.org;", "url_path": True},
            {"url_host": "u.example.org/x"},
            {"url_host": ["u.example.org"]},
        ]:
            with self.assertRaises(ValidationError, msg=str(body)):
                RouteSpec.from_json(body)


class RouterTests(router_api.RouterAPIHarness):
    def put(self, name: str, body: Any) -> tuple[int, Any]:
        return self.req("PUT", f"/v1/sites/{name}", body)

    def delete(self, name: str) -> None:
        self.req("DELETE", f"/v1/sites/{name}")

    def test_path_host_one_file_a_location_per_site(self) -> None:
        path = {"url_host": "user.example.org", "url_path": True}
        self.assertEqual(self.put("alice", path)[0], 200)
        self.assertEqual(self.put("bob", {**path, "max_body_size": "5m"})[0], 200)
        shared = self.nginx.files["path-user.example.org.conf"]
        self.assertIn("server_name user.example.org;", shared)
        for name in ("alice", "bob"):
            self.assertIn(f"location /{name}/ {{", shared)
            self.assertIn(f"return 301 /{name}/$is_args$args;", shared)
            self.assertIn(f"proxy_set_header X-Forwarded-Prefix /{name};", shared)
            self.assertIn(f"proxy_set_header Host {name}.sites.test;", shared)
        self.assertIn("proxy_pass http://director_orchestrators/;", shared)
        self.assertIn("client_max_body_size 5m;", shared)
        self.assertNotIn("user.example.org", self.nginx.files["site-alice.conf"])
        # Its certificate, like a custom domain's: then HTTPS, and HTTP redirects there.
        self.clock.advance(0)
        state = self.router.certificate_json("user.example.org")
        assert state is not None
        self.assertEqual((state["state"], state["site"]), ("valid", ":path-host"))
        secured = self.nginx.files["path-user.example.org.conf"]
        self.assertIn("listen 127.0.0.1:8443 ssl http2;", secured)
        self.assertIn("return 301 https://user.example.org:8443$request_uri;", secured)
        # The table keeps it across a restart.
        table = load_table(self.layout.site_table, "sites.test", "2m", Logger())
        self.assertEqual(
            table.get("alice"), SiteEntry("alice", (), "2m", None, "user.example.org", True)
        )
        # A restarted router writes the shared host's file again, before nginx starts.
        written = self.layout.nginx_prefix / "sites" / "path-user.example.org.conf"
        written.unlink(missing_ok=True)
        settings = router_api.SETTINGS
        Router(settings, self.layout, FakeConfigDirectory(), InlineRunner(), None, table).prepare()
        self.assertIn("location /bob/ {", written.read_text())
        self.delete("alice")
        self.assertNotIn("location /alice/", self.nginx.files["path-user.example.org.conf"])
        self.delete("bob")
        self.assertNotIn("path-user.example.org.conf", self.nginx.files)

    def test_host_format_is_a_server_name_of_the_site(self) -> None:
        code, body = self.put("chess", {"url_host": "chess.clubs.example.org"})
        self.assertEqual(
            (code, body["site"]["url_host"], body["site"]["url_path"]),
            (200, "chess.clubs.example.org", False),
        )
        self.assertIn("server_name chess.clubs.example.org;", self.nginx.files["site-chess.conf"])
        self.assertIn("chess.clubs.example.org", body["certificates"])
        # Its canonical host said out loud is the default.
        code, body = self.put("rook", {"url_host": "rook.sites.test"})
        self.assertEqual((code, "url_host" in body["site"]), (200, False))

    def test_conflicts_refused(self) -> None:
        self.put("chess", {"url_host": "chess.clubs.example.org"})
        self.put("alice", {"url_host": "user.example.org", "url_path": True})
        before = dict(self.nginx.files)
        for name, body in [
            ("thief", {"domains": ["chess.clubs.example.org"]}),
            ("thief", {"url_host": "chess.clubs.example.org"}),
            ("thief", {"domains": ["user.example.org"]}),
            ("thief", {"url_host": "user.example.org"}),
        ]:
            code, error = self.put(name, body)
            self.assertEqual((code, error["error"]), (409, "domain_taken"), body)
        self.put("owner", {"domains": ["www.example.org"]})
        code, error = self.put("thief", {"url_host": "www.example.org", "url_path": True})
        self.assertEqual((code, error["error"]), (409, "domain_taken"))
        code, error = self.put("thief", {"url_host": "x.sites.test", "url_path": True})
        self.assertEqual((code, error["error"]), (400, "reserved_domain"))
        self.assertEqual({k: v for k, v in self.nginx.files.items() if "owner" not in k}, before)

    def test_no_certificate_for_local_names(self) -> None:
        code, body = self.put("alice", {"url_host": "user.localhost", "url_path": True})
        self.assertEqual(code, 200)
        self.clock.advance(0)
        self.assertEqual(self.router.keeper.installed if self.router.keeper else None, {})
        state = body["certificates"]["user.localhost"]
        self.assertEqual((state["state"], state["site"]), ("disabled", ":path-host"))
        self.assertIn(".localhost", state["detail"])

    def test_rendering_refuses_what_checks_would_have(self) -> None:
        for name in ["a;b", "a b", "a{", 'a"']:
            entry = SiteEntry(name, (), "1m", None, "user.example.org", True)
            with self.assertRaises(ValueError, msg=name):
                render_path_host("user.example.org", [entry], router_api.SETTINGS, self.layout)
        with self.assertRaises(ValueError):
            render_path_host(
                "u.org;",
                [SiteEntry("ok", (), "1m", None, "u.org;", True)],
                router_api.SETTINGS,
                self.layout,
            )


def site(name: str, purpose: str) -> Site:
    return Site(
        id=1, name=name, type="static", purpose=purpose, availability="enabled",
        description="", image="director/debian:bookworm", image_tag=None, packages=(),
        limits=dict(DEFAULT_LIMITS),
    )  # fmt: skip


class ReconcileTests(SynchronousTestCase):
    def test_a_router_without_the_format_drifted(self) -> None:
        alice = site("alice", "personal")
        served = {"name": "alice", "domains": [], "url_host": "user.example.org", "url_path": True}
        self.assertEqual(router_drift([alice], [served], formats=FORMATS)[0], [])
        self.assertEqual(
            router_drift([alice], [{"name": "alice", "domains": []}], formats=FORMATS)[0], ["alice"]
        )
        other = site("alice", "other")
        self.assertEqual(router_drift([other], [served], formats=FORMATS)[0], ["alice"])
        self.assertEqual(
            router_drift([other], [{"name": "alice", "domains": []}], formats=FORMATS)[0], []
        )


@pytest.mark.manager_store
class ManagerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()), url_formats=FORMATS)
        self.http: Any = StubTreq(self.h.api.app.resource())
        self.alice = self.h.user("alice")
        self.admin = self.h.user("root", role="admin")

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": [f"Bearer {token}"]}
        response = self.successResultOf(
            self.http.request(method, f"http://manager.test{path}", data=data, headers=headers)
        )
        return response.code, json.loads(self.successResultOf(self.http.content(response)))

    def routed(self, name: str) -> SiteEntry:
        entry = self.h.router.table.get(name)
        assert entry is not None
        return entry

    def test_url_follows_the_purpose_and_moves_with_it(self) -> None:
        code, body = self.call(
            "POST", "/api/v1/sites", self.alice, {"name": "proj", "type": "static"}
        )
        self.assertEqual((code, body["site"]["url"]), (202, "http://proj.sites.test/"))
        self.assertIsNone(self.routed("proj").url_host)
        # An administrator makes it an activity: it moves to its own host at the routers.
        code, body = self.call("PATCH", "/api/v1/sites/proj", self.admin, {"purpose": "activity"})
        self.assertEqual(code, 202, body)
        self.assertEqual(body["site"]["url"], "http://proj.clubs.example.org/")
        self.assertEqual(body["operation"]["type"], "update_site")
        self.assertEqual(self.routed("proj").url_host, "proj.clubs.example.org")
        # Then personal: under the shared host's path.
        code, body = self.call("PATCH", "/api/v1/sites/proj", self.admin, {"purpose": "personal"})
        self.assertEqual((code, body["site"]["url"]), (202, "http://user.example.org/proj/"))
        entry = self.routed("proj")
        self.assertEqual((entry.url_host, entry.url_path), ("user.example.org", True))
        # A rename moves it too (the old name leaves the routers).
        code, body = self.call("PATCH", "/api/v1/sites/proj", self.admin, {"name": "proj2"})
        self.assertEqual((code, body["site"]["url"]), (202, "http://user.example.org/proj2/"))
        self.assertIsNone(self.h.router.table.get("proj"))
        self.assertEqual(self.routed("proj2").path_host, "user.example.org")
        code, body = self.call("GET", "/api/v1/sites/proj2", self.alice)
        self.assertEqual(body["url"], "http://user.example.org/proj2/")

    def test_a_purpose_with_the_same_format_is_only_a_record(self) -> None:
        self.call("POST", "/api/v1/sites", self.alice, {"name": "proj", "type": "static"})
        code, body = self.call("PATCH", "/api/v1/sites/proj", self.alice, {"purpose": "other"})
        self.assertEqual((code, body["operation"]), (200, None))

    def test_custom_domains_stay_out_of_the_formats(self) -> None:
        self.call("POST", "/api/v1/sites", self.alice, {"name": "proj", "type": "static"})
        for domain in ["user.example.org", "x.clubs.example.org"]:
            code, body = self.call(
                "POST", "/api/v1/sites/proj/domains", self.alice, {"domain": domain}
            )
            self.assertEqual((code, body["error"]), (409, "domain_reserved"), domain)


@pytest.mark.manager_store
class DashboardTests(SynchronousTestCase):
    def setUp(self) -> None:
        from tests.unit.test_dashboard import DashboardHarness

        self.d = DashboardHarness()
        self.d.dashboard.url_formats = FORMATS
        self.d.user("alice")
        self.d.site("alice", ["alice"], purpose="personal")
        self.d.site("club", ["alice"], purpose="activity")
        self.session = self.d.session("alice")[0]

    def test_pages_show_the_formats_url(self) -> None:
        _, page = self.d.request("GET", "/sites/alice", self.session)
        self.assertIn('href="http://user.example.org:8080/alice/"', page)
        _, page = self.d.request("GET", "/sites/club", self.session)
        self.assertIn('href="http://club.clubs.example.org:8080/"', page)
        _, listing = self.d.request("GET", "/", self.session)
        self.assertIn("http://user.example.org:8080/alice/", listing)
        _, settings = self.d.request("GET", "/sites/club/settings", self.session)
        self.assertIn("<code>http://NAME.clubs.example.org:8080/</code>", settings)

    def test_new_site_preview_by_purpose(self) -> None:
        _, page = self.d.request("GET", "/sites/new", self.session)
        match = re.search(r"data-url-formats='([^']*)'", page)
        assert match is not None, page
        previews = json.loads(html.unescape(match.group(1)))
        self.assertEqual(previews["personal"], ["http://user.example.org:8080/", "/"])
        self.assertEqual(previews["project"], ["http://", ".sites.test:8080/"])
