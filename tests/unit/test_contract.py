"""
The contract between the components (director/contract/): each rule, its JSON form, and that
the manager, the orchestrator and the router apply the same rule.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from director.contract import (
    DatabaseHost,
    DatabaseSpec,
    Limits,
    RouteSpec,
    SiteDatabase,
    SiteSpec,
    ValidationError,
    is_site_name,
    is_within,
    normalize_domain,
    validate_site_name,
)
from director.contract.domains import domain_schema
from director.manager import models
from director.manager.models import Database, Site
from director.orchestrator import databases as orchestrator_databases
from director.orchestrator.sites import parse_limits, parse_site
from director.router.domains import RequestError, parse_site_request
from director.router.domains import normalize_domain as router_domain
from director.router.domains import validate_site_name as router_site_name

SITES = "sites.test"


def refusal(call: object, *args: object) -> ValidationError:
    assert callable(call)
    try:
        call(*args)
    except ValidationError as e:
        return e
    raise AssertionError(f"{args!r} was accepted")


class SiteNameTests(SynchronousTestCase):
    GOOD: list[object] = ["ab", "a1", "my-site", "0-0", "a" * 32, "x9-y8"]
    BAD: list[object] = [
        "",
        "a",
        "-ab",
        "ab-",
        "Ab",
        "a_b",
        "a.b",
        "a b",
        "a" * 33,
        None,
        12,
        "ab\n",
    ]

    def test_the_rule(self) -> None:
        """2-32 of a-z, 0-9 and -, not starting or ending with -."""
        for name in self.GOOD:
            self.assertEqual(validate_site_name(name), name)
            self.assertTrue(is_site_name(name))
        for name in self.BAD:
            self.assertFalse(is_site_name(name), name)
            error = refusal(validate_site_name, name)
            self.assertEqual(error.field, "name")
            self.assertIn("2-32 characters", error.message)
            self.assertTrue(error.message.startswith("name: "))

    def test_every_component_applies_it(self) -> None:
        """The manager, the orchestrator and the router accept and refuse the same names."""
        for name in self.GOOD:
            self.assertEqual(parse_site(1, {"name": name, "type": "static"}).name, name)
            self.assertEqual(router_site_name(name, SITES), name)
        for name in self.BAD:
            refusal(models.validate_site_name, name)
            refusal(parse_site, 1, {"name": name, "type": "static"})
            with self.assertRaises(RequestError) as cm:
                router_site_name(name, SITES)
            self.assertEqual(cm.exception.code, "invalid_site_name")

    def test_the_manager_reserves_more(self) -> None:
        """The manager's reserved names are its own policy: the orchestrator takes them."""
        self.assertIn("www", models.validate_site_name("www-1"))
        refusal(models.validate_site_name, "www")
        self.assertEqual(parse_site(1, {"name": "www", "type": "static"}).name, "www")


class ChoiceTests(SynchronousTestCase):
    def test_types_and_availability(self) -> None:
        for kind in ("static", "dynamic"):
            self.assertEqual(SiteSpec.from_json({"name": "ab", "type": kind}).type, kind)
        self.assertEqual(refusal(SiteSpec.from_json, {"name": "ab", "type": "php"}).field, "type")
        for availability in ("enabled", "not-served", "disabled"):
            data = {"name": "ab", "type": "static", "availability": availability}
            spec = SiteSpec.from_json(data)
            self.assertEqual(spec.availability, availability)
        error = refusal(SiteSpec.from_json, {"name": "ab", "type": "static", "availability": "on"})
        self.assertEqual(error.field, "availability")


class LimitTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        self.assertEqual(
            Limits.from_json({}).to_json(),
            {
                "cpus": 0.6,
                "memory_mb": 100,
                "pids": 256,
                "client_max_body_size": "1m",
                "disk_quota_mb": None,
            },
        )
        self.assertEqual(models.DEFAULT_LIMITS, Limits().to_json())

    def test_values(self) -> None:
        limits = Limits.from_json(
            {"cpus": 2, "memory_mb": 512.0, "pids": 64, "client_max_body_size": "512k"}
        )
        self.assertEqual(limits, Limits(2.0, 512, 64, "512k", None))
        self.assertIsInstance(limits.cpus, float)
        self.assertIsInstance(limits.memory_mb, int)
        self.assertEqual(Limits.from_json({"disk_quota_mb": 420.0}).disk_quota_mb, 420)
        self.assertEqual(Limits.from_json(limits.to_json()), limits)

    def test_refused(self) -> None:
        cases = [
            ({"cpus": 0.01}, "limits.cpus"),
            ({"cpus": 17}, "limits.cpus"),
            ({"cpus": True}, "limits.cpus"),
            ({"memory_mb": 16}, "limits.memory_mb"),
            ({"memory_mb": "100"}, "limits.memory_mb"),
            ({"pids": 1}, "limits.pids"),
            ({"pids": 9000}, "limits.pids"),
            ({"client_max_body_size": "1g"}, "limits.client_max_body_size"),
            ({"client_max_body_size": "12345k"}, "limits.client_max_body_size"),
            ({"disk_quota_mb": 0}, "limits.disk_quota_mb"),
            ({"disk_quota_mb": 1.5}, "limits.disk_quota_mb"),
            ({"disk_quota_mb": 10_000_001}, "limits.disk_quota_mb"),
            ({"swap": 1}, "limits.swap"),
        ]
        for value, field_name in cases:
            self.assertEqual(refusal(Limits.from_json, value).field, field_name, value)
        self.assertEqual(refusal(Limits.from_json, [1]).field, "limits")

    def test_the_manager_and_the_orchestrator_agree(self) -> None:
        for value in ({}, {"cpus": 1.5, "pids": 100}, {"disk_quota_mb": 5}):
            self.assertEqual(models.validate_limits(value), parse_limits(value).to_json())
        for value in ({"pids": 20}, {"cpus": 32}, {"memory_mb": 40000}):
            refusal(models.validate_limits, value)
            refusal(parse_limits, value)


class DomainTests(SynchronousTestCase):
    def test_canonical_form(self) -> None:
        self.assertEqual(normalize_domain("WWW.Example.ORG"), "www.example.org")
        self.assertEqual(normalize_domain("example.org."), "example.org")
        self.assertEqual(normalize_domain("Bücher.example"), "xn--bcher-kva.example")

    def test_refused(self) -> None:
        bad: list[object] = ["", "org", "a;b.org", "a b.org", "$x.org", "*.example.org"]
        bad += ["1.2.3.4", "a" * 64 + ".org", "-a.org", "ab--cd.org", "x" * 2000, None, ["a"]]
        for raw in bad:
            self.assertEqual(refusal(normalize_domain, raw).field, "domain", raw)

    def test_within(self) -> None:
        self.assertTrue(is_within("sites.test", SITES))
        self.assertTrue(is_within("a.b.sites.test", SITES))
        self.assertFalse(is_within("notsites.test", SITES))

    def test_every_component_applies_it(self) -> None:
        """The router, the orchestrator's spec and the manager's route agree on domains."""
        for raw, canonical in [("A.Example.org", "a.example.org"), ("Bücher.example", None)]:
            expected = canonical or normalize_domain(raw)
            self.assertEqual(router_domain(raw, SITES), expected)
            spec = SiteSpec.from_json({"name": "ab", "type": "static", "custom_domains": [raw]})
            self.assertEqual(spec.custom_domains, (expected,))
        for raw in ["a;b.org", "1.2.3.4", "org"]:
            with self.assertRaises(RequestError) as cm:
                router_domain(raw, SITES)
            self.assertEqual(cm.exception.code, "invalid_domain")
            error = refusal(
                SiteSpec.from_json, {"name": "ab", "type": "static", "custom_domains": [raw]}
            )
            self.assertEqual(error.field, "custom_domains")

    def test_openapi_schema_follows_the_rule(self) -> None:
        """For ASCII input, the OpenAPI pattern accepts what the rule accepts."""
        pattern = re.compile(str(domain_schema()["pattern"]))
        for raw in ["www.example.org", "A-B.Example.IO", "xn--bcher-kva.example", "a.b"]:
            self.assertTrue(pattern.fullmatch(raw), raw)
            normalize_domain(raw)
        for raw in ["org", "a;b.org", "1.2.3.4", "ab--cd.org", "-a.org", "a" * 64 + ".org"]:
            self.assertFalse(pattern.fullmatch(raw), raw)
            refusal(normalize_domain, raw)


class SiteSpecTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        spec = SiteSpec(
            name="blog",
            type="dynamic",
            availability="not-served",
            image="director/python:3",
            env={"DATABASE_URL": "postgresql://x"},
            limits=Limits(memory_mb=200),
            custom_domains=("blog.example.org",),
        )
        self.assertEqual(SiteSpec.from_json(spec.to_json()), spec)

    def test_defaults(self) -> None:
        self.assertEqual(
            SiteSpec.from_json({"name": "ab", "type": "static"}), SiteSpec("ab", "static")
        )

    def test_refused(self) -> None:
        base = {"name": "ab", "type": "static"}
        cases = [
            ({**base, "image": "Nope"}, "image"),
            ({**base, "env": {"PORT": "1"}}, "env.PORT"),
            ({**base, "env": {"1X": "1"}}, "env.1X"),
            ({**base, "env": {"X": 1}}, "env.X"),
            ({**base, "env": []}, "env"),
            ({**base, "custom_domains": "a.org"}, "custom_domains"),
            ({**base, "other": 1}, "other"),
            ({**base, "limits": {"pids": 1}}, "limits.pids"),
        ]
        for data, field_name in cases:
            self.assertEqual(refusal(SiteSpec.from_json, data).field, field_name, data)
        self.assertEqual(refusal(SiteSpec.from_json, [base]).field, "body")

    def test_what_the_manager_sends_the_orchestrator_reads(self) -> None:
        database = Database("postgres", "site_7", "site_7", "p@ss w:rd", "fd00::1", 5432, 1)
        site = Site(
            id=7,
            name="blog",
            type="dynamic",
            purpose="project",
            availability="enabled",
            description="",
            image="director/python:3",
            image_tag="director/site-7:2",
            packages=(),
            limits={**models.DEFAULT_LIMITS, "memory_mb": 300},
            domains=("blog.example.org",),
            database=database,
        )
        parsed = parse_site(7, site.orchestrator_spec())
        spec = site.site_spec()
        self.assertEqual(parsed.name, spec.name)
        self.assertEqual(parsed.image, "director/site-7:2")
        self.assertEqual(parsed.limits, Limits(memory_mb=300))
        self.assertEqual(parsed.env, site.database_env())
        self.assertEqual(parsed.custom_domains, ("blog.example.org",))
        route = site.route_spec()
        self.assertEqual(RouteSpec.from_json(route.to_json()), route)
        entry = parse_site_request("blog", route.to_json(), SITES, "2m")
        self.assertEqual((entry.domains, entry.max_body_size), (("blog.example.org",), "1m"))


class RouteSpecTests(SynchronousTestCase):
    def test_json(self) -> None:
        spec = RouteSpec(("a.example.org",), "2m")
        self.assertEqual(
            spec.to_json(),
            {"domains": ["a.example.org"], "max_body_size": "2m", "upstream": None},
        )
        self.assertEqual(RouteSpec.from_json(spec.to_json()), spec)
        placed = RouteSpec((), None, "10.0.0.5:8180")
        self.assertEqual(RouteSpec.from_json(placed.to_json()), placed)
        self.assertEqual(RouteSpec.from_json({}), RouteSpec())
        self.assertEqual(
            RouteSpec.from_json({"domains": ["B.example", "b.example."], "max_body_size": "5M"}),
            RouteSpec(("b.example",), "5m"),
        )

    def test_codes(self) -> None:
        cases = [
            ([], "invalid_request"),
            ({"domain": []}, "invalid_request"),
            ({"domains": "a.org"}, "invalid_request"),
            ({"domains": ["a;b.org"]}, "invalid_domain"),
            ({"domains": [f"d{i}.org" for i in range(101)]}, "too_many_domains"),
            ({"max_body_size": "1t"}, "invalid_max_body_size"),
        ]
        for data, code in cases:
            self.assertEqual(refusal(RouteSpec.from_json, data).code, code, data)

    def test_upstream_canonical_form(self) -> None:
        """An upstream is an address and a port, stored in one form whatever was sent."""
        for raw, canonical in (
            ("10.0.0.5:8180", "10.0.0.5:8180"),
            ("127.0.0.1:08180", "127.0.0.1:8180"),
            ("[2001:DB8:0:0::1]:80", "[2001:db8::1]:80"),
            ("[::1]:65535", "[::1]:65535"),
            ("Orch-2.Example.internal:8180", "orch-2.example.internal:8180"),
            ("localhost:1", "localhost:1"),
        ):
            self.assertEqual(RouteSpec.from_json({"upstream": raw}).upstream, canonical, raw)
        self.assertIsNone(RouteSpec.from_json({"upstream": None}).upstream)

    def test_upstream_refused(self) -> None:
        """Anything but host:port is refused before it can reach nginx configuration."""
        for raw in (
            "",
            "10.0.0.5",
            "10.0.0.5:0",
            "10.0.0.5:65536",
            "10.0.0.5:80x",
            "10.0.0.5:-1",
            "10.0.0.256:80",
            "10.0.0:80",
            "::1:80",
            "[::1:80",
            "[fe80::1%eth0]:80",
            "[10.0.0.1]:80",
            "host name:80",
            "a;b:80",
            "a}b:80",
            "-bad.example:80",
            "bad-.example:80",
            "a..b:80",
            "example.123:80",
            "unix:/tmp/x.sock",
            "http://a.example:80",
            "a.example:80\nserver evil:80",
            "bücher.example:80",
            "a" * 64 + ".example:80",
            8180,
            ["10.0.0.5:80"],
            True,
        ):
            error = refusal(RouteSpec.from_json, {"upstream": raw})
            self.assertEqual(error.code, "invalid_request", raw)
            self.assertIn("upstream", error.message, raw)


