"""Component keys made in memory, for tests that need signers and verifiers."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from twisted.internet.interfaces import IReactorTime

from director.common.config import COMPONENTS
from director.common.signing import RequestSigner, RequestVerifier


@dataclass
class Keyring:
    """One Ed25519 key per component, like `director init` writes to disk."""

    private: dict[str, Ed25519PrivateKey] = field(
        default_factory=lambda: {name: Ed25519PrivateKey.generate() for name in COMPONENTS}
    )

    @property
    def public(self) -> dict[str, Ed25519PublicKey]:
        return {name: key.public_key() for name, key in self.private.items()}

    def signer(self, name: str, clock: IReactorTime) -> RequestSigner:
        return RequestSigner(name, self.private[name], clock)

    def impostor(self, name: str, clock: IReactorTime) -> RequestSigner:
        """Claims to be C{name} but signs with a key nobody knows (wrong credentials)."""
        return RequestSigner(name, Ed25519PrivateKey.generate(), clock)

    def verifier(
        self, audience: str, clock: IReactorTime, max_skew: float = 60.0
    ) -> RequestVerifier:
        return RequestVerifier(audience, self.public, clock, max_skew)
