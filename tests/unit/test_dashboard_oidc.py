"""Sign-in through an OpenID Connect provider, against a fake provider in memory."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from klein import Klein
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from director.common.config import parse_config
from director.common.threads import InlineRunner
from director.manager.dashboard import GUIDE_DIR, Dashboard
from director.manager.dashboard.guide import Guide
from director.manager.dashboard.metrics import Metrics
from director.manager.dashboard.oidc import OIDCProvider, OIDCSettings
from director.manager.dashboard.queries import DashboardQueries
from director.manager.service import oidc_callback
from director.testing.manager import ManagerHarness

pytestmark = pytest.mark.manager_store


class FakeProvider:
    """Token and userinfo endpoints that check the code, the PKCE verifier and the secret."""

    app = Klein()

    def __init__(self) -> None:
        self.codes: dict[str, tuple[str, dict[str, Any]]] = {}  # code -> (challenge, claims)

    def issue(self, challenge: str, claims: dict[str, Any]) -> str:
        code = f"code{len(self.codes)}"
        self.codes[code] = (challenge, claims)
        return code

    @app.route("/token", methods=["POST"])
    def token(self, request: Any) -> bytes:
        form = {k.decode(): v[0].decode() for k, v in request.args.items()}
        challenge, claims = self.codes.pop(form.get("code", ""), ("", {}))
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        verified = base64.urlsafe_b64encode(digest).decode().rstrip("=") == challenge
        if not challenge or not verified or form.get("client_secret") != "s3cret":
            request.setResponseCode(400)
            return b'{"error": "invalid_grant"}'
        return json.dumps({"access_token": "at-" + json.dumps(claims)}).encode()

    @app.route("/userinfo", methods=["GET"])
    def userinfo(self, request: Any) -> bytes:
        auth = request.getHeader(b"authorization").decode()
        return auth.removeprefix("Bearer at-").encode()


ADA = {
    "sub": "248289761001",
    "preferred_username": "Ada",
    "email": "ada@school.test",
    "email_verified": True,
}


class OIDCTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.provider = FakeProvider()
        self.configure()

    def configure(self, new_user_role: str = "student", allowed: tuple[str, ...] = ()) -> None:
        settings = OIDCSettings(
            "School",
            "https://id.school.test/authorize",
            "https://id.school.test/token",
            "https://id.school.test/userinfo",
            "director",
            "s3cret",
            "http://127.0.0.1:8000/login/oidc/callback",
            new_user_role=new_user_role,
            allowed_domains=allowed,
        )
        oidc = OIDCProvider(settings, StubTreq(self.provider.app.resource()), self.h.clock)
        queries = DashboardQueries(self.h.store.engine, InlineRunner())
        dashboard = Dashboard(
            self.h.clock,
            self.h.store,
            self.h.passwords,
            queries,
            Guide(GUIDE_DIR),
            Metrics(self.h.clock, queries),
            manager_url="http://127.0.0.1:8000",
            sites_domain="sites.test",
            session_lifetime=timedelta(hours=2),
            oidc=oidc,
        )
        self.http: Any = StubTreq(dashboard.app.resource())

    def get(self, path: str, cookies: dict[str, str] | None = None) -> Any:
        response = self.successResultOf(
            self.http.get(
                "http://127.0.0.1:8000" + path, cookies=cookies or {}, allow_redirects=False
            )
        )
        self.successResultOf(self.http.content(response))
        return response

    def start(
        self, cookies: dict[str, str] | None = None, link: bool = False
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Begin signing in: the redirect's query, and the cookies the browser keeps."""
        response = self.get("/login/oidc" + ("?link=1" if link else ""), cookies)
        self.assertEqual(response.code, 303)
        location = response.headers.getRawHeaders(b"location")[0].decode()
        self.assertTrue(location.startswith("https://id.school.test/authorize?"))
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        cookie = response.cookies()["director_oidc"]
        return query, {**(cookies or {}), "director_oidc": cookie}

    def sign_in(
        self, claims: dict[str, Any], cookies: dict[str, str] | None = None, link: bool = False
    ) -> Any:
        """The whole round trip with the provider vouching for C{claims}."""
        query, jar = self.start(cookies, link)
        code = self.provider.issue(query["code_challenge"], claims)
        return self.get(f"/login/oidc/callback?code={code}&state={query['state']}", jar)

    def signed_in_as(self, response: Any) -> str | None:
        """Whose session the response started, if any."""
        sessions = [c.value for c in response.cookies() if c.name == "director_session"]
        if not sessions or not sessions[0]:
            return None
        found = self.h.result(self.h.store.session(sessions[0]))
        return found[0].username if found else None

    def local_session(self, username: str, age: timedelta = timedelta(0)) -> dict[str, str]:
        """A dashboard session for an existing account, signed in C{age} ago."""
        from sqlalchemy import update

        from director.manager import schema

        user = self.h.result(self.h.store.get_user(username))
        session, _ = self.h.result(self.h.store.create_session(user.id, timedelta(hours=1)))
        with self.h.store.engine.begin() as conn:
            conn.execute(
                update(schema.sessions)
                .where(schema.sessions.c.user_id == user.id)
                .values(created_at=datetime.now(UTC) - age)
            )
        return {"director_session": session}

    def test_first_sign_in_creates_the_account(self) -> None:
        query, cookies = self.start()
        self.assertEqual(query["code_challenge_method"], "S256")
        code = self.provider.issue(query["code_challenge"], ADA)
        done = self.get(f"/login/oidc/callback?code={code}&state={query['state']}", cookies)
        self.assertEqual(done.code, 303)
        self.assertEqual(self.signed_in_as(done), "ada")
        user = self.h.result(self.h.store.get_user("ada"))
        self.assertEqual((user.role, user.email), ("student", "ada@school.test"))

    def test_the_same_identity_signs_into_the_same_account(self) -> None:
        """Linked by issuer and subject: a changed name or address changes nothing."""
        self.assertEqual(self.signed_in_as(self.sign_in(ADA)), "ada")
        renamed = {**ADA, "preferred_username": "lovelace", "email": "al@school.test"}
        self.assertEqual(self.signed_in_as(self.sign_in(renamed)), "ada")
        self.assertIsNone(self.h.result(self.h.store.get_user("lovelace")))

    def test_a_matching_name_never_signs_into_a_local_account(self) -> None:
        """
        `admin@anywhere` is not the local admin: a new account gets a name no one has,
        and the local account is untouched.
        """
        self.h.user("admin", role="admin")
        claims = {
            "sub": "evil-1",
            "preferred_username": "admin@anywhere.example",
            "email": "admin@anywhere.example",
            "email_verified": True,
        }
        response = self.sign_in(claims)
        self.assertEqual(response.code, 303)
        name = self.signed_in_as(response)
        self.assertEqual(name, "admin-2")
        created = self.h.result(self.h.store.get_user("admin-2"))
        self.assertEqual(created.role, "student")
        self.assertEqual(self.h.result(self.h.store.get_user("admin")).role, "admin")
        # Another identity with the same name gets yet another account.
        again = self.sign_in({**claims, "sub": "evil-2"})
        self.assertEqual(self.signed_in_as(again), "admin-3")

    def test_unverified_email_gets_no_account(self) -> None:
        for claims in (
            {**ADA, "email_verified": False},
            {k: v for k, v in ADA.items() if k != "email_verified"},
            {**ADA, "email": ""},
        ):
            response = self.sign_in(claims)
            self.assertEqual(response.code, 403, claims)
            self.assertIsNone(self.signed_in_as(response))
        self.assertIsNone(self.h.result(self.h.store.get_user("ada")))

    def test_identity_without_subject_refused(self) -> None:
        response = self.sign_in({k: v for k, v in ADA.items() if k != "sub"})
        self.assertEqual(response.code, 400)
        self.assertIsNone(self.h.result(self.h.store.get_user("ada")))

    def test_linking_from_the_account_page(self) -> None:
        """A recently signed-in user links the identity; it then signs into that account."""
        self.h.user("alice")
        linked = self.sign_in(ADA, self.local_session("alice"), link=True)
        self.assertEqual(
            (linked.code, linked.headers.getRawHeaders("location")), (303, ["/account"])
        )
        self.assertEqual(self.signed_in_as(self.sign_in(ADA)), "alice")
        self.assertIsNone(self.h.result(self.h.store.get_user("ada")))
        # The same identity cannot be linked to a second account.
        self.h.user("bob")
        refused = self.sign_in(ADA, self.local_session("bob"), link=True)
        self.assertEqual(refused.code, 409)

    def test_linking_needs_a_recent_sign_in(self) -> None:
        self.h.user("alice")
        old = self.local_session("alice", age=timedelta(hours=1))
        response = self.get("/login/oidc?link=1", old)
        self.assertEqual(response.code, 403)
        self.assertIsNone(self.h.result(self.h.store.oidc_user("https://id.school.test", "x")))

    def test_wrong_state_or_verifier_refused(self) -> None:
        query, cookies = self.start()
        code = self.provider.issue(query["code_challenge"], {"preferred_username": "bob"})
        forged = self.get(f"/login/oidc/callback?code={code}&state=other", cookies)
        self.assertEqual(forged.code, 400)
        self.assertNotIn("director_session", {c.name for c in forged.cookies()})
        # A code issued for another browser's challenge does not work with this one.
        query2, cookies2 = self.start()
        other = self.provider.issue("not-this-challenge", {"preferred_username": "bob"})
        refused = self.get(f"/login/oidc/callback?code={other}&state={query2['state']}", cookies2)
        self.assertEqual(refused.code, 400)
        self.assertIsNone(self.h.result(self.h.store.get_user("bob")))

    def test_unusable_username_refused(self) -> None:
        query, cookies = self.start()
        code = self.provider.issue(
            query["code_challenge"], {"preferred_username": "<script>x</script>"}
        )
        response = self.get(f"/login/oidc/callback?code={code}&state={query['state']}", cookies)
        self.assertEqual(response.code, 400)

    def test_only_allowed_domains_get_accounts(self) -> None:
        self.configure(allowed=("school.test",))
        outsider = {**ADA, "sub": "x", "email": "ada@elsewhere.test"}
        self.assertEqual(self.sign_in(outsider).code, 403)
        self.assertIsNone(self.h.result(self.h.store.get_user("ada")))
        self.assertEqual(self.signed_in_as(self.sign_in(ADA)), "ada")

    def test_without_a_new_user_role_only_linked_identities_sign_in(self) -> None:
        """An account with the claim's name exists, but nothing links it: refused."""
        self.configure(new_user_role="")
        self.h.user("ada")
        response = self.sign_in(ADA)
        self.assertEqual(response.code, 403)
        self.assertIsNone(self.signed_in_as(response))
        self.sign_in(ADA, self.local_session("ada"), link=True)
        self.assertEqual(self.signed_in_as(self.sign_in(ADA)), "ada")


