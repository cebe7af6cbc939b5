"""Finding sites: the search language, the store's matching, and paging in the API."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from director.manager.models import parse_query
from director.testing.manager import ManagerHarness, static_site_fields

pytestmark = pytest.mark.manager_store


class ParseQueryTests(SynchronousTestCase):
    def test_words_qualifiers_and_quotes(self) -> None:
        self.assertEqual(
            parse_query('robotics name:blog user:alice desc:"science club" id:12 "two words"'),
            [
                ("any", "robotics"),
                ("name", "blog"),
                ("user", "alice"),
                ("desc", "science club"),
                ("id", "12"),
                ("any", "two words"),
            ],
        )

    def test_unknown_qualifiers_and_unbalanced_quotes_are_plain_words(self) -> None:
        self.assertEqual(parse_query("owner:bob"), [("any", "owner:bob")])
        self.assertEqual(
            parse_query('"open quote club'), [("any", "open"), ("any", "quote"), ("any", "club")]
        )
        self.assertEqual(parse_query("name: x"), [("any", "name:"), ("any", "x")])
        self.assertEqual(parse_query("   "), [])

    def test_bounded(self) -> None:
        terms = parse_query(" ".join(f"w{i}" for i in range(50)) + " name:" + "x" * 500)
        self.assertEqual(len(terms), 10)
        self.assertEqual(parse_query("name:" + "x" * 500), [("name", "x" * 100)])


class StoreSearchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        for name in ("alice", "bob"):
            self.h.user(name)
        self.ids = {}
        for name, owner, description in (
            ("chem-lab", "alice", "Science Club pages"),
            ("blog", "alice", "my science notes"),
            ("robots", "bob", "Robotics club"),
            ("percent", "bob", "100% club_site"),
        ):
            fields = {**static_site_fields(name), "description": description}
            site, _ = self.h.result(
                self.h.store.create_site(fields, [owner], ("create_site", []), None)
            )
            self.ids[name] = site.id

    def names(self, q: str, member: str | None = None) -> list[str]:
        sites = self.h.result(self.h.store.list_sites(member, parse_query(q)))
        return sorted(s.name for s in sites)

    def test_every_term_must_match_in_any_case(self) -> None:
        self.assertEqual(self.names("club"), ["chem-lab", "percent", "robots"])
        self.assertEqual(self.names("SCIENCE"), ["blog", "chem-lab"])
        self.assertEqual(self.names("science club"), ["chem-lab"])
        self.assertEqual(self.names('"science club"'), ["chem-lab"])
        self.assertEqual(self.names('"club pages"'), ["chem-lab"])
        self.assertEqual(self.names('"science pages"'), [])

    def test_qualifiers(self) -> None:
        self.assertEqual(self.names("user:bob"), ["percent", "robots"])
        self.assertEqual(self.names("user:bob desc:robotics"), ["robots"])
        self.assertEqual(self.names(f"id:{self.ids['blog']}"), ["blog"])
        self.assertEqual(self.names("id:999999"), [])
        self.assertEqual(self.names("id:abc"), [])
        self.assertEqual(self.names("id:" + "9" * 40), [])
        self.assertEqual(self.names("name:ch"), ["chem-lab"])
        self.assertEqual(self.names("club", member="alice"), ["chem-lab"])

    def test_wildcards_are_literal(self) -> None:
        self.assertEqual(self.names("%"), ["percent"])
        self.assertEqual(self.names("_"), ["percent"])
        self.assertEqual(self.names("desc:b_s"), ["percent"])
        self.assertEqual(self.names("desc:100%c"), [])


class APIPagingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.http: Any = StubTreq(self.h.api.app.resource())
        self.alice = self.h.user("alice")
        for i in range(5):
            self.h.result(
                self.h.store.create_site(
                    static_site_fields(f"site-{i}"), ["alice"], ("create_site", []), None
                )
            )

    def get(self, query: str) -> tuple[int, Any]:
        d = self.http.get(
            f"http://manager.test/api/v1/sites{query}",
            headers={"Authorization": [f"Bearer {self.alice}"]},
        )
        self.http.flush()
        response = self.successResultOf(d)
        return response.code, json.loads(self.successResultOf(self.http.content(response)))

    def test_limit_and_offset_page_through(self) -> None:
        seen = []
        for offset in (0, 2, 4):
            code, body = self.get(f"?limit=2&offset={offset}")
            self.assertEqual(code, 200)
            seen += [s["name"] for s in body["sites"]]
        self.assertEqual(sorted(seen), [f"site-{i}" for i in range(5)])
        self.assertEqual(len(set(seen)), 5)

    def test_bad_paging_is_refused(self) -> None:
        for query in (
            "?limit=0",
            "?limit=-1",
            "?limit=5001",
            "?limit=x",
            "?offset=-3",
            "?q=" + "a" * 1001,
        ):
            code, body = self.get(query)
            self.assertEqual((code, body["error"]), (400, "bad_query"), query)


class UnstorableTextTests(SynchronousTestCase):
    def test_a_nul_character_is_refused_everywhere(self) -> None:
        """PostgreSQL's text cannot hold NUL (a 500 there for a user's email): 400, nothing made."""
        h = ManagerHarness(Path(tempfile.mkdtemp()))
        http: Any = StubTreq(h.api.app.resource())
        admin = h.user("root", role="admin")
        for path, method, raw, error in (
            ("/api/v1/sites", "POST", b'{"name": "ok", "description": "a\\u0000b"}', "invalid"),
            ("/api/v1/users", "POST", b'{"username": "bob", "email": "b\\u0000@x.y"}', "invalid"),
            ("/api/v1/users", "POST", b'{"username": "bob", "full_name": "\\u0000"}', "invalid"),
        ):
            d = http.request(
                method,
                f"http://manager.test{path}",
                data=raw or None,
                headers={"Authorization": [f"Bearer {admin}"]},
            )
            http.flush()
            response = self.successResultOf(d)
            body = json.loads(self.successResultOf(http.content(response)))
            self.assertEqual((response.code, body["error"]), (400, error), (raw, body))
        self.assertEqual(h.result(h.store.count_sites()), 0)
        self.assertEqual([u.username for u in h.result(h.store.list_users())], ["root"])


class LoneSurrogateTests(SynchronousTestCase):
    def test_text_that_is_not_unicode_is_refused_everywhere(self) -> None:
        h = ManagerHarness(Path(tempfile.mkdtemp()))
        http: Any = StubTreq(h.api.app.resource())
        alice = h.user("alice")
        for path, method, raw in (
            ("/api/v1/sites", "POST", b'{"name": "ok", "description": "a\\ud800b"}'),
            ("/api/v1/sites", "POST", b'{"name": "ok", "users": ["\\udfff"]}'),
            ("/api/v1/me/keys", "POST", b'{"\\ud83d": 1}'),
        ):
            d = http.request(
                method,
                f"http://manager.test{path}",
                data=raw,
                headers={"Authorization": [f"Bearer {alice}"]},
            )
            http.flush()
            response = self.successResultOf(d)
            body = json.loads(self.successResultOf(http.content(response)))
            self.assertEqual((response.code, body["error"]), (400, "bad_json"), raw)
        self.assertEqual(h.result(h.store.count_sites()), 0)
        # A real emoji, as a surrogate pair in JSON, is of course fine.
        d = http.request(
            "POST",
            "http://manager.test/api/v1/sites",
            data=b'{"name": "ok", "description": "\\ud83d\\ude00"}',
            headers={"Authorization": [f"Bearer {alice}"]},
        )
        http.flush()
        self.assertEqual(self.successResultOf(d).code, 202)