HOST = {
    "kind": "postgres",
    "admin_host": "10.0.0.9",
    "admin_port": 5432,
    "admin_user": "postgres",
    "admin_password": "secret",
    "container_host": "172.17.0.1",
    "container_port": 15432,
}


class DatabaseHostTests(SynchronousTestCase):
    def test_json(self) -> None:
        host = DatabaseHost.from_json(HOST)
        self.assertEqual(host.to_json(), HOST)
        self.assertEqual((host.site_host, host.site_port), ("172.17.0.1", 15432))
        plain = DatabaseHost.from_json({**HOST, "container_host": None, "container_port": None})
        self.assertEqual((plain.site_host, plain.site_port), ("10.0.0.9", 5432))
        self.assertEqual(DatabaseHost.from_json({**HOST, "admin_port": 5432.0}).admin_port, 5432)
        self.assertEqual(DatabaseHost.from_record({**HOST, "id": 3, "extra": 1}), host)
        self.assertNotIn("secret", repr(host))

    def test_refused(self) -> None:
        cases = [
            ({**HOST, "kind": "oracle"}, "kind"),
            ({**HOST, "admin_user": ""}, "admin_user"),
            ({**HOST, "admin_password": "x" * 254}, "admin_password"),
            ({**HOST, "admin_host": "a b"}, "admin_host"),
            ({**HOST, "container_host": "/run/db"}, "container_host"),
            ({**HOST, "admin_port": 0}, "admin_port"),
            ({**HOST, "admin_port": "5432"}, "admin_port"),
            ({**HOST, "container_port": 70000}, "container_port"),
            ({**HOST, "other": 1}, "other"),
        ]
        for data, field_name in cases:
            self.assertEqual(refusal(DatabaseHost.from_json, data).field, field_name, data)

    def test_sockets(self) -> None:
        """A UNIX socket is an admin address on the wire, not in the manager's API."""
        data = {**HOST, "admin_host": "/run/postgresql"}
        self.assertEqual(DatabaseHost.from_json(data).admin_host, "/run/postgresql")
        self.assertEqual(refusal(DatabaseHost.from_json, data, False).field, "admin_host")

    def test_ipv6(self) -> None:
        host = DatabaseHost.from_json({**HOST, "admin_host": "fd00::9", "container_host": None})
        self.assertEqual(host.site_host, "fd00::9")


