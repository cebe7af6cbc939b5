"""Validation of what the manager sends the router, and the site table (plain values)."""

from twisted.trial.unittest import SynchronousTestCase

from director.router.domains import (
    MAX_DOMAINS_PER_SITE,
    RequestError,
    SiteEntry,
    SiteTable,
    normalize_domain,
    normalize_size,
    parse_site_request,
    validate_site_name,
)

SITES = "sites.example.org"


class DomainTests(SynchronousTestCase):
    def refused(self, raw: object) -> RequestError:
        with self.assertRaises(RequestError) as cm:
            normalize_domain(raw, SITES)
        self.assertEqual(cm.exception.status, 400)
        return cm.exception

    def test_canonical_form(self) -> None:
        """Case is folded, a final dot dropped, international names become A-labels."""
        self.assertEqual(normalize_domain("WWW.Example.COM", SITES), "www.example.com")
        self.assertEqual(normalize_domain("example.com.", SITES), "example.com")
        self.assertEqual(normalize_domain("Bücher.example", SITES), "xn--bcher-kva.example")
        self.assertEqual(normalize_domain("xn--bcher-kva.example", SITES), "xn--bcher-kva.example")
        self.assertEqual(normalize_domain("a-b.c-d.io", SITES), "a-b.c-d.io")

    def test_nginx_syntax_refused(self) -> None:
        """Nothing that could end a directive, open a block or expand a variable gets in."""
        for raw in [
            'a.com"',
            "a.com'",
            "a.com;",
            "a.com{",
            "a.com}",
            "a .com",
            "a.com\n",
            "a.com\r\nserver { }",
            "a.com\t",
            "$host.com",
            "a.com\\",
            "a.com#",
            "*.example.com",
            "a/b.com",
            "a.com\x00",
            "ex ample.com",
        ]:
            error = self.refused(raw)
            self.assertEqual(error.code, "invalid_domain", raw)

    def test_label_rules(self) -> None:
        """Labels are 1-63 of [a-z0-9-], without hyphens at either end; two labels at least."""
        self.assertEqual(normalize_domain("a" * 63 + ".com", SITES), "a" * 63 + ".com")
        for raw in [
            "a" * 64 + ".com",
            "-a.com",
            "a-.com",
            "a..com",
            ".a.com",
            "localhost",
            "com",
            "a_b.com",
            "xn--zz.com",
            "",
            "1.2.3.4",
        ]:
            self.assertEqual(self.refused(raw).code, "invalid_domain", raw)

    def test_total_length(self) -> None:
        """253 characters at most (checked on the ASCII form)."""
        ok = ".".join(["a" * 63] * 3 + ["b" * 61])
        self.assertEqual(len(ok), 253)
        self.assertEqual(normalize_domain(ok, SITES), ok)
        self.assertEqual(self.refused(ok + "b").code, "invalid_domain")
        self.assertEqual(self.refused("a" * 2000).code, "invalid_domain")

    def test_not_text(self) -> None:
        for raw in [None, 3, ["a.com"], {"a": 1}]:
            self.assertEqual(self.refused(raw).code, "invalid_domain")

    def test_sites_domain_reserved(self) -> None:
        """The sites domain and every name under it belong to Director."""
        for raw in [SITES, "x." + SITES, "a.b." + SITES.upper()]:
            error = self.refused(raw)
            self.assertEqual(error.code, "reserved_domain")
            self.assertIn(SITES, error.message)
        self.assertEqual(normalize_domain("notsites.example.org", SITES), "notsites.example.org")


class SiteNameAndSizeTests(SynchronousTestCase):
    def test_site_names(self) -> None:
        self.assertEqual(validate_site_name("my-site1", SITES), "my-site1")
        for bad in ["", "My", "a.b", "-a", "a-", "a" * 64, "a b", None, "a;"]:
            with self.assertRaises(RequestError) as cm:
                validate_site_name(bad, SITES)
            self.assertEqual(cm.exception.code, "invalid_site_name")

    def test_sizes(self) -> None:
        """Bytes or nginx sizes, normalised; nothing else."""
        self.assertEqual(normalize_size(1048576), "1048576")
        self.assertEqual(normalize_size("10M"), "10m")
        self.assertEqual(normalize_size("007k"), "7k")
        self.assertEqual(normalize_size("0"), "0")
        for bad in ["10 m", "1t", "-1", "1.5m", True, 1e3, "", "9999999999", "1m;"]:
            with self.assertRaises(RequestError) as cm:
                normalize_size(bad)
            self.assertEqual(cm.exception.code, "invalid_max_body_size")


