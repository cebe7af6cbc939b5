"""
director.manager.access: the one copy of who a request's user is and which sites they reach,
over a real store (SQLite); the API, pages, websockets and shell-server API all ask it.
"""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from director.manager.access import Access, AccessDenied, locked, may_act
from director.manager.models import User
from director.manager.proxies import Proxies
from director.manager.ratelimit import RateLimiter
from director.manager.shell_server import ShellServerAPI
from director.testing.keys import Keyring
from director.testing.manager import ManagerHarness, create_static_site

pytestmark = pytest.mark.manager_store


class Request(DummyRequest):
    """A request with the cookies a browser would send."""

    def __init__(self, method: bytes) -> None:
        super().__init__([b"api", b"v1"])
        self.method = method
        self.cookies: dict[bytes, bytes] = {}

    def getCookie(self, name: bytes) -> bytes | None:
        return self.cookies.get(name)


def request(
    method: bytes = b"GET",
    token: str | None = None,
    session: str | None = None,
    csrf: str | None = None,
) -> Request:
    r = Request(method)
    if token is not None:
        r.requestHeaders.setRawHeaders(b"authorization", [token.encode()])
    if session is not None:
        r.cookies[b"director_session"] = session.encode()
    if csrf is not None:
        r.requestHeaders.setRawHeaders(b"x-csrf-token", [csrf.encode()])
    return r


class RuleTests(SynchronousTestCase):
    """The pure rules: admin or member, and a disabled site locked to members."""

    def test_admins_and_members_may_act(self) -> None:
        admin = User(1, "root", "admin")
        alice = User(2, "alice", "student")
        teacher = User(3, "tess", "teacher")
        self.assertTrue(may_act(admin, []))
        self.assertTrue(may_act(alice, ["alice", "bob"]))
        self.assertFalse(may_act(alice, ["bob"]))
        self.assertFalse(may_act(teacher, ["alice"]))  # teachers are not admins

    def test_a_disabled_site_is_locked_to_all_but_admins(self) -> None:
        admin, alice = User(1, "root", "admin"), User(2, "alice", "student")
        site: Any = type("S", (), {"availability": "disabled"})()
        self.assertTrue(locked(alice, site))
        self.assertFalse(locked(admin, site))
        site.availability = "enabled"
        self.assertFalse(locked(alice, site))


class AccessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.alice_token = self.h.user("alice")
        self.h.user("bob")
        self.root_token = self.h.user("root", role="admin")
        self.clock = Clock()
        self.access = Access(self.h.store, Proxies(), RateLimiter(self.clock, rate=1.0, burst=2))
        self.h.result(create_static_site(self.h.store, "blog", owner="alice"))
        self.alice = self.h.result(self.h.store.get_user("alice"))
        self.bob = self.h.result(self.h.store.get_user("bob"))
        self.root = self.h.result(self.h.store.get_user("root"))

    def wait(self, coroutine: Any) -> Any:
        return self.h.result(Deferred.fromCoroutine(coroutine))

    def user(self, r: Request, write: bool | None = None) -> User:
        return self.wait(self.access.api_user(r, write))

    def denied(self, r: Request, write: bool | None = None) -> tuple[int, str]:
        try:
            self.user(r, write)
        except AccessDenied as e:
            return e.status, e.code
        raise AssertionError("not denied")

    def test_bearer_tokens(self) -> None:
        self.assertEqual(self.user(request(token=f"Bearer {self.alice_token}")).username, "alice")
        self.assertEqual(self.user(request(token=f"bearer  {self.alice_token} ")).username, "alice")
        self.assertEqual(self.denied(request(token="Basic abc")), (401, "unauthenticated"))
        self.assertEqual(self.denied(request(token="Bearer ")), (401, "unauthenticated"))
        self.assertEqual(self.denied(request(token="Bearer nope")), (401, "unauthenticated"))
        self.assertEqual(self.denied(request()), (401, "unauthenticated"))

    def test_sessions_and_their_csrf_token(self) -> None:
        session_id, csrf = self.h.result(
            self.h.store.create_session(self.alice.id, timedelta(hours=1))
        )
        r: Any = request(session=session_id)
        self.assertEqual(self.user(r).username, "alice")
        self.assertTrue(r.director_session)
        self.assertEqual(r.director_session_id, session_id)
        self.assertEqual(self.denied(request(b"POST", session=session_id)), (403, "csrf"))
        wrong = request(b"POST", session=session_id, csrf="x")
        self.assertEqual(self.denied(wrong), (403, "csrf"))
        posted = request(b"POST", session=session_id, csrf=csrf)
        self.assertEqual(self.user(posted).username, "alice")
        self.assertEqual(self.denied(request(session="unknown")), (401, "unauthenticated"))
        # The pages and websockets ask for the same session.
        found = self.wait(self.access.signed_in(request(session=session_id)))
        self.assertEqual((found.user.username, found.csrf), ("alice", csrf))
        self.assertEqual(self.wait(self.access.signed_in(session_id)).session_id, session_id)
        self.assertIsNone(self.wait(self.access.signed_in(request())))
        self.assertIsNone(self.wait(self.access.signed_in(None)))

    def test_a_deactivated_account(self) -> None:
        session_id, _ = self.h.result(
            self.h.store.create_session(self.alice.id, timedelta(hours=1))
        )
        self.h.result(self.h.store.update_user("alice", is_active=False))
        self.assertEqual(
            self.denied(request(token=f"Bearer {self.alice_token}")), (403, "inactive")
        )
        self.assertEqual(self.denied(request(session=session_id)), (403, "inactive"))
        # To the pages and websockets, a deactivated account is a stranger.
        self.assertIsNone(self.wait(self.access.signed_in(session_id)))

    def test_writes_are_rate_limited(self) -> None:
        auth = f"Bearer {self.alice_token}"
        for _ in range(5):
            self.user(request(token=auth))  # reads are not counted
        self.user(request(b"POST", token=auth))
        self.user(request(b"GET", token=auth), write=True)
        self.assertEqual(self.denied(request(b"PATCH", token=auth)), (429, "rate_limited"))
        self.user(request(b"POST", token=auth), write=False)

    def test_sites_reach_members_and_admins_only(self) -> None:
        site = self.wait(self.access.site(self.alice, "blog"))
        self.assertEqual(site.name, "blog")
        self.assertEqual(self.wait(self.access.site(self.root, "blog")).name, "blog")
        self.assertIsNone(self.wait(self.access.site(self.bob, "blog")))
        self.assertIsNone(self.wait(self.access.site(self.alice, "nope")))
        self.assertIsNone(self.wait(self.access.site(self.root, "Not A Name")))
        self.assertIsNone(self.wait(self.access.site(self.root, 7)))
        self.assertEqual(self.wait(self.access.site_by_id(self.alice, site.id)).name, "blog")
        self.assertIsNone(self.wait(self.access.site_by_id(self.bob, site.id)))
        self.assertIsNone(self.wait(self.access.site_by_id(self.root, None)))


