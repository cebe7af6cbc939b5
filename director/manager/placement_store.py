"""
The orchestrator pool's records: the orchestrators sites run on, and which one runs each
site (C{sites.orchestrator_id}). Apart from L{director.manager.store.Store}, over the same
database and thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from director.common.threads import Runner
from director.contract.sites import is_site_name
from director.manager import schema as t
from director.manager.models import ORCHESTRATOR_STATES, Orchestrator
from director.manager.store import Conflict, NotFound
from director.manager.store.base import Clock, WallClock

T = TypeVar("T")


class InvalidOrchestrator(ValueError):
    """A name, URL, nginx address or state that cannot be an orchestrator's."""


def validate_orchestrator(name: str, url: str, nginx: str) -> None:
    """L{InvalidOrchestrator} unless these could be a registered orchestrator's."""
    if not is_site_name(name):
        raise InvalidOrchestrator("name: 2-32 characters of a-z, 0-9 and -, not starting with -")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 500:
        raise InvalidOrchestrator(f"url: expected the orchestrator's http(s) base URL, got {url!r}")
    host, _, port = nginx.rpartition(":")
    if (
        not host
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or any(c in host for c in " ,/;{}'\"\\\t\n")
        or len(nginx) > 300
    ):
        raise InvalidOrchestrator(f"nginx: expected host:port, got {nginx!r}")


def _record(row: Any, sites: int = 0) -> Orchestrator:
    return Orchestrator(
        id=row.id,
        name=row.name,
        url=row.url,
        nginx=row.nginx,
        state=row.state,
        created_at=row.created_at,
        sites=sites,
    )