class SiteDatabaseTests(SynchronousTestCase):
    def test_url_quoting(self) -> None:
        db = SiteDatabase("postgres", "site db/1", "us:er@x", "p@ss:w/rd?#% ", "db.test", 5432)
        parts = urlsplit(db.url)
        self.assertEqual(parts.scheme, "postgresql")
        self.assertEqual(unquote(parts.username or ""), "us:er@x")
        self.assertEqual(unquote(parts.password or ""), "p@ss:w/rd?#% ")
        self.assertEqual((parts.hostname, parts.port), ("db.test", 5432))
        self.assertEqual(unquote(parts.path), "/site db/1")
        self.assertEqual(parts.path, "/site%20db%2F1")

    def test_ipv6_in_brackets(self) -> None:
        db = SiteDatabase("mysql", "site_1", "site_1", "pw", "fd00::1", 3306)
        self.assertEqual(db.url, "mysql://site_1:pw@[fd00::1]:3306/site_1")
        self.assertEqual(urlsplit(db.url).hostname, "fd00::1")
        self.assertEqual(db.environment()["DIRECTOR_DATABASE_HOST"], "fd00::1")

    def test_environment(self) -> None:
        db = SiteDatabase("postgres", "site_2", "site_2", "p w", "10.0.0.1", 5432)
        url = "postgresql://site_2:p%20w@10.0.0.1:5432/site_2"
        self.assertEqual(
            db.environment(),
            {
                "DIRECTOR_DATABASE_URL": url,
                "DATABASE_URL": url,
                "DIRECTOR_DATABASE_TYPE": "postgres",
                "DIRECTOR_DATABASE_HOST": "10.0.0.1",
                "DIRECTOR_DATABASE_PORT": "5432",
                "DIRECTOR_DATABASE_NAME": "site_2",
                "DIRECTOR_DATABASE_USERNAME": "site_2",
                "DIRECTOR_DATABASE_PASSWORD": "p w",
            },
        )

    def test_spec_json(self) -> None:
        spec = DatabaseSpec(DatabaseHost.from_json(HOST), "site_3", "site_3", "pw")
        self.assertEqual(DatabaseSpec.from_json(spec.to_json()), spec)
        self.assertEqual(spec.site_database().host, "172.17.0.1")
        self.assertEqual(refusal(DatabaseSpec.from_json, {"host": []}).field, "host")

    def test_the_manager_and_the_orchestrator_give_the_same_environment(self) -> None:
        """
        For the same database the manager's site spec carries exactly the environment the
        orchestrator answers when it creates the database (IPv6 and odd passwords included).
        """
        for container_host, password in [
            ("172.17.0.1", "plain-password"),
            ("fd00::17", "p@ss:w/rd?#% "),
            ("db.internal", "ünï€ode"),
        ]:
            host = DatabaseHost.from_json({**HOST, "container_host": container_host})
            spec = DatabaseSpec(host, "site_4", "site_4", password)
            # The orchestrator: the body the manager sends, parsed as PUT /v1/databases does.
            parsed = DatabaseSpec.from_json(spec.to_json())
            server = orchestrator_databases.DatabaseHost.of(parsed.host)
            site_db = server.site_database(parsed.name, parsed.username, parsed.password)
            orchestrator_env = site_db.environment()
            # The manager: the site's database as its store holds it.
            stored = Database(
                "postgres", "site_4", "site_4", password, host.site_host, host.site_port, 1
            )
            self.assertEqual(stored.site_database().environment(), orchestrator_env)
            self.assertEqual(stored.url(), orchestrator_env["DATABASE_URL"])


class OneCopyTests(SynchronousTestCase):
    """The rules live in director/contract/ only (what `grep` checks, as a test)."""

    def test_no_second_copy(self) -> None:
        root = Path(__file__).resolve().parents[2] / "director"
        patterns = [
            r"\[a-z0-9-\]\{0,30\}",  # the site name
            r"\{0,61\}",  # a DNS label (domains, database host names)
            r"postgresql://|mysql://",  # the database URL
            r'"DIRECTOR_DATABASE_URL"',
            r'"admin_password",\s+"container_host"',  # the host keys listed out
        ]
        for pattern in patterns:
            files = sorted(
                str(path.relative_to(root))
                for path in [*root.rglob("*.py"), *root.rglob("*.html"), *root.rglob("*.j2")]
                if re.search(pattern, path.read_text(encoding="utf-8"))
            )
            self.assertTrue(files, pattern)
            # testing/ holds the contract suites, which check what the rules produce.
            rules = [f for f in files if not f.startswith("testing/")]
            self.assertTrue(all(f.startswith("contract/") for f in rules), (pattern, files))
