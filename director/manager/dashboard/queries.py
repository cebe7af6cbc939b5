"""
Read-only queries only the dashboard needs (counts for /metrics, the teachers a student can
name, sites with non-default limits), on the manager's engine and in the store's thread
pool, so nothing here blocks the reactor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection, Engine
from twisted.internet.defer import Deferred

from director.common.threads import Runner
from director.manager import schema as t
from director.manager.models import DEFAULT_LIMITS


@dataclass(frozen=True)
class Teacher:
    """An active teacher, as the request form lists them."""

    username: str
    full_name: str


@dataclass(frozen=True)
class CustomLimits:
    """A site whose limits or availability are not the defaults (Administration → Limits)."""

    name: str
    availability: str
    cpus: float
    memory_mb: int
    pids: int
    client_max_body_size: str
    admin_comments: str


class DashboardQueries:
    def __init__(self, engine: Engine, runner: Runner) -> None:
        self._engine = engine
        self._runner = runner

    def _read(self, f: Any) -> Deferred[Any]:
        def run() -> Any:
            with self._engine.connect() as conn:
                return f(conn)

        return self._runner.run(run)

    def counts(self) -> Deferred[dict[str, Any]]:
        """Sites by (type, availability), operations by status, users by role."""

        def read(conn: Connection) -> dict[str, Any]:
            sites = conn.execute(
                select(t.sites.c.type, t.sites.c.availability, func.count()).group_by(
                    t.sites.c.type, t.sites.c.availability
                )
            ).all()
            ops = conn.execute(
                select(t.operations.c.status, func.count()).group_by(t.operations.c.status)
            ).all()
            users = conn.execute(
                select(t.users.c.role, func.count())
                .where(t.users.c.is_active.is_(True))
                .group_by(t.users.c.role)
            ).all()
            return {
                "sites": {(r[0], r[1]): int(r[2]) for r in sites},
                "operations": {r[0]: int(r[1]) for r in ops},
                "users": {r[0]: int(r[1]) for r in users},
            }

        return self._read(read)

    def teachers(self) -> Deferred[list[Teacher]]:
        """Active teachers (for the request form's sponsor list)."""

        def read(conn: Connection) -> list[Teacher]:
            rows = conn.execute(
                select(t.users.c.username, t.users.c.full_name)
                .where(t.users.c.role == "teacher", t.users.c.is_active.is_(True))
                .order_by(t.users.c.username)
            ).all()
            return [Teacher(r.username, r.full_name) for r in rows]

        return self._read(read)

    def custom_limit_sites(self) -> Deferred[list[CustomLimits]]:
        """Sites whose limits differ from the defaults, or that are not plainly enabled."""

        def read(conn: Connection) -> list[CustomLimits]:
            rows = conn.execute(
                select(t.sites)
                .where(
                    or_(
                        t.sites.c.cpus != DEFAULT_LIMITS["cpus"],
                        t.sites.c.memory_mb != DEFAULT_LIMITS["memory_mb"],
                        t.sites.c.pids != DEFAULT_LIMITS["pids"],
                        t.sites.c.client_max_body_size != DEFAULT_LIMITS["client_max_body_size"],
                        t.sites.c.availability != "enabled",
                    )
                )
                .order_by(t.sites.c.name)
            ).all()
            return [
                CustomLimits(
                    name=r.name,
                    availability=r.availability,
                    cpus=r.cpus,
                    memory_mb=r.memory_mb,
                    pids=r.pids,
                    client_max_body_size=r.client_max_body_size,
                    admin_comments=r.admin_comments,
                )
                for r in rows
            ]

        return self._read(read)

    def pending_requests(self, user_id: int, is_admin: bool) -> Deferred[int]:
        """Requests waiting for this user: a teacher's to approve, an admin's to create."""

        def read(conn: Connection) -> int:
            query = select(func.count()).select_from(t.site_requests)
            if is_admin:
                query = query.where(t.site_requests.c.status == "pending-admin")
            else:
                query = query.where(
                    t.site_requests.c.status == "pending-teacher",
                    t.site_requests.c.teacher_id == user_id,
                )
            return int(conn.execute(query).scalar() or 0)

        return self._read(read)
