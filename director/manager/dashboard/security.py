"""
The dashboard's browser-facing defences, in one place so every page gets all of them:
response headers (a Content-Security-Policy with a per-response nonce, no framing, no
sniffing, no referrer leaks), the session cookie's attributes, the Origin check websockets
need (browsers send cookies on cross-site websocket handshakes), and CSRF token comparison.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, succeed

from director.manager.access import SESSION_COOKIE as SESSION_COOKIE  # re-exported
from director.manager.proxies import HOST_PREFIX, Proxies
from director.manager.proxies import get_cookie as get_cookie  # re-exported for the pages

LOGIN_CSRF_COOKIE = b"director_login"


@dataclass(frozen=True)
class Origin:
    """The manager's public origin (scheme://host[:port]), from the configured manager URL."""

    scheme: str
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(scheme, (parts.hostname or "127.0.0.1").lower(), port)

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    def serialize(self) -> str:
        default = 443 if self.secure else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    def websocket(self) -> str:
        """The ws:// or wss:// origin the pages' scripts connect to (for connect-src)."""
        return ("wss" if self.secure else "ws") + self.serialize()[len(self.scheme) :]

    def matches(self, header: bytes | None) -> bool:
        """Whether an Origin header names exactly this origin (absent or "null" never does)."""
        if not header:
            return False
        try:
            other = Origin.from_url(header.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return False
        return other == self


def dashboard_origins(host: str, http_port: int, https_port: int) -> tuple[Origin, Origin]:
    """
    The origins of the dashboard host as the routers serve it: HTTPS (once it has a
    certificate), then plain HTTP (before).
    """
    return Origin("https", host, https_port), Origin("http", host, http_port)


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def content_security_policy(origin: Origin, nonce: str | None, also: Sequence[Origin] = ()) -> str:
    """
    Scripts only from our own files (no inline script at all); styles from our files plus
    the <style> elements CodeMirror and xterm.js create, which carry this response's nonce.
    Websockets to the manager's origin and to C{also} (the dashboard host's).
    """
    style = "style-src 'self'" + (f" 'nonce-{nonce}'" if nonce else "")
    sockets = " ".join(dict.fromkeys(o.websocket() for o in (origin, *also)))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            style,
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src 'self' {sockets}",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "manifest-src 'self'",
        ]
    )


def set_security_headers(
    request: Any, origin: Origin, nonce: str | None, also: Sequence[Origin] = ()
) -> None:
    """Headers every dashboard response carries."""
    policy = content_security_policy(origin, nonce, also)
    request.setHeader(b"content-security-policy", policy.encode())
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"same-origin")
    request.setHeader(b"cross-origin-opener-policy", b"same-origin")
    request.setHeader(b"permissions-policy", b"camera=(), microphone=(), geolocation=()")
    if origin.secure:
        request.setHeader(b"strict-transport-security", b"max-age=31536000")


def set_cookie(
    request: Any,
    name: bytes,
    value: str,
    origin: Origin,
    max_age: int,
    same_site: str = "Lax",
    proxies: Proxies | None = None,
) -> None:
    """
    HttpOnly, SameSite, Path=/ and no Domain; over HTTPS (an https manager URL, TLS, or a
    trusted proxy's X-Forwarded-Proto) Secure with the __Host- prefix. C{max_age} 0 deletes it.
    """
    https = origin.secure or (proxies is not None and proxies.https(request))
    request.addCookie(
        HOST_PREFIX + name if https else name,
        value.encode("ascii"),
        path=b"/",
        max_age=str(max_age).encode(),
        httpOnly=True,
        secure=https,
        sameSite=same_site.lower(),
    )


def tokens_match(sent: str | bytes | None, expected: str | None) -> bool:
    """Constant-time comparison of a submitted CSRF token with the expected one."""
    if not sent or not expected:
        return False
    if isinstance(sent, bytes):
        try:
            sent = sent.decode("ascii")
        except UnicodeDecodeError:
            return False
    return secrets.compare_digest(sent, expected)


def safe_next(value: str | None) -> str:
    """A local path to go to after signing in; anything else (//evil, http:...) gives /."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 32 for c in value):
        return "/"
    return value


class SignInThrottle(Protocol):
    """What the sign-in form needs of a throttle (in memory or in Redis)."""

    def blocked(self, username: str, address: str) -> Deferred[bool]: ...

    def failed(self, username: str, address: str) -> Deferred[None]: ...

    def succeeded(self, username: str, address: str) -> Deferred[None]: ...


class LoginThrottle:
    """
    Refuses sign-in after too many wrong passwords within C{window} seconds, until the
    oldest of them is older than the window. Checked before the (costly) password hash, so
    guessing costs the guesser time, not our CPU. Failures count against three keys:

    - the account from one address (C{max_failures}): what stops one guesser;
    - the address (C{max_per_address}): one address guessing at many accounts;
    - the account from everywhere (C{max_per_account}, above C{max_per_address}): many
      addresses guessing at one account. One address alone can never reach it, so failures
      from one address never lock an account out for everyone else.

    This one counts in the process; with several managers
    L{director.manager.shared_limits.RedisLoginThrottle} counts in Redis (the same tests).
    """

    def __init__(
        self,
        clock: Any,
        max_failures: int = 10,
        window: float = 300.0,
        max_keys: int = 50_000,
        max_per_address: int = 50,
        max_per_account: int = 200,
    ) -> None:
        self._clock = clock
        self._limits = {"pair": max_failures, "addr": max_per_address, "user": max_per_account}
        self._window = window
        self._max_keys = max_keys
        self._failures: dict[str, list[float]] = {}

    @staticmethod
    def keys(username: str, address: str) -> dict[str, str]:
        return {
            "pair": f"pair:{username}@{address}",
            "addr": f"addr:{address}",
            "user": f"user:{username}",
        }

    def _recent(self, key: str) -> list[float]:
        cutoff = self._clock.seconds() - self._window
        times = [t for t in self._failures.get(key, []) if t > cutoff]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def blocked(self, username: str, address: str) -> Deferred[bool]:
        return succeed(self.blocked_now(username, address))

    def failed(self, username: str, address: str) -> Deferred[None]:
        self.failed_now(username, address)
        return succeed(None)

    def succeeded(self, username: str, address: str) -> Deferred[None]:
        """The right password: this address's failures at this account are forgiven."""
        self.succeeded_now(username, address)
        return succeed(None)

    def blocked_now(self, username: str, address: str) -> bool:
        return any(
            len(self._recent(key)) >= self._limits[kind]
            for kind, key in self.keys(username, address).items()
        )

    def failed_now(self, username: str, address: str) -> None:
        if len(self._failures) >= self._max_keys:
            for key in list(self._failures):
                self._recent(key)
        for key in self.keys(username, address).values():
            self._failures.setdefault(key, []).append(self._clock.seconds())

    def succeeded_now(self, username: str, address: str) -> None:
        self._failures.pop(self.keys(username, address)["pair"], None)
