"""Password hashing with bcrypt, in a thread pool: each check costs ~0.1-0.3 s of CPU."""

from __future__ import annotations

import bcrypt
from twisted.internet.defer import Deferred

from director.common.threads import Runner

MIN_LENGTH = 8
MAX_LENGTH = 256  # bcrypt uses the first 72 bytes; longer input is pre-hashed below
# A valid hash to compare against when the user does not exist, so timing reveals nothing.
_DUMMY = bcrypt.hashpw(b"not a real password", bcrypt.gensalt(rounds=4)).decode()


def _prepare(password: str) -> bytes:
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def hash_password(password: str, rounds: int = 12) -> str:
    return bcrypt.hashpw(_prepare(password), bcrypt.gensalt(rounds=rounds)).decode()


def check_password(password: str, hashed: str | None) -> bool:
    try:
        return bcrypt.checkpw(_prepare(password), (hashed or _DUMMY).encode()) and bool(hashed)
    except ValueError:
        return False


class Passwords:
    """Hashing and checking in C{runner} (a small dedicated pool)."""

    def __init__(self, runner: Runner, rounds: int = 12) -> None:
        self._runner = runner
        self._rounds = rounds

    def hash(self, password: str) -> Deferred[str]:
        return self._runner.run(hash_password, password, self._rounds)

    def check(self, password: str, hashed: str | None) -> Deferred[bool]:
        return self._runner.run(check_password, password, hashed)


def validate_password(password: object) -> str:
    from director.manager.models import ValidationError

    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationError("password", f"{MIN_LENGTH} to {MAX_LENGTH} characters")
    return password
