"""
schemathesis hooks (SCHEMATHESIS_HOOKS=schemathesis_hooks): strategies for the string formats
the OpenAPI document names that a regular expression cannot describe.
"""

from __future__ import annotations

import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import strategies as st


def _ssh_key(comment: str) -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{line.decode()} {comment}".rstrip()


# An OpenSSH public key line: what `ssh-keygen` writes to id_*.pub.
schemathesis.openapi.format(
    "ssh-public-key",
    st.builds(_ssh_key, st.text(alphabet="abcdefghijklmnopqrstuvwxyz@.-", max_size=20)),
)
