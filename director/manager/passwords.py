"""Password hashing with bcrypt, in a thread pool: each check costs ~0.1-0.3 s of CPU."""

from __future__ import annotations

import threading

import bcrypt
from twisted.internet.defer import Deferred

from director.common.threads import Runner

MIN_LENGTH = 8
MAX_LENGTH = 256  # bcrypt uses the first 72 bytes; longer input is pre-hashed below
_DUMMIES: dict[int, str] = {}
_DUMMIES_LOCK = threading.Lock()


def dummy_hash(rounds: int) -> str:
    """
    A valid hash with C{rounds} to check against when the account does not exist or has no
    password: the check then costs as much as a real one, so timing tells nothing.
    """
    with _DUMMIES_LOCK:
        if rounds not in _DUMMIES:
            salt = bcrypt.gensalt(rounds=rounds)
            _DUMMIES[rounds] = bcrypt.hashpw(b"not a real password", salt).decode()
        return _DUMMIES[rounds]


def _prepare(password: str) -> bytes:
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def hash_password(password: str, rounds: int = 12) -> str:
    return bcrypt.hashpw(_prepare(password), bcrypt.gensalt(rounds=rounds)).decode()


def check_password(password: str, hashed: str | None, rounds: int = 12) -> bool:
    """Whether C{password} matches C{hashed}; C{None} costs the same as a real hash of C{rounds}."""
    try:
        return bcrypt.checkpw(_prepare(password), (hashed or dummy_hash(rounds)).encode()) and bool(
            hashed
        )
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
        return self._runner.run(check_password, password, hashed, self._rounds)


def validate_password(password: object) -> str:
    from director.manager.models import ValidationError

    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationError("password", f"{MIN_LENGTH} to {MAX_LENGTH} characters")
    return password