class CallbackTests(SynchronousTestCase):
    """The callback users come back to is on the dashboard host once that has HTTPS."""

    def callback(self, text: str) -> str:
        return oidc_callback(parse_config(text, Path("/etc/director")))

    def test_one_machine_uses_the_manager_url(self) -> None:
        url = '[manager]\nurl = "http://127.0.0.1:8123"\n'
        self.assertEqual(self.callback(url), "http://127.0.0.1:8123/login/oidc/callback")
        # ACME cannot certify director.localhost: still the manager's own address.
        acme = url + '[router]\nacme_directory_url = "https://acme.test/dir"\n'
        self.assertEqual(self.callback(acme), "http://127.0.0.1:8123/login/oidc/callback")

    def test_the_dashboard_host_once_it_has_a_certificate(self) -> None:
        host = '[manager]\ndashboard_host = "director.school.test"\n'
        self.assertEqual(
            self.callback(host + '[router]\nacme_directory_url = "https://acme.test/dir"\n'),
            "https://director.school.test/login/oidc/callback",
        )
        given = (
            '[router]\nhttps_port = 8443\ndashboard_certificate = "/c.pem"\n'
            'dashboard_certificate_key = "/k.pem"\n'
        )
        self.assertEqual(
            self.callback(host + given), "https://director.school.test:8443/login/oidc/callback"
        )
