"""
Signed requests between components.

A caller signs (caller, audience, method, path, timestamp, nonce, SHA-256 of the body) with
its Ed25519 key; the receiver checks the signature with the caller's public key, the time
against its clock, the body against the digest, and that the nonce was not seen before.
Asymmetric keys mean a component can verify others without being able to impersonate them.
No I/O here: keys come in as objects and time from an injected clock.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from twisted.internet.interfaces import IReactorTime

from director.common.errors import CodedError

HEADER_CALLER = "X-Director-Caller"
HEADER_TIMESTAMP = "X-Director-Timestamp"
HEADER_NONCE = "X-Director-Nonce"
HEADER_DIGEST = "X-Director-Content-SHA256"
HEADER_SIGNATURE = "X-Director-Signature"
SIGNED_HEADERS = (HEADER_CALLER, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_DIGEST, HEADER_SIGNATURE)


class AuthenticationError(CodedError):
    """The request does not prove who sent it (HTTP 401); C{code} is machine-readable."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def stream_digest(stream: Any, chunk: int = 256 * 1024) -> str:
    """L{body_digest} of a file's contents from where it is, read in chunks."""
    h = hashlib.sha256()
    while True:
        data = stream.read(chunk)
        if not data:
            return h.hexdigest()
        h.update(data)


def _canonical(
    caller: str, audience: str, method: str, target: str, timestamp: str, nonce: str, digest: str
) -> bytes:
    return "\n".join(
        ["director-request-v1", caller, audience, method.upper(), target, timestamp, nonce, digest]
    ).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class RequestSigner:
    """Signs requests as one component (C{name}) with that component's private key."""

    name: str
    key: Ed25519PrivateKey
    clock: IReactorTime

    def headers(
        self,
        audience: str,
        method: str,
        target: str,
        body: bytes = b"",
        digest: str | None = None,
    ) -> dict[str, str]:
        """
        The headers to add to a request for C{target} (the path with its query string) on the
        component called C{audience}. C{digest} (L{body_digest} of a body streamed from a
        file) stands in for C{body}.
        """
        timestamp = str(int(self.clock.seconds()))
        nonce = secrets.token_hex(16)
        if digest is None:
            digest = body_digest(body)
        signature = self.key.sign(
            _canonical(self.name, audience, method, target, timestamp, nonce, digest)
        )
        return {
            HEADER_CALLER: self.name,
            HEADER_TIMESTAMP: timestamp,
            HEADER_NONCE: nonce,
            HEADER_DIGEST: digest,
            HEADER_SIGNATURE: _b64(signature),
        }


class NonceCache:
    """
    Remembers nonces until their request could no longer pass the time check, so each
    signed request is accepted once. Memory is bounded by the request rate times the window.
    """

    def __init__(self, clock: IReactorTime, window: float) -> None:
        self._clock = clock
        self._window = window
        self._expiry: dict[str, float] = {}
        self._next_prune = 0.0

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, nonce: str) -> bool:
        """Record C{nonce}; C{False} when it was already seen (a replay)."""
        now = self._clock.seconds()
        if now >= self._next_prune:
            self._expiry = {n: t for n, t in self._expiry.items() if t > now}
            self._next_prune = now + self._window / 4
        if self._expiry.get(nonce, 0.0) > now:
            return False
        self._expiry[nonce] = now + 2 * self._window
        return True


class RequestVerifier:
    """Checks signed requests against the public keys of the known components."""

    def __init__(
        self,
        audience: str,
        public_keys: Mapping[str, Ed25519PublicKey],
        clock: IReactorTime,
        max_skew: float = 60.0,
    ) -> None:
        self._audience = audience
        self._keys = dict(public_keys)
        self._clock = clock
        self.clock = clock
        self._max_skew = max_skew
        self._nonces = NonceCache(clock, max_skew)

    def verify(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        digest_of_body: str | None = None,
    ) -> str:
        """
        Return the name of the component that signed this request, or raise
        L{AuthenticationError} saying why it is refused. C{digest_of_body} (computed
        without holding the body in memory) stands in for C{body}.
        """
        present = [h for h in SIGNED_HEADERS if headers.get(h)]
        if not present:
            raise AuthenticationError("missing_credentials", "this endpoint needs a signed request")
        if len(present) != len(SIGNED_HEADERS):
            missing = [h for h in SIGNED_HEADERS if h not in present]
            raise AuthenticationError("malformed_credentials", f"missing header {missing[0]}")
        caller = headers[HEADER_CALLER]
        key = self._keys.get(caller)
        if key is None:
            raise AuthenticationError("unknown_caller", f"unknown component {caller[:40]!r}")
        timestamp = headers[HEADER_TIMESTAMP]
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise AuthenticationError("malformed_credentials", "bad timestamp")
        if abs(self._clock.seconds() - int(timestamp)) > self._max_skew:
            raise AuthenticationError("expired", "request timestamp is outside the allowed window")
        nonce = headers[HEADER_NONCE]
        if not 16 <= len(nonce) <= 128:
            raise AuthenticationError("malformed_credentials", "bad nonce")
        digest = headers[HEADER_DIGEST]
        actual = digest_of_body if digest_of_body is not None else body_digest(body)
        if not secrets.compare_digest(digest, actual):
            raise AuthenticationError("tampered", "body does not match its signed digest")
        try:
            signature = _unb64(headers[HEADER_SIGNATURE])
            key.verify(
                signature,
                _canonical(caller, self._audience, method, target, timestamp, nonce, digest),
            )
        except (InvalidSignature, ValueError):
            raise AuthenticationError("bad_signature", "signature does not verify") from None
        if not self._nonces.add(nonce):
            raise AuthenticationError("replayed", "this signed request was already used")
        return caller