class SiteRequestTests(SynchronousTestCase):
    def parse(self, body: object, name: object = "alpha") -> SiteEntry:
        return parse_site_request(name, body, SITES, "2m")

    def error(self, body: object) -> str:
        with self.assertRaises(RequestError) as cm:
            self.parse(body)
        return cm.exception.code

    def test_defaults_and_dedupe(self) -> None:
        """Missing fields take defaults; domains are canonical and listed once, in order."""
        self.assertEqual(self.parse({}), SiteEntry("alpha", (), "2m"))
        entry = self.parse({"domains": ["B.example", "a.example", "b.example."]})
        self.assertEqual(entry.domains, ("b.example", "a.example"))
        self.assertEqual(self.parse({"max_body_size": "5M"}).max_body_size, "5m")

    def test_shape_errors(self) -> None:
        self.assertEqual(self.error([]), "invalid_request")
        self.assertEqual(self.error({"domains": "a.example"}), "invalid_request")
        self.assertEqual(self.error({"domain": []}), "invalid_request")
        self.assertEqual(self.error({"domains": ["a;.example"]}), "invalid_domain")
        too_many = [f"d{i}.example" for i in range(MAX_DOMAINS_PER_SITE + 1)]
        self.assertEqual(self.error({"domains": too_many}), "too_many_domains")

    def test_to_json(self) -> None:
        entry = SiteEntry("alpha", ("a.example",), "2m")
        self.assertEqual(
            entry.to_json(SITES),
            {
                "name": "alpha",
                "host": "alpha." + SITES,
                "domains": ["a.example"],
                "max_body_size": "2m",
                "upstream": None,
            },
        )


class SiteTableTests(SynchronousTestCase):
    def test_domain_belongs_to_one_site(self) -> None:
        """A domain another site has is refused with 409; the owner may keep it."""
        table = SiteTable.of([SiteEntry("alpha", ("a.example",), "2m")])
        with self.assertRaises(RequestError) as cm:
            table.with_site(SiteEntry("beta", ("b.example", "a.example"), "2m"))
        self.assertEqual((cm.exception.status, cm.exception.code), (409, "domain_taken"))
        self.assertIn("alpha", cm.exception.message)
        again = table.with_site(SiteEntry("alpha", ("a.example", "c.example"), "1m"))
        self.assertEqual(again.owner("c.example"), "alpha")
        self.assertEqual(again.domains, frozenset({"a.example", "c.example"}))

    def test_without_and_restored(self) -> None:
        entry = SiteEntry("alpha", ("a.example",), "2m")
        table = SiteTable.of([entry])
        self.assertIsNone(table.without("alpha").owner("a.example"))
        changed = table.with_site(SiteEntry("alpha", (), "2m"))
        self.assertEqual(changed.restored("alpha", entry), table)
        self.assertEqual(table.restored("alpha", None), SiteTable())

    def test_json_round_trip(self) -> None:
        table = SiteTable.of(
            [
                SiteEntry("alpha", ("a.example",), "2m"),
                SiteEntry("beta", (), "10m", "10.0.0.5:8180"),
                SiteEntry("gamma", (), "1m", "[2001:db8::1]:80"),
            ]
        )
        self.assertEqual(SiteTable.from_json(table.to_json(), SITES, "2m"), table)
        self.assertEqual(table.upstreams, {"10.0.0.5:8180", "[2001:db8::1]:80"})
        # A table saved before upstreams existed loads with the default group.
        old = {"version": 1, "sites": {"alpha": {"domains": [], "max_body_size": "2m"}}}
        self.assertIsNone(SiteTable.from_json(old, SITES, "2m").sites["alpha"].upstream)
        with self.assertRaises(ValueError):
            SiteTable.from_json({"nope": 1}, SITES, "2m")