class ShellServerAccessTests(SynchronousTestCase):
    """The shell-server API follows the same rule: admins may open a session on any site."""

    def test_admins_who_are_not_members_get_a_session(self) -> None:
        h = ManagerHarness(Path(tempfile.mkdtemp()))
        h.user("alice")
        h.user("bob")
        h.user("root", role="admin")
        h.result(create_static_site(h.store, "blog", owner="alice"))
        keys = Keyring()
        shell = ShellServerAPI(h.clock, h.store, h.passwords, keys.private["manager"], "http://o")
        http: Any = StubTreq(shell.app.resource())

        def session(username: str) -> tuple[int, Any]:
            response = self.successResultOf(
                http.post(
                    "http://manager.test/shell-server/session",
                    data=json.dumps({"username": username, "site": "blog"}).encode(),
                )
            )
            return response.code, json.loads(self.successResultOf(http.content(response)))

        self.assertEqual(session("alice")[0], 200)
        self.assertEqual(session("root")[0], 200)
        code, body = session("bob")
        self.assertEqual((code, body["error"]), (404, "unknown_site"))


class SiteServiceTests(SynchronousTestCase):
    """A new site is built in one place, for the API's create and for approved requests."""

    def test_a_new_site_has_the_defaults_and_its_create_operation(self) -> None:
        from director.manager.models import DEFAULT_LIMITS
        from director.manager.site_service import FALLBACK_IMAGE, SiteService

        h = ManagerHarness(Path(tempfile.mkdtemp()))
        h.user("tess", role="teacher")
        h.user("sam")
        tess = h.result(h.store.get_user("tess"))
        service = SiteService(h.store, h.pool)

        def new(name: str) -> Any:
            d = Deferred.fromCoroutine(
                service.record_new(tess, name, "static", "activity", "A club", ["tess", "sam"])
            )
            return h.result(d)

        site, op = new("club")
        self.assertEqual(
            (site.name, site.type, site.purpose, site.availability, site.description),
            ("club", "static", "activity", "enabled", "A club"),
        )
        self.assertEqual((site.image, list(site.packages)), (FALLBACK_IMAGE, []))
        self.assertEqual(dict(site.limits), dict(DEFAULT_LIMITS))
        self.assertEqual(sorted(site.members), ["sam", "tess"])
        self.assertEqual((op.type, op.status, op.site_id), ("create_site", "pending", site.id))
        h.result(h.store.put_image("school/php:8", "PHP", is_default=True))
        self.assertEqual(new("club2")[0].image, "school/php:8")
