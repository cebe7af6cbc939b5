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


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high).map(str)
    return st.one_of(
        st.just("*"),
        number,
        st.tuples(st.integers(low, high), st.integers(1, 10)).map(
            lambda p: f"{p[0]}-{high}/{p[1]}"
        ),
        st.integers(1, 15).map(lambda n: f"*/{n}"),
    )


# A cron schedule that comes round: five fields (days of the month up to 28, so that every
# month has them), or a shorthand.
schemathesis.openapi.format(
    "cron",
    st.one_of(
        st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12), _field(0, 6)).map(
            " ".join
        ),
        st.sampled_from(["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly"]),
    ),
)
