"""The operation engine's records: operations, their actions, the leases managers hold."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from director.manager import schema as t
from director.manager.models import Action, Operation
from director.manager.store.base import Conflict, NotFound, StoreBase, new_id, updated_one


def load_operation(conn: Connection, op_id: int) -> Operation:
    row = conn.execute(select(t.operations).where(t.operations.c.id == op_id)).first()
    if row is None:
        raise NotFound(op_id)
    actions = tuple(
        Action(a.position, a.name, a.status, a.message)
        for a in conn.execute(
            select(t.actions)
            .where(t.actions.c.operation_id == op_id)
            .order_by(t.actions.c.position)
        )
    )
    return Operation(
        id=row.id,
        site_id=row.site_id,
        site_name=row.site_name,
        type=row.type,
        status=row.status,
        params=row.params or {},
        error=row.error,
        actions=actions,
        created_at=row.created_at,
        updated_at=row.updated_at,
        attempts=row.attempts,
    )


def insert_operation(
    conn: Connection,
    site_id: int | None,
    site_name: str,
    kind: str,
    action_names: list[str],
    params: dict[str, Any],
    created_by: int | None,
    moment: datetime,
) -> Operation:
    try:
        with conn.begin_nested():
            result = conn.execute(
                insert(t.operations).values(
                    site_id=site_id,
                    site_name=site_name,
                    type=kind,
                    status="pending",
                    params=params,
                    created_by=created_by,
                    created_at=moment,
                    updated_at=moment,
                    attempts=0,
                    next_attempt_at=0.0,
                )
            )
    except IntegrityError:
        raise Conflict(
            "operation_running",
            "another operation is still running on this site; wait for it to finish",
        ) from None
    op_id = new_id(result)
    for position, name in enumerate(action_names):
        conn.execute(
            insert(t.actions).values(
                operation_id=op_id, position=position, name=name, status="pending", message=""
            )
        )
    return load_operation(conn, op_id)


class OperationStore(StoreBase):
    """Operations and their actions; claims and leases among several managers."""

    def create_operation(
        self,
        site_id: int | None,
        site_name: str,
        kind: str,
        action_names: list[str],
        params: dict[str, Any] | None = None,
        created_by: int | None = None,
    ) -> Deferred[Operation]:
        return self._tx(
            lambda conn: insert_operation(
                conn, site_id, site_name, kind, action_names, params or {}, created_by, self.now()
            )
        )

    def get_operation(self, op_id: int) -> Deferred[Operation]:
        return self._tx(lambda conn: load_operation(conn, op_id))

    def list_operations(
        self, site_id: int | None = None, failed_first: bool = False, limit: int = 100
    ) -> Deferred[list[Operation]]:
        def list_(conn: Connection) -> list[Operation]:
            query = select(t.operations.c.id)
            if site_id is not None:
                query = query.where(t.operations.c.site_id == site_id)
            order: list[Any] = [t.operations.c.id.desc()]
            if failed_first:
                order.insert(0, (t.operations.c.status != "failed"))
            ids = [r.id for r in conn.execute(query.order_by(*order).limit(limit))]
            return [load_operation(conn, i) for i in ids]

        return self._tx(list_)

    def active_operation(self, site_id: int) -> Deferred[Operation | None]:
        def get(conn: Connection) -> Operation | None:
            row = conn.execute(
                select(t.operations.c.id).where(
                    and_(
                        t.operations.c.site_id == site_id,
                        t.operations.c.status.in_(("pending", "running")),
                    )
                )
            ).first()
            return load_operation(conn, row.id) if row else None

        return self._tx(get)

    def claim_operation(
        self, worker: str, clock_now: float, lease: float, identity: str | None = None
    ) -> Deferred[Operation | None]:
        """
        Claim the oldest runnable operation for C{worker}: pending ones, running ones whose
        claimant's lease expired (a manager that died mid-operation), and, with C{identity},
        running ones leased by an earlier incarnation of that identity (C{<identity>/...}
        but not C{worker}: this manager before its restart), whatever their lease. Safe with
        several managers: the conditional UPDATE succeeds for one claimant only, and a live
        manager's unexpired lease is never taken by another identity.
        """
        claimable = or_(
            t.operations.c.claimed_by.is_(None),
            t.operations.c.lease_until < clock_now,
        )
        if identity is not None:
            claimable = or_(
                claimable,
                and_(
                    t.operations.c.claimed_by.startswith(f"{identity}/", autoescape=True),
                    t.operations.c.claimed_by != worker,
                ),
            )

        def claim(conn: Connection) -> Operation | None:
            candidates = conn.execute(
                select(t.operations.c.id)
                .where(
                    and_(
                        t.operations.c.status.in_(("pending", "running")),
                        t.operations.c.next_attempt_at <= clock_now,
                        claimable,
                    )
                )
                .order_by(t.operations.c.id)
                .limit(10)
            ).all()
            for candidate in candidates:
                if updated_one(
                    conn,
                    update(t.operations)
                    .where(
                        and_(
                            t.operations.c.id == candidate.id,
                            claimable,
                        )
                    )
                    .values(
                        claimed_by=worker,
                        lease_until=clock_now + lease,
                        status="running",
                        updated_at=self.now(),
                    ),
                ):
                    return load_operation(conn, candidate.id)
            return None

        return self._tx(claim)

    def renew_lease(self, op_id: int, worker: str, until: float) -> Deferred[bool]:
        return self._tx(
            lambda conn: updated_one(
                conn,
                update(t.operations)
                .where(and_(t.operations.c.id == op_id, t.operations.c.claimed_by == worker))
                .values(lease_until=until),
            )
        )

    def set_action(
        self, op_id: int, position: int, status: str, message: str = ""
    ) -> Deferred[None]:
        def set_(conn: Connection) -> None:
            values: dict[str, Any] = {"status": status, "message": message[:2000]}
            if status == "running":
                values["started_at"] = self.now()
            elif status in ("succeeded", "failed"):
                values["finished_at"] = self.now()
            conn.execute(
                update(t.actions)
                .where(and_(t.actions.c.operation_id == op_id, t.actions.c.position == position))
                .values(**values)
            )
            conn.execute(
                update(t.operations).where(t.operations.c.id == op_id).values(updated_at=self.now())
            )

        return self._tx(set_)

    def release_operation(
        self,
        op_id: int,
        status: str,
        error: str | None = None,
        retry_at: float | None = None,
        count_attempt: bool = True,
    ) -> Deferred[Operation]:
        """
        Finish (succeeded/failed) or hand back (pending, to retry at C{retry_at}) an
        operation this worker claimed; C{count_attempt} False: a wait (its orchestrator is
        down) that does not use up one of its attempts.
        """

        def release(conn: Connection) -> Operation:
            values: dict[str, Any] = {
                "status": status,
                "error": error,
                "claimed_by": None,
                "lease_until": None,
                "updated_at": self.now(),
            }
            if retry_at is not None:
                values["next_attempt_at"] = retry_at
                if count_attempt:
                    values["attempts"] = t.operations.c.attempts + 1
            conn.execute(update(t.operations).where(t.operations.c.id == op_id).values(**values))
            return load_operation(conn, op_id)

        return self._tx(release)

    def due_now(self, op_ids: list[int]) -> Deferred[int]:
        """Make the pending operations C{op_ids} runnable at once (a wait ended); how many."""

        def due(conn: Connection) -> int:
            changed = conn.execute(
                update(t.operations)
                .where(and_(t.operations.c.id.in_(op_ids), t.operations.c.status == "pending"))
                .values(next_attempt_at=0.0)
            )
            return int(changed.rowcount or 0)

        return self._tx(due)

    def note_degraded_routers(self, op_id: int, names: list[str]) -> Deferred[None]:
        """
        Remember (in the operation's params, shown as its C{degraded_routers}) the routers
        that were down when one of its changes went to the others; they catch up later.
        """

        def note(conn: Connection) -> None:
            row = conn.execute(
                select(t.operations.c.params).where(t.operations.c.id == op_id)
            ).first()
            if row is None:
                return
            params = dict(row.params or {})
            params["degraded_routers"] = sorted({*params.get("degraded_routers", []), *names})
            conn.execute(
                update(t.operations).where(t.operations.c.id == op_id).values(params=params)
            )

        return self._tx(note)

    def retry_operation(self, op_id: int) -> Deferred[Operation]:
        """Make a failed operation runnable again from its first unfinished action."""

        def retry(conn: Connection) -> Operation:
            op = load_operation(conn, op_id)
            if op.status != "failed":
                raise Conflict("not_failed", "only a failed operation can be retried")
            try:
                with conn.begin_nested():
                    conn.execute(
                        update(t.operations)
                        .where(t.operations.c.id == op_id)
                        .values(
                            status="pending",
                            error=None,
                            attempts=0,
                            next_attempt_at=0.0,
                            updated_at=self.now(),
                        )
                    )
            except IntegrityError:
                raise Conflict(
                    "operation_running", "another operation is running on this site"
                ) from None
            conn.execute(
                update(t.actions)
                .where(and_(t.actions.c.operation_id == op_id, t.actions.c.status != "succeeded"))
                .values(status="pending", message="")
            )
            return load_operation(conn, op_id)

        return self._tx(retry)
