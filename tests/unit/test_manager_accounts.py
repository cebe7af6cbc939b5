"""
Accounts, tokens and sessions through the real Klein apps (StubTreq) and the real store:
token listing, revocation, expiry and the recent-sign-in rule; password changes ending the
other sessions; the sign-in throttle per account and address behind trusted proxies; the
dummy hash's cost; the dashboard's own host refused as a custom domain; private files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from sqlalchemy import update
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from director.cli import main as director_main
from director.common.config import ManagerSection
from director.manager import passwords as passwords_module
from director.manager import schema
from director.manager.dashboard.security import LoginThrottle
from director.manager.passwords import Passwords, hash_password
from director.manager.proxies import Proxies
from director.manager.store import make_engine
from director.testing import manager_database
from director.testing.manager import ManagerHarness
from tests.unit.test_dashboard import DashboardHarness, login_token

pytestmark = pytest.mark.manager_store


PASSWORD = "correct horse"


class Client:
    """Calls the API as a script (bearer token) or as a dashboard page (session + CSRF)."""

    def __init__(self, h: ManagerHarness, test: SynchronousTestCase) -> None:
        self.h = h
        self.test = test
        self.http: Any = StubTreq(h.api.app.resource())

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        session: tuple[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers: dict[str, list[str]] = {}
        if token:
            headers["Authorization"] = [f"Bearer {token}"]
        if session:
            headers["Cookie"] = [f"director_session={session[0]}"]
            headers["X-CSRF-Token"] = [session[1]]
        data = json.dumps(body).encode() if body is not None else None
        response = self.test.successResultOf(
            self.http.request(method, f"http://manager.test{path}", data=data, headers=headers)
        )
        content = self.test.successResultOf(self.http.content(response))
        return response.code, json.loads(content)


def age_sessions(h: ManagerHarness, user_id: int, age: timedelta) -> None:
    with h.store.engine.begin() as conn:
        conn.execute(
            update(schema.sessions)
            .where(schema.sessions.c.user_id == user_id)
            .values(created_at=datetime.now(UTC) - age)
        )


class TokenTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.api = Client(self.h, self)
        self.alice = self.h.result(
            self.h.store.create_user("alice", "student", hash_password(PASSWORD, 4))
        )
        self.token = self.h.result(self.h.store.create_token(self.alice.id, "laptop"))
        self.bob = self.h.user("bob")

    def session(self, age: timedelta = timedelta(0)) -> tuple[str, str]:
        session = self.h.result(self.h.store.create_session(self.alice.id, timedelta(hours=2)))
        age_sessions(self.h, self.alice.id, age)
        return tuple(session)

    def test_a_token_alone_cannot_make_another(self) -> None:
        """A stolen token must not mint more: a token needs the password or a recent sign-in."""
        code, body = self.api.call("POST", "/api/v1/tokens", {"name": "more"}, token=self.token)
        self.assertEqual((code, body["error"]), (403, "reauthenticate"))
        code, body = self.api.call(
            "POST", "/api/v1/tokens", {"name": "more", "password": "wrong"}, token=self.token
        )
        self.assertEqual((code, body["error"]), (403, "reauthenticate"))
        self.assertEqual(len(self.h.result(self.h.store.list_tokens(self.alice.id))), 1)
        code, body = self.api.call(
            "POST", "/api/v1/tokens", {"name": "more", "password": PASSWORD}, token=self.token
        )
        self.assertEqual(code, 201, body)
        self.assertTrue(body["token"].startswith("dir_"))

    def test_recent_session_may_create_an_old_one_may_not(self) -> None:
        code, _ = self.api.call("POST", "/api/v1/tokens", {"name": "new"}, session=self.session())
        self.assertEqual(code, 201)
        old = self.session(age=timedelta(minutes=30))
        code, body = self.api.call("POST", "/api/v1/tokens", {"name": "x"}, session=old)
        self.assertEqual((code, body["error"]), (403, "reauthenticate"))
        code, _ = self.api.call(
            "POST", "/api/v1/tokens", {"name": "x", "password": PASSWORD}, session=old
        )
        self.assertEqual(code, 201)

    def test_list_and_revoke(self) -> None:
        code, body = self.api.call("GET", "/api/v1/tokens", token=self.token)
        self.assertEqual(code, 200)
        [listed] = body["tokens"]
        self.assertEqual((listed["name"], listed["expires_at"]), ("laptop", None))
        self.assertIsNotNone(listed["last_used_at"])
        self.assertNotIn(self.token, json.dumps(body))
        # Bob can neither see nor revoke Alice's token.
        self.assertEqual(
            self.api.call("GET", "/api/v1/tokens", token=self.bob)[1]["tokens"][0]["name"], "test"
        )
        code, _ = self.api.call("DELETE", f"/api/v1/tokens/{listed['id']}", token=self.bob)
        self.assertEqual(code, 404)
        self.assertEqual(self.api.call("GET", "/api/v1/me", token=self.token)[0], 200)
        code, body = self.api.call("DELETE", f"/api/v1/tokens/{listed['id']}", token=self.token)
        self.assertEqual((code, body), (200, {"deleted": listed["id"]}))
        self.assertEqual(self.api.call("GET", "/api/v1/me", token=self.token)[0], 401)

    def test_expiry(self) -> None:
        code, body = self.api.call(
            "POST",
            "/api/v1/tokens",
            {"name": "short", "expires_in_days": 1, "password": PASSWORD},
            token=self.token,
        )
        self.assertEqual(code, 201)
        expires = datetime.fromisoformat(body["expires_at"])
        self.assertLess(abs(expires - datetime.now(UTC) - timedelta(days=1)), timedelta(minutes=1))
        short = body["token"]
        self.assertEqual(self.api.call("GET", "/api/v1/me", token=short)[0], 200)
        with self.h.store.engine.begin() as conn:
            conn.execute(
                update(schema.api_tokens)
                .where(schema.api_tokens.c.name == "short")
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        code, body = self.api.call("GET", "/api/v1/me", token=short)
        self.assertEqual((code, body["error"]), (401, "unauthenticated"))
        listed = self.api.call("GET", "/api/v1/tokens", token=self.token)[1]["tokens"]
        self.assertEqual([t["expired"] for t in listed], [True, False])

    def test_bad_expiry_changes_nothing(self) -> None:
        for days in (0, -1, 3651, "7", 1.5, True):
            code, body = self.api.call(
                "POST",
                "/api/v1/tokens",
                {"name": "x", "expires_in_days": days, "password": PASSWORD},
                token=self.token,
            )
            self.assertEqual((code, body["error"]), (400, "invalid"), days)
        self.assertEqual(len(self.h.result(self.h.store.list_tokens(self.alice.id))), 1)


class PasswordChangeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.api = Client(self.h, self)
        self.alice = self.h.result(
            self.h.store.create_user("alice", "student", hash_password(PASSWORD, 4))
        )

    def sessions(self, n: int) -> list[tuple[str, str]]:
        return [
            self.h.result(self.h.store.create_session(self.alice.id, timedelta(hours=1)))
            for _ in range(n)
        ]

    def test_changing_the_password_ends_the_other_sessions(self) -> None:
        mine, other, third = self.sessions(3)
        code, _ = self.api.call(
            "PATCH",
            "/api/v1/me",
            {"current_password": PASSWORD, "password": "a new password"},
            session=mine,
        )
        self.assertEqual(code, 200)
        self.assertIsNotNone(self.h.result(self.h.store.session(mine[0])))
        self.assertIsNone(self.h.result(self.h.store.session(other[0])))
        self.assertIsNone(self.h.result(self.h.store.session(third[0])))

    def test_a_wrong_current_password_ends_nothing(self) -> None:
        mine, other = self.sessions(2)
        code, _ = self.api.call(
            "PATCH", "/api/v1/me", {"current_password": "nope", "password": "x" * 10}, session=mine
        )
        self.assertEqual(code, 403)
        self.assertIsNotNone(self.h.result(self.h.store.session(other[0])))

    def test_an_administrator_setting_a_password_ends_every_session(self) -> None:
        root = self.h.user("root", role="admin")
        [session] = self.sessions(1)
        code, _ = self.api.call(
            "PATCH", "/api/v1/users/alice", {"password": "reset by admin"}, token=root
        )
        self.assertEqual(code, 200)
        self.assertIsNone(self.h.result(self.h.store.session(session[0])))


class DashboardHostTests(SynchronousTestCase):
    def test_the_dashboard_host_is_never_a_custom_domain(self) -> None:
        h = ManagerHarness(Path(tempfile.mkdtemp()))
        h.api.reserved_hosts = ("director.example.org",)
        api = Client(h, self)
        alice = h.user("alice")
        self.assertEqual(api.call("POST", "/api/v1/sites", {"name": "mine"}, token=alice)[0], 202)
        for domain in ("director.example.org", "DIRECTOR.example.org", "x.director.example.org"):
            code, body = api.call(
                "POST", "/api/v1/sites/mine/domains", {"domain": domain}, token=alice
            )
            self.assertEqual((code, body["error"]), (409, "domain_reserved"), domain)
            self.assertIn("dashboard", body["message"])
        self.assertEqual(h.result(h.store.get_site("mine")).domains, ())
        code, _ = api.call(
            "POST", "/api/v1/sites/mine/domains", {"domain": "example.org"}, token=alice
        )
        self.assertEqual(code, 202)

    def test_default_dashboard_host_is_reserved(self) -> None:
        h = ManagerHarness(Path(tempfile.mkdtemp()))
        api = Client(h, self)
        alice = h.user("alice")
        api.call("POST", "/api/v1/sites", {"name": "mine"}, token=alice)
        code, body = api.call(
            "POST", "/api/v1/sites/mine/domains", {"domain": "director.localhost"}, token=alice
        )
        self.assertEqual((code, body["error"]), (409, "domain_reserved"))


def request_from(peer: str, headers: dict[bytes, bytes] | None = None) -> DummyRequest:
    request = DummyRequest([b""])
    request.client = type("Address", (), {"host": peer})()
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    return request


class ProxyTests(SynchronousTestCase):
    def test_forwarded_headers_only_from_trusted_proxies(self) -> None:
        proxies = Proxies.from_config("10.0.0.0/8, 192.0.2.1")
        spoofed = {b"x-forwarded-for": b"203.0.113.9", b"x-forwarded-proto": b"https"}
        untrusted = request_from("198.51.100.7", spoofed)
        self.assertEqual(proxies.client(untrusted), "198.51.100.7")
        self.assertFalse(proxies.https(untrusted))
        trusted = request_from("10.1.2.3", spoofed)
        self.assertEqual(proxies.client(trusted), "203.0.113.9")
        self.assertTrue(proxies.https(trusted))

    def test_right_most_untrusted_address_is_the_client(self) -> None:
        """A client cannot choose its address by sending its own X-Forwarded-For first."""
        proxies = Proxies.from_config("10.0.0.0/8")
        chain = {b"x-forwarded-for": b"1.1.1.1, 203.0.113.9, 10.0.0.2"}
        self.assertEqual(proxies.client(request_from("10.0.0.1", chain)), "203.0.113.9")
        garbled = {b"x-forwarded-for": b"nonsense"}
        self.assertEqual(proxies.client(request_from("10.0.0.1", garbled)), "10.0.0.1")

    def test_the_local_router_is_trusted_by_default(self) -> None:
        """
        The default trusts loopback (the router's nginx on this machine) and nothing else,
        not even the rest of 127.0.0.0/8.
        """
        proxies = Proxies.from_config(ManagerSection().trusted_proxies)
        forged = {b"x-forwarded-for": b"203.0.113.9", b"x-forwarded-proto": b"https"}
        for peer, believed in (("127.0.0.1", True), ("::1", True), ("127.0.0.2", False)):
            request = request_from(peer, forged)
            self.assertEqual(proxies.client(request) == "203.0.113.9", believed)
            self.assertEqual(proxies.https(request), believed)

    def test_no_trusted_proxies_when_empty(self) -> None:
        proxies = Proxies.from_config("")
        request = request_from("127.0.0.1", {b"x-forwarded-for": b"203.0.113.9"})
        self.assertEqual(proxies.client(request), "127.0.0.1")


class SignInThrottleTests(SynchronousTestCase):
    """The dashboard's sign-in form: failures count per account and address."""

    def setUp(self) -> None:
        self.d = DashboardHarness()
        self.d.dashboard.proxies = Proxies.from_config("127.0.0.1")
        self.d.user("alice")

    def sign_in(self, password: str, client: str) -> int:
        headers = {"X-Forwarded-For": client}
        _, page = self.d.request("GET", "/login", headers=headers)
        token = login_token(page)
        response, _ = self.d.request(
            "POST",
            "/login",
            data={"username": "alice", "password": password, "csrf": token},
            cookies={"director_login": token},
            headers=headers,
        )
        return int(response.code)

    def test_one_address_cannot_lock_an_account_out_for_everyone(self) -> None:
        for _ in range(3):
            self.assertEqual(self.sign_in("wrong", "203.0.113.66"), 401)
        self.assertEqual(self.sign_in("password123", "203.0.113.66"), 429)
        self.assertEqual(self.sign_in("password123", "198.51.100.1"), 303)

    def test_many_addresses_guessing_one_account_are_stopped(self) -> None:
        throttle = LoginThrottle(self.d.h.clock, max_failures=3, max_per_account=5)
        for i in range(5):
            throttle.failed_now("alice", f"203.0.113.{i}")
        self.assertTrue(throttle.blocked_now("alice", "198.51.100.1"))
        self.assertFalse(throttle.blocked_now("bob", "198.51.100.1"))

    def test_one_address_never_reaches_the_account_limit(self) -> None:
        """Blocked attempts are not counted, so one address stops below the account limit."""
        throttle = LoginThrottle(self.d.h.clock, max_failures=3, max_per_address=4)
        for name in ("alice", "bob", "carol", "dave", "erin", "frank"):
            for _ in range(3):
                if not throttle.blocked_now(name, "203.0.113.66"):
                    throttle.failed_now(name, "203.0.113.66")
        self.assertTrue(throttle.blocked_now("zed", "203.0.113.66"))
        self.assertFalse(throttle.blocked_now("alice", "198.51.100.1"))


class DummyHashTests(SynchronousTestCase):
    def test_a_missing_account_is_checked_against_a_hash_of_the_same_cost(self) -> None:
        """No timing oracle: checking no hash costs what checking a real one does."""
        from director.common.threads import InlineRunner

        seen: list[bytes] = []
        real = bcrypt.checkpw

        def recording(password: bytes, hashed: bytes) -> bool:
            seen.append(hashed)
            return bool(real(password, hashed))

        self.patch(passwords_module.bcrypt, "checkpw", recording)
        passwords = Passwords(InlineRunner(), rounds=9)
        result: list[bool] = []
        passwords.check("anything", None).addCallback(result.append)
        passwords.check("anything", hash_password("x", 9)).addCallback(result.append)
        self.assertEqual(result, [False, False])
        self.assertEqual([h[:7] for h in seen], [b"$2b$09$", b"$2b$09$"])


class PrivateFilesTests(SynchronousTestCase):
    def test_sqlite_database_is_0600(self) -> None:
        directory = Path(tempfile.mkdtemp())
        path = directory / "director.db"
        make_engine(f"sqlite:///{path}").dispose()
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        path.chmod(0o644)  # an older install's file is tightened too
        make_engine(f"sqlite:///{path}").dispose()
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)

    def test_init_writes_the_config_and_database_0600(self) -> None:
        directory = Path(tempfile.mkdtemp())
        config = directory / "director.toml"
        old = os.umask(0o022)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                code = director_main(
                    [
                        "init",
                        "--config",
                        str(config),
                        "--state-dir",
                        str(directory / "var"),
                        "--set",
                        "manager.bcrypt_rounds=4",
                    ]
                )
        finally:
            os.umask(old)
        self.assertEqual(code, 0)
        self.assertEqual(stat.S_IMODE(config.stat().st_mode), 0o600)
        database = directory / "var" / "director.db"
        self.assertEqual(stat.S_IMODE(database.stat().st_mode), 0o600)
        # The first administrator's password is hashed at the configured cost.
        from director.common.config import load_config
        from director.manager.service import database_url

        engine = make_engine(database_url(load_config(config)))
        with engine.connect() as conn:
            hashed = conn.execute(schema.users.select()).first().password_hash  # type: ignore[union-attr]
        self.assertTrue(hashed.startswith("$2b$04$"))

    def test_token_commands(self) -> None:
        directory = Path(tempfile.mkdtemp())
        config = str(directory / "director.toml")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            url = manager_database.database_url(directory, migrated=False)
            init = ["init", "--config", config, "--state-dir", str(directory / "var")]
            director_main([*init, *manager_database.init_settings(url)])
            self.assertEqual(
                director_main(
                    [
                        "token",
                        "create",
                        "admin",
                        "--label",
                        "ci",
                        "--expires-days",
                        "30",
                        "--config",
                        config,
                    ]
                ),
                0,
            )
        token = out.getvalue().strip().splitlines()[-1]
        self.assertTrue(token.startswith("dir_"))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(director_main(["token", "list", "admin", "--config", config]), 0)
        listing = out.getvalue()
        self.assertIn("ci", listing)
        self.assertNotIn(token, listing)
        token_id = listing.split()[0]
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            self.assertEqual(
                director_main(["token", "revoke", "admin", "999", "--config", config]), 1
            )
            self.assertEqual(
                director_main(["token", "revoke", "admin", token_id, "--config", config]), 0
            )
            self.assertEqual(
                director_main(
                    ["token", "create", "admin", "--expires-days", "0", "--config", config]
                ),
                1,
            )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            director_main(["token", "list", "admin", "--config", config])
        self.assertEqual(out.getvalue(), "")


class FirstPasswordTests(SynchronousTestCase):
    def test_a_first_password_needs_a_recent_sign_in(self) -> None:
        """An account without a password (school sign-in) gets one only from a fresh session."""
        h = ManagerHarness(Path(tempfile.mkdtemp()))
        api = Client(h, self)
        token = h.user("sso")  # no password
        user = h.result(h.store.get_user("sso"))
        body = {"password": "my first password"}
        code, answer = api.call("PATCH", "/api/v1/me", body, token=token)
        self.assertEqual((code, answer["error"]), (403, "reauthenticate"))
        session = h.result(h.store.create_session(user.id, timedelta(hours=1)))
        age_sessions(h, user.id, timedelta(hours=1))
        self.assertEqual(api.call("PATCH", "/api/v1/me", body, session=session)[0], 403)
        self.assertIsNone(h.result(h.store.password_hash("sso"))[1])
        fresh = h.result(h.store.create_session(user.id, timedelta(hours=1)))
        self.assertEqual(api.call("PATCH", "/api/v1/me", body, session=fresh)[0], 200)
        self.assertIsNotNone(h.result(h.store.password_hash("sso"))[1])