class PlacementStore:
    """The C{orchestrators} table and the sites' C{orchestrator_id}; methods return Deferreds."""

    def __init__(self, engine: Engine, runner: Runner, clock: Clock | None = None) -> None:
        self._engine = engine
        self._runner = runner
        self._clock: Clock = clock if clock is not None else WallClock()

    def _now(self) -> datetime:
        """The time from the same clock as the store's (the reactor in the daemon)."""
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    def _tx(self, f: Callable[[Connection], T]) -> Deferred[T]:
        def run() -> T:
            with self._engine.begin() as conn:
                return f(conn)

        return self._runner.run(run)

    @staticmethod
    def _one(conn: Connection, name: str) -> Orchestrator:
        row = conn.execute(select(t.orchestrators).where(t.orchestrators.c.name == name)).first()
        if row is None:
            raise NotFound(f"no orchestrator named {name}")
        count = conn.execute(
            select(func.count()).select_from(t.sites).where(t.sites.c.orchestrator_id == row.id)
        ).scalar_one()
        return _record(row, int(count))

    def _inserted(self, conn: Connection, name: str, url: str, nginx: str) -> bool:
        """Insert C{name} (active) in a savepoint; False if the name is taken (nothing done)."""
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(t.orchestrators).values(
                        name=name, url=url, nginx=nginx, state="active", created_at=self._now()
                    )
                )
        except IntegrityError:
            return False
        return True

    def add(self, name: str, url: str, nginx: str) -> Deferred[Orchestrator]:
        """Register a new (active) orchestrator; L{Conflict} if the name is taken."""
        validate_orchestrator(name, url, nginx)

        def add_(conn: Connection) -> Orchestrator:
            if not self._inserted(conn, name, url, nginx):
                raise Conflict("name_taken", f"an orchestrator named {name} exists")
            return self._one(conn, name)

        return self._tx(add_)

    def put(self, name: str, url: str, nginx: str) -> Deferred[Orchestrator]:
        """
        Register C{name} or update its url and nginx (its state is kept). Idempotent: two
        managers starting together both put the configured orchestrator, and the one whose
        insert meets the other's row updates that row instead.
        """
        validate_orchestrator(name, url, nginx)

        def put_(conn: Connection) -> Orchestrator:
            if not self._inserted(conn, name, url, nginx):
                # registered already (perhaps by another manager just now, committed before
                # our insert ended: PostgreSQL makes it wait for that one): update it
                conn.execute(
                    update(t.orchestrators)
                    .where(t.orchestrators.c.name == name)
                    .values(url=url, nginx=nginx)
                )
            return self._one(conn, name)

        return self._tx(put_)

    def list(self) -> Deferred[list[Orchestrator]]:
        """Every orchestrator, by name, with how many sites each holds."""

        def list_(conn: Connection) -> list[Orchestrator]:
            counts: dict[int, int] = dict(
                conn.execute(
                    select(t.sites.c.orchestrator_id, func.count())
                    .where(t.sites.c.orchestrator_id.is_not(None))
                    .group_by(t.sites.c.orchestrator_id)
                ).all()
            )
            rows = conn.execute(select(t.orchestrators).order_by(t.orchestrators.c.name))
            return [_record(r, int(counts.get(r.id, 0))) for r in rows]

        return self._tx(list_)

    def get(self, name: str) -> Deferred[Orchestrator | None]:
        def get_(conn: Connection) -> Orchestrator | None:
            try:
                return self._one(conn, name)
            except NotFound:
                return None

        return self._tx(get_)

    def set_state(self, name: str, state: str) -> Deferred[Orchestrator]:
        """Make C{name} active or draining; L{NotFound} if there is none."""
        if state not in ORCHESTRATOR_STATES:
            raise InvalidOrchestrator(f"state: one of {', '.join(ORCHESTRATOR_STATES)}")

        def set_(conn: Connection) -> Orchestrator:
            conn.execute(
                update(t.orchestrators).where(t.orchestrators.c.name == name).values(state=state)
            )
            return self._one(conn, name)

        return self._tx(set_)

    def remove(self, name: str) -> Deferred[Orchestrator]:
        """Forget C{name}; L{Conflict} while it holds sites, L{NotFound} if there is none."""

        def remove_(conn: Connection) -> Orchestrator:
            record = self._one(conn, name)
            if record.sites:
                raise Conflict(
                    "orchestrator_in_use",
                    f"the orchestrator {name} still holds {record.sites} site(s)",
                )
            conn.execute(delete(t.orchestrators).where(t.orchestrators.c.id == record.id))
            return record

        return self._tx(remove_)

    def orchestrator_id(self, name: str) -> Deferred[int]:
        """The id of C{name} (L{NotFound} if there is none), as C{sites.orchestrator_id}."""
        return self._tx(lambda conn: self._one(conn, name).id)

    def site_orchestrator(self, site_id: int) -> Deferred[str | None]:
        """The name of the orchestrator that runs site C{site_id} (None: not placed)."""

        def get(conn: Connection) -> str | None:
            name = conn.execute(
                select(t.orchestrators.c.name)
                .join(t.sites, t.sites.c.orchestrator_id == t.orchestrators.c.id)
                .where(t.sites.c.id == site_id)
            ).scalar()
            return str(name) if name is not None else None

        return self._tx(get)

    def set_site_orchestrator(self, site_id: int, name: str) -> Deferred[None]:
        """Record that C{name} runs site C{site_id}; L{NotFound} if either is missing."""

        def set_(conn: Connection) -> None:
            record = self._one(conn, name)
            changed = conn.execute(
                update(t.sites).where(t.sites.c.id == site_id).values(orchestrator_id=record.id)
            )
            if not changed.rowcount:
                raise NotFound(f"no site with id {site_id}")

        return self._tx(set_)

    def place_unplaced(self, name: str) -> Deferred[int]:
        """Give every site that has no orchestrator to C{name}; how many there were."""

        def place(conn: Connection) -> int:
            record = self._one(conn, name)
            changed = conn.execute(
                update(t.sites)
                .where(t.sites.c.orchestrator_id.is_(None))
                .values(orchestrator_id=record.id)
            )
            return int(changed.rowcount or 0)

        return self._tx(place)
