"""Scheduled tasks and their runs, leased to one manager while they run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from director.manager import schema as t
from director.manager.schedules import Task, TaskRun
from director.manager.store.base import (
    Conflict,
    NotFound,
    StoreBase,
    aware,
    new_id,
    updated_one,
)


def _my_running_run(run_id: int, worker: str) -> Any:
    """An update of run C{run_id} while C{worker} holds it and it runs (a lease's writes)."""
    return update(t.task_runs).where(
        and_(
            t.task_runs.c.id == run_id,
            t.task_runs.c.claimed_by == worker,
            t.task_runs.c.status == "running",
        )
    )


class TaskStore(StoreBase):
    """Scheduled tasks and their runs."""

    def _task_run(self, row: Any) -> TaskRun:
        return TaskRun(
            id=row.id,
            task_id=row.task_id,
            trigger=row.trigger,
            status=row.status,
            exit_code=row.exit_code,
            output=row.output or "",
            output_truncated=bool(row.output_truncated),
            message=row.message or "",
            started_at=aware(row.started_at) or self.now(),
            finished_at=aware(row.finished_at),
        )

    def _tasks(self, conn: Connection, where: Any) -> list[Task]:
        rows = conn.execute(select(t.tasks).where(where).order_by(t.tasks.c.id)).all()
        last: dict[int, TaskRun] = {}
        if rows:
            newest = (
                select(func.max(t.task_runs.c.id))
                .where(t.task_runs.c.task_id.in_([r.id for r in rows]))
                .group_by(t.task_runs.c.task_id)
            )
            for run in conn.execute(select(t.task_runs).where(t.task_runs.c.id.in_(newest))):
                last[run.task_id] = self._task_run(run)
        return [
            Task(
                id=r.id,
                site_id=r.site_id,
                name=r.name,
                schedule=r.schedule,
                command=r.command,
                timeout=r.timeout,
                enabled=r.enabled,
                next_run_at=r.next_run_at,
                created_at=aware(r.created_at),
                last_run=last.get(r.id),
            )
            for r in rows
        ]

    def list_tasks(self, site_id: int) -> Deferred[list[Task]]:
        return self._tx(lambda conn: self._tasks(conn, t.tasks.c.site_id == site_id))

    def get_task(self, site_id: int, task_id: int) -> Deferred[Task | None]:
        def get(conn: Connection) -> Task | None:
            found = self._tasks(conn, and_(t.tasks.c.site_id == site_id, t.tasks.c.id == task_id))
            return found[0] if found else None

        return self._tx(get)

    def create_task(
        self, site_id: int, values: dict[str, Any], most: int | None, created_by: int | None
    ) -> Deferred[Task]:
        """Add a task to the site; 409 limit_reached when it has C{most} already."""

        def create(conn: Connection) -> Task:
            if most is not None:
                count = conn.execute(
                    select(func.count(t.tasks.c.id)).where(t.tasks.c.site_id == site_id)
                ).scalar()
                if int(count or 0) >= most:
                    raise Conflict(
                        "limit_reached", f"a site may have at most {most} scheduled tasks"
                    )
            result = conn.execute(
                insert(t.tasks).values(
                    site_id=site_id, created_by=created_by, created_at=self.now(), **values
                )
            )
            return self._tasks(conn, t.tasks.c.id == new_id(result))[0]

        return self._tx(create)

    def update_task(self, task_id: int, values: dict[str, Any]) -> Deferred[Task]:
        def change(conn: Connection) -> Task:
            if values:
                conn.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(**values))
            found = self._tasks(conn, t.tasks.c.id == task_id)
            if not found:
                raise NotFound(task_id)
            return found[0]

        return self._tx(change)

    def delete_task(self, task_id: int) -> Deferred[bool]:
        def remove(conn: Connection) -> bool:
            conn.execute(delete(t.task_runs).where(t.task_runs.c.task_id == task_id))
            return updated_one(conn, delete(t.tasks).where(t.tasks.c.id == task_id))

        return self._tx(remove)

    def due_tasks(self, clock_now: float, limit: int = 100) -> Deferred[list[tuple[Task, str]]]:
        """Enabled tasks whose next run is due, each with its site's availability."""

        def due(conn: Connection) -> list[tuple[Task, str]]:
            rows = conn.execute(
                select(t.tasks.c.id, t.sites.c.availability)
                .join(t.sites, t.sites.c.id == t.tasks.c.site_id)
                .where(and_(t.tasks.c.enabled.is_(True), t.tasks.c.next_run_at <= clock_now))
                .order_by(t.tasks.c.next_run_at)
                .limit(limit)
            ).all()
            availability = {r.id: r.availability for r in rows}
            if not rows:
                return []
            tasks = self._tasks(conn, t.tasks.c.id.in_(list(availability)))
            return [(task, availability[task.id]) for task in tasks]

        return self._tx(due)

    def advance_task(self, task_id: int, expected: float, following: float) -> Deferred[bool]:
        """
        Move a due task's next run from C{expected} to C{following}: True for the one
        manager whose conditional UPDATE matched (it runs the due run), False for the others.
        """
        return self._tx(
            lambda conn: updated_one(
                conn,
                update(t.tasks)
                .where(and_(t.tasks.c.id == task_id, t.tasks.c.next_run_at == expected))
                .values(next_run_at=following),
            )
        )

    def start_run(
        self,
        task_id: int,
        trigger: str,
        worker: str,
        lease_until: float,
        started_at: datetime,
        keep: int,
    ) -> Deferred[tuple[TaskRun, bool]]:
        """
        Record a run of the task, leased to C{worker}: (run, True) when it may start, or,
        when the previous run still runs (the database allows one running run per task),
        (a run recorded as skipped, False) for a scheduled run and (the running run, False)
        for one asked for now.
        """

        def start(conn: Connection) -> tuple[TaskRun, bool]:
            values = {
                "task_id": task_id,
                "trigger": trigger,
                "output": "",
                "output_truncated": False,
                "started_at": started_at,
            }
            try:
                with conn.begin_nested():
                    result = conn.execute(
                        insert(t.task_runs).values(
                            **values,
                            status="running",
                            message="",
                            claimed_by=worker,
                            lease_until=lease_until,
                        )
                    )
                allowed = True
            except IntegrityError:
                if trigger != "schedule":  # asked for now: the refusal says it, nothing is kept
                    running = conn.execute(
                        select(t.task_runs).where(
                            and_(
                                t.task_runs.c.task_id == task_id,
                                t.task_runs.c.status == "running",
                            )
                        )
                    ).first()
                    if running is not None:
                        return self._task_run(running), False
                result = conn.execute(
                    insert(t.task_runs).values(
                        **values,
                        status="skipped",
                        message="skipped: the previous run was still going",
                        finished_at=started_at,
                    )
                )
                allowed = False
                self._prune_runs(conn, task_id, keep)
            row = conn.execute(select(t.task_runs).where(t.task_runs.c.id == new_id(result))).one()
            return self._task_run(row), allowed

        return self._tx(start)

    @staticmethod
    def _prune_runs(conn: Connection, task_id: int, keep: int) -> None:
        """
        Delete the task's finished runs but the newest C{keep} that ran and the newest
        C{keep} skipped ones (so that skipped runs never push out the output of real ones).
        """
        newest: list[int] = []
        for skipped in (True, False):
            kind = t.task_runs.c.status == "skipped"
            newest += [
                r.id
                for r in conn.execute(
                    select(t.task_runs.c.id)
                    .where(and_(t.task_runs.c.task_id == task_id, kind if skipped else ~kind))
                    .order_by(t.task_runs.c.id.desc())
                    .limit(keep)
                )
            ]
        conn.execute(
            delete(t.task_runs).where(
                and_(
                    t.task_runs.c.task_id == task_id,
                    t.task_runs.c.status != "running",
                    t.task_runs.c.id.not_in(newest or [0]),
                )
            )
        )

    def renew_run(self, run_id: int, worker: str, until: float) -> Deferred[bool]:
        """Extend C{worker}'s lease on its running run (False: it is no longer C{worker}'s)."""
        return self._tx(
            lambda conn: updated_one(
                conn,
                _my_running_run(run_id, worker).values(lease_until=until),
            )
        )

    def finish_run(
        self,
        run_id: int,
        worker: str,
        status: str,
        exit_code: int | None,
        output: str,
        truncated: bool,
        message: str,
        finished_at: datetime,
        keep: int,
    ) -> Deferred[TaskRun | None]:
        """Record how C{worker}'s run ended (None if it is no longer C{worker}'s)."""

        def finish(conn: Connection) -> TaskRun | None:
            done = updated_one(
                conn,
                _my_running_run(run_id, worker).values(
                    status=status,
                    exit_code=exit_code,
                    output=output,
                    output_truncated=truncated,
                    message=message[:2000],
                    finished_at=finished_at,
                    claimed_by=None,
                    lease_until=None,
                ),
            )
            row = conn.execute(select(t.task_runs).where(t.task_runs.c.id == run_id)).first()
            if row is None or not done:
                return None
            self._prune_runs(conn, row.task_id, keep)
            return self._task_run(row)

        return self._tx(finish)

    def interrupt_runs(
        self, clock_now: float, identity: str, worker: str, finished_at: datetime
    ) -> Deferred[int]:
        """
        Mark as interrupted the runs whose manager is gone: their lease expired, or they
        belong to an earlier incarnation of C{identity} (this manager before a restart).
        """

        def interrupt(conn: Connection) -> int:
            return int(
                conn.execute(
                    update(t.task_runs)
                    .where(
                        and_(
                            t.task_runs.c.status == "running",
                            or_(
                                t.task_runs.c.lease_until < clock_now,
                                and_(
                                    t.task_runs.c.claimed_by.startswith(
                                        f"{identity}/", autoescape=True
                                    ),
                                    t.task_runs.c.claimed_by != worker,
                                ),
                            ),
                        )
                    )
                    .values(
                        status="interrupted",
                        message="interrupted: Director restarted or lost it while it ran",
                        finished_at=finished_at,
                        claimed_by=None,
                        lease_until=None,
                    )
                ).rowcount
            )

        return self._tx(interrupt)

    def list_runs(self, task_id: int, limit: int = 100) -> Deferred[list[TaskRun]]:
        return self._tx(
            lambda conn: [
                self._task_run(r)
                for r in conn.execute(
                    select(t.task_runs)
                    .where(t.task_runs.c.task_id == task_id)
                    .order_by(t.task_runs.c.id.desc())
                    .limit(limit)
                )
            ]
        )
