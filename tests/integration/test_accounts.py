"""
Accounts, sign-in, tokens and sessions against the real manager daemon (`director init`,
then `twistd -n director-manager`) over real sockets, with a small OpenID Connect provider
served from this test on loopback.

Clients connect from different loopback addresses (127.0.0.0/8 is all local): the config
trusts 127.0.0.2 as a proxy, so a request from 127.0.0.2 speaks for the client its
X-Forwarded-For names, while one from any other address is that address.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import secrets
import shutil
import sqlite3
import stat
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from services import free_port
from test_daemon import BIN, Daemon, init_config, start_daemon, stop_daemon, wait_listening

from director.testing.manager_database import Schema

PROXY = "127.0.0.2"
PASSWORD = "the right password"


class Provider:
    """Token and userinfo endpoints of an OpenID Connect provider, checking PKCE."""

    def __init__(self) -> None:
        self.codes: dict[str, tuple[str, dict[str, Any]]] = {}
        self.port = free_port()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                challenge, claims = provider.codes.pop(form.get("code", ""), ("", {}))
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                verified = base64.urlsafe_b64encode(digest).decode().rstrip("=") == challenge
                if not challenge or not verified or form.get("client_secret") != "s3cret":
                    self.answer(400, {"error": "invalid_grant"})
                    return
                access = secrets.token_urlsafe(16)
                provider.codes["at:" + access] = ("", claims)
                self.answer(200, {"access_token": access, "token_type": "Bearer"})

            def do_GET(self) -> None:
                access = (self.headers.get("authorization") or "").removeprefix("Bearer ")
                found = provider.codes.get("at:" + access)
                if self.path != "/userinfo" or found is None:
                    self.answer(401, {"error": "invalid_token"})
                    return
                self.answer(200, found[1])

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def issue(self, challenge: str, claims: dict[str, Any]) -> str:
        code = secrets.token_urlsafe(12)
        self.codes[code] = (challenge, claims)
        return code

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def cookies(self) -> dict[str, str]:
        """Set-Cookie name -> the whole header value."""
        return {
            v.split("=", 1)[0]: v for k, v in self.headers if k.lower() == "set-cookie" and "=" in v
        }

    def cookie_value(self, name: str) -> str:
        return self.cookies()[name].split(";")[0].split("=", 1)[1]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Manager:
    daemon: Daemon
    provider: Provider
    base: Path
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.port = self.daemon.config.manager.port

    def request(
        self,
        method: str,
        path: str,
        *,
        source: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=30, source_address=(source, 0)
        )
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Answer(response.status, response.getheaders(), response.read())
        finally:
            conn.close()

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        session: tuple[str, str] | None = None,
    ) -> Answer:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if session:
            headers["cookie"] = f"director_session={session[0]}"
            headers["x-csrf-token"] = session[1]
        data = json.dumps(body).encode() if body is not None else None
        return self.request(method, path, headers=headers, body=data)

    def sign_in(
        self,
        username: str,
        password: str,
        *,
        source: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """The sign-in form, as a browser fills it in."""
        form = self.request("GET", "/login", source=source, headers=headers)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.body.decode())
        assert csrf is not None, form
        [(name, _)] = [(n, v) for n, v in form.cookies().items() if n.endswith("director_login")]
        return self.request(
            "POST",
            "/login",
            source=source,
            headers={
                **(headers or {}),
                "content-type": "application/x-www-form-urlencoded",
                "cookie": f"{name}={csrf.group(1)}",
            },
            body=urlencode(
                {"username": username, "password": password, "csrf": csrf.group(1)}
            ).encode(),
        )

    def session(self, username: str, password: str = PASSWORD) -> tuple[str, str]:
        """A signed-in session: (cookie value, CSRF token from the page)."""
        answer = self.sign_in(username, password)
        assert answer.status == 303, (answer.status, answer.body[:300])
        session = answer.cookie_value("director_session")
        page = self.request("GET", "/guidelines", headers={"cookie": f"director_session={session}"})
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.body.decode())
        assert csrf is not None, page.body[:500]
        return session, csrf.group(1)

    def oidc(self, claims: dict[str, Any]) -> Answer:
        """Sign in through the provider, which vouches for C{claims}."""
        start = self.request("GET", "/login/oidc")
        assert start.status == 303, start
        location = start.header("location") or ""
        assert location.startswith(self.provider.url + "/authorize?"), location
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        code = self.provider.issue(query["code_challenge"], claims)
        cookie = start.cookie_value("director_oidc")
        return self.request(
            "GET",
            f"/login/oidc/callback?{urlencode({'code': code, 'state': query['state']})}",
            headers={"cookie": f"director_oidc={cookie}"},
        )

    def whoami(self, answer: Answer) -> str | None:
        """The user of the session C{answer} started, if it started one."""
        if "director_session" not in answer.cookies():
            return None
        session = answer.cookie_value("director_session")
        me = self.request("GET", "/api/v1/me", headers={"cookie": f"director_session={session}"})
        return str(me.json()["username"]) if me.status == 200 else None

    def director(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        assert self.daemon.config.source is not None
        return subprocess.run(
            [str(BIN / "director"), *args, "--config", str(self.daemon.config.source)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    def add_user(self, name: str, *role: str) -> None:
        self.director("user", "add", name, *role, "--password-stdin", stdin=PASSWORD + "\n")


@pytest.fixture(scope="module")
def manager() -> Iterator[Manager]:
    base = Path(tempfile.mkdtemp(prefix="director-accounts-", dir="/tmp"))
    base.chmod(0o755)
    provider = Provider()
    config = init_config(
        base,
        "manager.bcrypt_rounds=10",
        f'manager.trusted_proxies="{PROXY}"',
        'manager.oidc_name="School"',
        f'manager.oidc_authorize_url="{provider.url}/authorize"',
        f'manager.oidc_token_url="{provider.url}/token"',
        f'manager.oidc_userinfo_url="{provider.url}/userinfo"',
        'manager.oidc_client_id="director"',
        'manager.oidc_client_secret="s3cret"',
        'manager.oidc_new_user_role="student"',
        'manager.oidc_allowed_domains="school.test"',
        "shell.max_failures_per_user=3",
        "shell.failure_delay=0.1",
    )
    daemon = start_daemon(config, plugin="director-manager")
    try:
        wait_listening(daemon, [daemon.config.manager.port])
        yield Manager(daemon, provider, base)
    finally:
        stop_daemon(daemon)
        provider.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_oidc_never_signs_into_a_local_account_by_name(manager: Manager) -> None:
    """`admin@...` at the provider gets a new student account, not the local admin."""
    manager.add_user("admin-2", "--admin")  # a name the new account must not take either
    claims = {
        "sub": "attacker-1",
        "preferred_username": "admin@school.test",
        "email": "admin@school.test",
        "email_verified": True,
    }
    answer = manager.oidc(claims)
    assert answer.status == 303, answer.body[:500]
    assert manager.whoami(answer) == "admin-3"
    # The same identity again: the same account, whatever its name claim says now.
    again = manager.oidc({**claims, "preferred_username": "root"})
    assert manager.whoami(again) == "admin-3"
    token = manager.director("token", "create", "admin").stdout.strip()
    users = {
        u["username"]: u["role"]
        for u in manager.api("GET", "/api/v1/users", token=token).json()["users"]
    }
    assert (users["admin"], users["admin-2"], users["admin-3"]) == ("admin", "admin", "student")


def test_oidc_creates_accounts_only_for_verified_allowed_addresses(manager: Manager) -> None:
    for claims in (
        {"sub": "u1", "preferred_username": "mallory", "email": "mallory@school.test"},
        {
            "sub": "u2",
            "preferred_username": "mallory",
            "email": "mallory@school.test",
            "email_verified": False,
        },
        {
            "sub": "u3",
            "preferred_username": "mallory",
            "email": "mallory@evil.test",
            "email_verified": True,
        },
    ):
        answer = manager.oidc(claims)
        assert answer.status == 403, claims
        assert manager.whoami(answer) is None
    assert manager.sign_in("mallory", "anything").status == 401  # no such account
    good = manager.oidc(
        {
            "sub": "u4",
            "preferred_username": "grace",
            "email": "grace@school.test",
            "email_verified": "true",
        }
    )
    assert manager.whoami(good) == "grace"


def test_token_lifecycle(manager: Manager) -> None:
    """
    A token needs a recent sign-in or the password (never just another token); tokens are
    listed without their secrets, revoked, and refused once expired.
    """
    manager.add_user("tess")
    session = manager.session("tess")
    created = manager.api("POST", "/api/v1/tokens", {"name": "laptop"}, session=session)
    assert created.status == 201, created.body
    token = created.json()["token"]
    refused = manager.api("POST", "/api/v1/tokens", {"name": "more"}, token=token)
    assert (refused.status, refused.json()["error"]) == (403, "reauthenticate")
    wrong = manager.api("POST", "/api/v1/tokens", {"name": "more", "password": "nope"}, token=token)
    assert wrong.status == 403
    more = manager.api(
        "POST",
        "/api/v1/tokens",
        {"name": "ci", "password": PASSWORD, "expires_in_days": 7},
        token=token,
    )
    assert more.status == 201, more.body
    ci = more.json()["token"]
    listed = manager.api("GET", "/api/v1/tokens", token=token)
    assert [t["name"] for t in listed.json()["tokens"]] == ["ci", "laptop"]
    assert token not in listed.body.decode() and ci not in listed.body.decode()
    ci_id = listed.json()["tokens"][0]["id"]
    assert manager.api("DELETE", f"/api/v1/tokens/{ci_id}", token=token).status == 200
    assert manager.api("GET", "/api/v1/me", token=ci).status == 401
    assert manager.api("GET", "/api/v1/me", token=token).status == 200
    # An expired token (its expiry moved into the past in the daemon's database) is refused.
    database = manager.daemon.config.director.state_dir / "director.db"
    with sqlite3.connect(database) as db:
        db.execute(
            "UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' WHERE name = 'laptop'"
        )
    assert manager.api("GET", "/api/v1/me", token=token).status == 401
    # The CLI lists and revokes them too.
    cli = manager.director("token", "create", "tess", "--label", "cron").stdout.strip()
    listing = manager.director("token", "list", "tess").stdout
    assert "cron" in listing and cli not in listing
    cron_id = next(line.split()[0] for line in listing.splitlines() if "cron" in line)
    manager.director("token", "revoke", "tess", cron_id)
    assert manager.api("GET", "/api/v1/me", token=cli).status == 401


def test_password_change_ends_the_other_sessions(manager: Manager) -> None:
    manager.add_user("pat")
    mine, other = manager.session("pat"), manager.session("pat")
    changed = manager.api(
        "PATCH",
        "/api/v1/me",
        {"current_password": PASSWORD, "password": "a brand new password"},
        session=mine,
    )
    assert changed.status == 200, changed.body
    assert manager.api("GET", "/api/v1/me", session=mine).status == 200
    assert manager.api("GET", "/api/v1/me", session=other).status == 401


def test_throttle_keys_on_the_real_client_and_the_account(manager: Manager) -> None:
    """
    Ten wrong passwords lock out that client for that account only; X-Forwarded-For counts
    only from the trusted proxy, so a direct client cannot dodge the limit with it.
    """
    manager.add_user("vic")
    # A direct client making up X-Forwarded-For is still one client.
    for i in range(10):
        answer = manager.sign_in("vic", "wrong", headers={"x-forwarded-for": f"198.51.100.{i}"})
        assert answer.status == 401
    assert (
        manager.sign_in("vic", PASSWORD, headers={"x-forwarded-for": "198.51.100.99"}).status == 429
    )
    # Behind the trusted proxy, the attacker's failures lock out only the attacker...
    attacker = {"x-forwarded-for": "203.0.113.66"}
    for _ in range(10):
        assert manager.sign_in("vic", "wrong", source=PROXY, headers=attacker).status == 401
    assert manager.sign_in("vic", PASSWORD, source=PROXY, headers=attacker).status == 429
    # ...while Vic, from another address, signs in.
    vic = manager.sign_in("vic", PASSWORD, source=PROXY, headers={"x-forwarded-for": "192.0.2.10"})
    assert vic.status == 303
    # And so does Vic connecting directly from another address.
    assert manager.sign_in("vic", PASSWORD, source="127.0.0.5").status == 303


def test_https_cookies_have_the_host_prefix(manager: Manager) -> None:
    """Over HTTPS (as the trusted proxy says), cookies are __Host- and Secure; else not."""
    manager.add_user("hana")
    https = {"x-forwarded-proto": "https", "x-forwarded-for": "192.0.2.20"}
    secure = manager.sign_in("hana", PASSWORD, source=PROXY, headers=https)
    assert secure.status == 303
    cookie = secure.cookies()["__Host-director_session"]
    assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie
    assert "director_session" not in secure.cookies()
    session = secure.cookie_value("__Host-director_session")
    me = manager.request(
        "GET",
        "/api/v1/me",
        source=PROXY,
        headers={**https, "cookie": f"__Host-director_session={session}"},
    )
    assert (me.status, me.json()["username"]) == (200, "hana")
    # Over HTTPS the unprefixed name (as a sibling host could plant it) is no session.
    planted = manager.request(
        "GET",
        "/api/v1/me",
        source=PROXY,
        headers={**https, "cookie": f"director_session={session}"},
    )
    assert planted.status == 401
    # A direct client claiming https is not believed.
    plain = manager.sign_in(
        "hana", PASSWORD, source="127.0.0.6", headers={"x-forwarded-proto": "https"}
    )
    assert "director_session" in plain.cookies()
    assert "Secure" not in plain.cookies()["director_session"]


def test_missing_account_costs_as_much_as_a_real_one(manager: Manager) -> None:
    """No timing oracle: a wrong password for no account takes as long as for a real one."""
    manager.add_user("tim")

    def seconds(username: str, source: str) -> float:
        form = manager.request("GET", "/login", source=source)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.body.decode())
        assert csrf is not None
        body = urlencode({"username": username, "password": "wrong guess", "csrf": csrf.group(1)})
        started = time.monotonic()
        answer = manager.request(
            "POST",
            "/login",
            source=source,
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "cookie": f"director_login={csrf.group(1)}",
            },
            body=body.encode(),
        )
        elapsed = time.monotonic() - started
        assert answer.status == 401
        return elapsed

    real = [seconds("tim", f"127.0.1.{i}") for i in range(7)]
    missing = [seconds(f"nobody{i}", f"127.0.2.{i}") for i in range(7)]
    assert statistics.median(missing) > 0.5 * statistics.median(real), (real, missing)


def test_dashboard_host_is_not_a_custom_domain(manager: Manager) -> None:
    manager.add_user("dora")
    token = manager.director("token", "create", "dora").stdout.strip()
    manager.api("PATCH", "/api/v1/me", {"accepted_guidelines": True}, token=token)
    created = manager.api("POST", "/api/v1/sites", {"name": "dora-site"}, token=token)
    assert created.status == 202, created.body
    for domain in ("director.localhost", "www.director.localhost"):
        refused = manager.api(
            "POST", "/api/v1/sites/dora-site/domains", {"domain": domain}, token=token
        )
        assert (refused.status, refused.json()["error"]) == (409, "domain_reserved"), refused.body
        assert "dashboard" in refused.json()["message"]
    site = manager.api("GET", "/api/v1/sites/dora-site", token=token).json()
    assert site["domains"] == []


def test_config_and_database_are_private(manager: Manager) -> None:
    assert manager.daemon.config.source is not None
    assert stat.S_IMODE(Path(manager.daemon.config.source).stat().st_mode) == 0o600
    state = manager.daemon.config.director.state_dir
    for name in ("director.db", "director.db-wal", "director.db-shm"):
        path = state / name
        if path.exists() or name == "director.db":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_account_page_lists_creates_and_revokes_tokens(manager: Manager) -> None:
    """In Chromium: create a token on the account page, see it listed, revoke it."""
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, CHROMIUM_FLAGS

    manager.add_user("otto")
    token = manager.director("token", "create", "otto", "--label", "old-script").stdout.strip()
    manager.api("PATCH", "/api/v1/me", {"accepted_guidelines": True}, token=token)
    url = f"http://127.0.0.1:{manager.port}"
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(url + "/login")
            page.fill("#username", "otto")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            page.goto(url + "/account")
            assert "old-script" in page.inner_text("ul.tokens")
            page.fill("#token-name", "deploy")
            page.fill("#token-days", "30")
            page.click("text=Create token")
            output = page.locator("[data-token-output]")
            output.wait_for(state="visible")
            new_token = output.inner_text().split()[0]
            assert new_token.startswith("dir_")
            assert manager.api("GET", "/api/v1/me", token=new_token).status == 200
            page.reload()
            listed = page.inner_text("ul.tokens")
            assert "deploy" in listed and "expires" in listed and new_token not in listed
            page.locator("ul.tokens li", has_text="old-script").locator("text=Revoke").click()
            page.wait_for_load_state()
            # (a locator, not wait_for_function: the page's CSP forbids the eval that
            # polling a string predicate needs when the answer is not there at once)
            page.locator("ul.tokens li", has_text="old-script").wait_for(state="detached")
        finally:
            browser.close()
    assert problems == []
    assert manager.api("GET", "/api/v1/me", token=token).status == 401
    assert manager.api("GET", "/api/v1/me", token=new_token).status == 200


def test_accounts_on_postgresql(postgres_schema: Schema) -> None:
    """The migration and the account queries on the manager's other database, PostgreSQL."""
    from datetime import UTC, datetime, timedelta

    from director.common.threads import fired as result

    postgres_schema.upgrade()
    assert postgres_schema.differences() == []
    store = postgres_schema.store()
    result(store.create_user("admin", "admin"))
    user = result(
        store.create_oidc_user(["admin"], "student", "a@s.test", "", "https://id", "sub-1")
    )
    assert user.username == "admin-2"
    assert result(store.oidc_user("https://id", "sub-1")) == user
    expired = result(store.create_token(user.id, "old", datetime.now(UTC) - timedelta(seconds=1)))
    live = result(store.create_token(user.id, "new", datetime.now(UTC) + timedelta(days=1)))
    assert result(store.user_for_token(expired)) is None
    assert result(store.user_for_token(live)) == user
    assert [t.expired for t in result(store.list_tokens(user.id))] == [False, True]


