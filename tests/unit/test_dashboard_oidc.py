"""Sign-in through an OpenID Connect provider, against a fake provider in memory."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from klein import Klein
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from director.common.threads import InlineRunner
from director.manager.dashboard import GUIDE_DIR, Dashboard
from director.manager.dashboard.guide import Guide
from director.manager.dashboard.metrics import Metrics
from director.manager.dashboard.oidc import OIDCProvider, OIDCSettings
from director.manager.dashboard.queries import DashboardQueries
from director.testing.manager import ManagerHarness


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


class OIDCTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.provider = FakeProvider()
        settings = OIDCSettings(
            "School",
            "https://id.school.test/authorize",
            "https://id.school.test/token",
            "https://id.school.test/userinfo",
            "director",
            "s3cret",
            "http://127.0.0.1:8000/login/oidc/callback",
            new_user_role="student",
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

    def start(self) -> tuple[dict[str, str], dict[str, str]]:
        """Begin signing in: the redirect's query, and the cookie the browser keeps."""
        response = self.get("/login/oidc")
        self.assertEqual(response.code, 303)
        location = response.headers.getRawHeaders(b"location")[0].decode()
        self.assertTrue(location.startswith("https://id.school.test/authorize?"))
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        cookie = response.cookies()["director_oidc"]
        return query, {"director_oidc": cookie}

    def test_first_sign_in_creates_the_account(self) -> None:
        query, cookies = self.start()
        self.assertEqual(query["code_challenge_method"], "S256")
        code = self.provider.issue(
            query["code_challenge"], {"preferred_username": "Ada", "email": "ada@school.test"}
        )
        done = self.get(f"/login/oidc/callback?code={code}&state={query['state']}", cookies)
        self.assertEqual(done.code, 303)
        self.assertIn("director_session", {c.name for c in done.cookies()})
        user = self.h.result(self.h.store.get_user("ada"))
        self.assertEqual((user.role, user.email), ("student", "ada@school.test"))

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
