"""
Sign-in through the school's OAuth2 / OpenID Connect provider (authorization code flow with
PKCE). The user's identity comes from the provider's userinfo endpoint, fetched over the
provider's TLS with the access token, so no ID-token signature handling is needed here.

An identity is the provider's issuer and its subject (the "sub" claim), which the provider
never gives to anyone else; names and e-mail addresses are only suggestions for a new
account, never a way into an existing one.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

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
    new_user_role: str = ""  # "" : only identities linked to an account may sign in
    issuer: str = ""  # "" : the origin of authorize_url
    allowed_domains: tuple[str, ...] = ()  # e-mail domains that may get accounts; () : any

    @property
    def issuer_id(self) -> str:
        if self.issuer:
            return self.issuer
        parts = urlsplit(self.authorize_url)
        return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in."""

    issuer: str
    subject: str
    names: tuple[str, ...]  # usable user names for a new account, best first
    email: str  # "" unless the provider gave one
    email_verified: bool
    full_name: str = ""

    def may_get_account(self, allowed_domains: tuple[str, ...]) -> str | None:
        """Why no account may be created for this identity, or None if one may."""
        if not self.email or not self.email_verified:
            return "the sign-in service did not confirm your e-mail address"
        domain = self.email.rpartition("@")[2].lower()
        if allowed_domains and domain not in allowed_domains:
            return f"accounts are not created for {domain} addresses"
        if not self.names:
            return "the sign-in service did not name a usable account"
        return None


@dataclass(frozen=True)
class Attempt:
    """What the browser must bring back: kept in an HttpOnly cookie during the round trip."""

    state: str
    verifier: str
    link: bool = False  # link the identity to the signed-in account instead of signing in

    @staticmethod
    def new(link: bool = False) -> Attempt:
        return Attempt(secrets.token_urlsafe(24), secrets.token_urlsafe(48), link)

    def cookie(self) -> str:
        return f"{self.state}.{self.verifier}" + (".link" if self.link else "")

    @staticmethod
    def from_cookie(value: str | None) -> Attempt | None:
        if not value or value.count(".") not in (1, 2):
            return None
        state, verifier, *rest = value.split(".")
        if rest not in ([], ["link"]) or not state or not verifier:
            return None
        return Attempt(state, verifier, bool(rest))


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

    async def identify(self, attempt: Attempt, state: str | None, code: str | None) -> Identity:
        """The identity the provider vouches for, after the browser came back."""
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
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise OIDCError("the sign-in service did not say who you are")
        email = claims.get("email")
        email = email.strip().lower() if isinstance(email, str) and len(email) <= 254 else ""
        if email.count("@") != 1:
            email = ""
        verified = claims.get("email_verified")
        full_name = claims.get("name")
        return Identity(
            self.settings.issuer_id,
            subject,
            tuple(self._names(claims.get(self.settings.username_claim), email)),
            email,
            verified is True or verified == "true",
            full_name[:200] if isinstance(full_name, str) else "",
        )

    @staticmethod
    def _names(claim: object, email: str) -> list[str]:
        """User names a new account could have: the claim's, then the e-mail's local part."""
        names = []
        for value in (claim, email):
            if not isinstance(value, str):
                continue
            name = value.strip().lower().split("@", 1)[0][:32]
            if USERNAME.fullmatch(name) and name not in names:
                names.append(name)
        return names
