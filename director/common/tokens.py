"""
Short-lived, single-use tokens the manager mints for one user and one site, which the
orchestrator's shell bridge accepts once. Signed with the manager's Ed25519 key, so only the
manager can mint them and any orchestrator can check them.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from twisted.internet.interfaces import IReactorTime

from director.common.errors import CodedError
from director.common.signing import NonceCache

PREFIX = "dst1"


class TokenError(CodedError):
    """The token cannot be used; C{code} says why."""


@dataclass(frozen=True)
class ShellToken:
    site_id: int
    user: str
    expires: float
    nonce: str
    #: Minted for an administrator: may enter a site an administrator disabled.
    admin: bool = False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(
    key: Ed25519PrivateKey,
    clock: IReactorTime,
    site_id: int,
    user: str,
    ttl: float,
    admin: bool = False,
) -> str:
    claims: dict[str, Any] = {
        "site": site_id,
        "user": user,
        "exp": clock.seconds() + ttl,
        "nonce": secrets.token_hex(16),
    }
    if admin:
        claims["admin"] = True
    payload = json.dumps(claims, separators=(",", ":")).encode()
    signature = key.sign(PREFIX.encode() + b"." + payload)
    return f"{PREFIX}.{_b64(payload)}.{_b64(signature)}"


class TokenVerifier:
    """Accepts each valid token once, within its lifetime."""

    def __init__(self, key: Ed25519PublicKey, clock: IReactorTime, max_ttl: float = 300) -> None:
        self._key = key
        self._clock = clock
        self._max_ttl = max_ttl
        self._used = NonceCache(clock, max_ttl)

    def verify(self, token: str, site_id: int) -> ShellToken:
        try:
            prefix, payload_text, signature_text = token.split(".")
            if prefix != PREFIX:
                raise ValueError(prefix)
            payload = _unb64(payload_text)
            self._key.verify(_unb64(signature_text), PREFIX.encode() + b"." + payload)
            data: dict[str, Any] = json.loads(payload)
            parsed = ShellToken(
                int(data["site"]),
                str(data["user"]),
                float(data["exp"]),
                str(data["nonce"]),
                data.get("admin", False) is True,
            )
        except (ValueError, KeyError, TypeError, InvalidSignature):
            raise TokenError("bad_token", "the token is not valid") from None
        now = self._clock.seconds()
        if parsed.expires < now or parsed.expires > now + self._max_ttl:
            raise TokenError("expired", "the token has expired; choose the site again")
        if parsed.site_id != site_id:
            raise TokenError("wrong_site", "the token is for another site")
        if not self._used.add(parsed.nonce):
            raise TokenError("replayed", "the token was already used")
        return parsed