def test_shell_failures_from_one_address_do_not_lock_the_user_out(manager: Manager) -> None:
    """
    The real shell server (against the real manager) and the OpenSSH client: wrong passwords
    from one address lock that address out of the account, not the user connecting from
    another address.
    """
    import os

    config = manager.daemon.config
    assert config.source is not None
    shell = start_daemon(Path(config.source), plugin="director-shell")
    try:
        wait_listening(shell, [config.shell.port])
        manager.add_user("sam")

        def ssh(password: str, source: str) -> subprocess.CompletedProcess[str]:
            args = [
                "sshpass", "-p", password, "ssh", "-F", "/dev/null",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
                "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
                "-o", "NumberOfPasswordPrompts=1",
                "-b", source, "-p", str(config.shell.port), "sam@127.0.0.1",
            ]  # fmt: skip
            env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
            return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)

        for _ in range(3):
            wrong = ssh("wrong", "127.0.0.1")
            assert wrong.returncode == 255 and "Permission denied" in wrong.stderr, wrong
        locked = ssh(PASSWORD, "127.0.0.1")
        assert locked.returncode != 0
        assert "too many failed logins" in locked.stdout + locked.stderr
        elsewhere = ssh(PASSWORD, "127.0.0.8")
        output = elsewhere.stdout + elsewhere.stderr
        assert "too many failed logins" not in output, output
        assert "You have no sites yet." in output, output
    finally:
        stop_daemon(shell)
