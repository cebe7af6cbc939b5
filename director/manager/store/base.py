"""
What every part of the store shares: its errors, the thread-pool transaction, and the small
helpers over SQLAlchemy results (new ids, one-row conditional updates, SQLite's naive times).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from twisted.internet.defer import Deferred

from director.common.threads import Runner

T = TypeVar("T")


class Keep:
    """Marks an argument left as it is (where None already means "remove")."""


KEEP = Keep()


class Conflict(Exception):
    """The change conflicts with existing data (a name taken, an operation running)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFound(LookupError):
    """No such object (or the caller may not know it exists)."""


def new_id(result: Any) -> int:
    """The primary key an INSERT gave."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def updated_one(conn: Connection, statement: Any) -> bool:
    """
    Run a conditional UPDATE (or DELETE) meant for one row: whether it matched it. How one
    manager among several wins a claim, or learns that its lease is still its own.
    """
    return bool(conn.execute(statement).rowcount == 1)


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def secret_hash(token: str) -> str:
    """How a session id or an API token is kept: only its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


class StoreBase:
    """The engine and the thread pool each concern's queries run in, one transaction a call."""

    def __init__(self, engine: Engine, runner: Runner) -> None:
        self.engine = engine
        self._runner = runner

    def _tx(self, f: Callable[[Connection], T]) -> Deferred[T]:
        def run() -> T:
            with self.engine.begin() as conn:
                return f(conn)

        return self._runner.run(run)
