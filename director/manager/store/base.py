"""
What every part of the store shares: its errors, the thread-pool transaction, and the small
helpers over SQLAlchemy results (new ids, one-row conditional updates, SQLite's naive times).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from twisted.internet.defer import Deferred

from director.common.errors import CodedError
from director.common.threads import Runner

T = TypeVar("T")


class Clock(Protocol):
    """What the store needs of a clock: C{IReactorTime.seconds}."""

    def seconds(self) -> float: ...


class Keep:
    """Marks an argument left as it is (where None already means "remove")."""


KEEP = Keep()


class Conflict(CodedError):
    """The change conflicts with existing data (a name taken, an operation running)."""


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
    """The wall clock's time (what a store without an injected clock goes by)."""
    return datetime.now(UTC)


class WallClock:
    """The system's time, as an L{IReactorTime} reads it: for a store used without a reactor."""

    def seconds(self) -> float:
        return time.time()


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def utc(value: datetime) -> datetime:
    """A time read from a NOT NULL column, made aware (L{aware} for one that may be null)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def secret_hash(token: str) -> str:
    """How a session id or an API token is kept: only its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


class StoreBase:
    """
    The engine and the thread pool each concern's queries run in, one transaction a call,
    and the one clock every time the store records or compares comes from (the reactor in
    the daemon, so that leases, runs and timestamps agree; the wall clock by default).
    """

    def __init__(self, engine: Engine, runner: Runner, clock: Clock | None = None) -> None:
        self.engine = engine
        self._runner = runner
        self._clock: Clock = clock if clock is not None else WallClock()

    def now(self) -> datetime:
        """The store's clock's time, as an aware UTC datetime."""
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    def _tx(self, f: Callable[[Connection], T]) -> Deferred[T]:
        def run() -> T:
            with self.engine.begin() as conn:
                return f(conn)

        return self._runner.run(run)
