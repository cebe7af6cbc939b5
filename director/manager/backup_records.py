"""
The record of backup runs (L{BackupRecords}): a row of C{backup_runs} per part of a run, and
the run itself (kind C{installation}), whose success C{/metrics} reports.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import desc, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from twisted.internet.defer import Deferred

from director.common.threads import Runner
from director.manager import schema as t
from director.manager.models import Site, iso_utc
from director.manager.store.rows import BackupRun, BackupSummary


class BackupRecords:
    """The C{backup_runs} table."""

    def __init__(self, engine: Engine, runner: Runner) -> None:
        self._engine = engine
        self._runner = runner

    def _tx(self, f: Callable[[Connection], Any]) -> Deferred[Any]:
        def run() -> Any:
            with self._engine.begin() as conn:
                return f(conn)

        return self._runner.run(run)

    def start(self, kind: str, site: Site | None = None) -> Deferred[int]:
        def add(conn: Connection) -> int:
            result = conn.execute(
                insert(t.backup_runs).values(
                    kind=kind,
                    site_id=site.id if site else None,
                    site_name=site.name if site else "",
                    status="running",
                    started_at=datetime.now(UTC),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

        return self._tx(add)

    def finish(
        self,
        run_id: int,
        status: str,
        duration: float,
        snapshot: str | None = None,
        size: int | None = None,
        error: str | None = None,
    ) -> Deferred[None]:
        def set_(conn: Connection) -> None:
            conn.execute(
                update(t.backup_runs)
                .where(t.backup_runs.c.id == run_id)
                .values(
                    status=status,
                    finished_at=datetime.now(UTC),
                    duration=duration,
                    snapshot=snapshot,
                    bytes=size,
                    error=error[:2000] if error else None,
                )
            )

        return self._tx(set_)

    def recent(
        self, site_id: int | None = None, kind: str | None = None, limit: int = 50
    ) -> Deferred[list[BackupRun]]:
        def get(conn: Connection) -> list[BackupRun]:
            query = select(t.backup_runs).order_by(desc(t.backup_runs.c.id)).limit(limit)
            if site_id is not None:
                query = query.where(t.backup_runs.c.site_id == site_id)
            if kind is not None:
                query = query.where(t.backup_runs.c.kind == kind)
            rows = []
            for r in conn.execute(query):
                row = dict(r._mapping)
                row["started_at"] = iso_utc(row["started_at"])
                row["finished_at"] = iso_utc(row["finished_at"])
                rows.append(BackupRun(**row))
            return rows

        return self._tx(get)

    def claim_installation(
        self, seen: datetime | None, interval_hours: float
    ) -> Deferred[int | None]:
        """
        Start a scheduled whole run unless another manager started one since C{seen} (the
        last start this one saw): the new row's id, or None. One transaction, under a lock
        of the table on PostgreSQL (SQLite has one writer at a time anyway).
        """

        def claim(conn: Connection) -> int | None:
            if conn.dialect.name == "postgresql":
                conn.execute(text("LOCK TABLE backup_runs IN SHARE ROW EXCLUSIVE MODE"))
            latest = conn.execute(
                select(t.backup_runs.c.started_at)
                .where(t.backup_runs.c.kind == "installation")
                .order_by(desc(t.backup_runs.c.id))
                .limit(1)
            ).scalar()
            if latest is not None and latest.tzinfo is None:
                latest = latest.replace(tzinfo=UTC)
            if latest is not None and (seen is None or latest > seen):
                return None
            result = conn.execute(
                insert(t.backup_runs).values(
                    kind="installation",
                    site_id=None,
                    site_name="",
                    status="running",
                    started_at=datetime.now(UTC),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

        return self._tx(claim)

    def end_interrupted(self, older_than: timedelta) -> Deferred[int]:
        """
        Mark runs still "running" that started longer ago than any run may take as failed:
        their manager stopped (or they came back with a restored database). How many.
        """

        def end(conn: Connection) -> int:
            cutoff = datetime.now(UTC) - older_than
            result = conn.execute(
                update(t.backup_runs)
                .where(t.backup_runs.c.status == "running", t.backup_runs.c.started_at < cutoff)
                .values(status="failed", error="interrupted: the manager stopped during it")
            )
            return int(result.rowcount or 0)

        return self._tx(end)

    def last_started(self) -> Deferred[datetime | None]:
        def get(conn: Connection) -> datetime | None:
            value = conn.execute(
                select(t.backup_runs.c.started_at)
                .where(t.backup_runs.c.kind == "installation")
                .order_by(desc(t.backup_runs.c.id))
                .limit(1)
            ).scalar()
            if value is not None and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value

        return self._tx(get)

    def summary(self) -> Deferred[BackupSummary]:
        """The last successful whole run, and the sites whose latest backup failed."""

        def get(conn: Connection) -> BackupSummary:
            runs = t.backup_runs
            last = conn.execute(
                select(runs)
                .where(runs.c.kind == "installation", runs.c.status == "succeeded")
                .order_by(desc(runs.c.id))
                .limit(1)
            ).first()
            latest: dict[tuple[str, int | None], str] = {}
            for r in conn.execute(
                select(runs.c.kind, runs.c.site_id, runs.c.status)
                .where(runs.c.kind != "installation", runs.c.status != "running")
                .order_by(runs.c.id)
            ):
                latest[(r.kind, r.site_id)] = r.status
            finished = last.finished_at if last is not None else None
            if finished is not None and finished.tzinfo is None:
                finished = finished.replace(tzinfo=UTC)
            return BackupSummary(
                last_success_at=finished,
                last_success_duration=last.duration if last is not None else None,
                failing=sum(1 for status in latest.values() if status == "failed"),
            )

        return self._tx(get)
