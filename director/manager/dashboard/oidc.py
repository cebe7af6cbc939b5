"""
Sign-in through the school's OAuth2 / OpenID Connect provider (authorization code flow with
PKCE). The user's identity comes from the provider's userinfo endpoint, fetched over the
provider's TLS with the access token, so no ID-token signature handling is needed here.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from director.manager.models import USERNAME


class OIDCError(Exception):
    """Signing in through the provider failed; the message is for the person signing in."""


@dataclass(frozen=True)
class OIDCSettings:
    name: str  # shown on the button: "Sign in with <name>"
    authorize_url: str
    token_url: str
    userinfo_url: str
    client_id: str
    client_secret: str
    redirect_url: str  # <manager url>/login/oidc/callback
    username_claim: str = "preferred_username"
    new_user_role: str = ""  # "" : only existing accounts may sign in this way


@dataclass(frozen=True)
class Attempt:
    """What the browser must bring back: kept in an HttpOnly cookie during the round trip."""

    state: str
    verifier: str

    @staticmethod
    def new() -> Attempt:
        return Attempt(secrets.token_urlsafe(24), secrets.token_urlsafe(48))

    def cookie(self) -> str:
        return f"{self.state}.{self.verifier}"

    @staticmethod
    def from_cookie(value: str | None) -> Attempt | None:
        if not value or value.count(".") != 1:
            return None
        state, verifier = value.split(".")
        return Attempt(state, verifier) if state and verifier else None


class OIDCProvider:
    def __init__(self, settings: OIDCSettings, http: Any, clock: Any, timeout: float = 15) -> None:
        self.settings = settings
        self._http = http
        self._clock = clock
        self._timeout = timeout

    def authorization_url(self, attempt: Attempt) -> str:
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(attempt.verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": self.settings.redirect_url,
                "scope": "openid profile email",
                "state": attempt.state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in self.settings.authorize_url else "?"
        return self.settings.authorize_url + separator + query

    async def _json(self, d: Any) -> Any:
        d.addTimeout(self._timeout, self._clock)
        response = await d
        body = response.json()
        body.addTimeout(self._timeout, self._clock)
        data = await body
        if response.code != 200 or not isinstance(data, dict):
            raise OIDCError("the sign-in service refused; try again")
        return data

    async def identify(
        self, attempt: Attempt, state: str | None, code: str | None
    ) -> tuple[str, str]:
        """The (username, e-mail) the provider vouches for, after the browser came back."""
        if not state or not code or not secrets.compare_digest(state, attempt.state):
            raise OIDCError("the sign-in expired or came from elsewhere; start again")
        tokens = await self._json(
            self._http.post(
                self.settings.token_url,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.settings.redirect_url,
                    "client_id": self.settings.client_id,
                    "client_secret": self.settings.client_secret,
                    "code_verifier": attempt.verifier,
                },
            )
        )
        access = tokens.get("access_token")
        if not isinstance(access, str) or not access:
            raise OIDCError("the sign-in service sent no access token")
        claims = await self._json(
            self._http.get(
                self.settings.userinfo_url, headers={"Authorization": [f"Bearer {access}"]}
            )
        )
        username = str(claims.get(self.settings.username_claim, "")).strip().lower()
        if "@" in username:
            username = username.split("@", 1)[0]
        if not USERNAME.match(username):
            raise OIDCError("the sign-in service did not name a usable account")
        email = claims.get("email")
        return username, email if isinstance(email, str) and len(email) <= 254 else ""
