"""What the admins tell users (banners) and what was done by whom (the audit log)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from director.manager import schema as t
from director.manager.models import User
from director.manager.store.base import StoreBase, aware, new_id, utc
from director.manager.store.rows import AuditEntry, Banner


def _banner(row: Any) -> Banner:
    return Banner(
        id=row.id,
        message=row.message,
        level=row.level,
        created_at=utc(row.created_at),
        expires_at=aware(row.expires_at),
    )


class NoticeStore(StoreBase):
    """Banners and the audit log."""

    def add_banner(
        self, message: str, level: str, created_by: int | None, expires_at: datetime | None
    ) -> Deferred[Banner]:
        def add(conn: Connection) -> Banner:
            result = conn.execute(
                insert(t.banners).values(
                    message=message,
                    level=level,
                    created_by=created_by,
                    created_at=self.now(),
                    expires_at=expires_at,
                )
            )
            row = conn.execute(select(t.banners).where(t.banners.c.id == new_id(result))).one()
            return _banner(row)

        return self._tx(add)

    def banners(self, active_at: datetime | None = None) -> Deferred[list[Banner]]:
        """Every banner, newest first; only those not expired at C{active_at} when given."""

        def list_(conn: Connection) -> list[Banner]:
            query = select(t.banners).order_by(t.banners.c.id.desc())
            if active_at is not None:
                query = query.where(
                    or_(t.banners.c.expires_at.is_(None), t.banners.c.expires_at > active_at)
                )
            return [_banner(r) for r in conn.execute(query)]

        return self._tx(list_)

    def delete_banner(self, banner_id: int) -> Deferred[bool]:
        return self._tx(
            lambda conn: (
                conn.execute(delete(t.banners).where(t.banners.c.id == banner_id)).rowcount > 0
            )
        )

    # -- audit -------------------------------------------------------------------------------

    def audit(
        self, user: User | None, action: str, target: str, details: dict[str, Any]
    ) -> Deferred[None]:
        def add(conn: Connection) -> None:
            conn.execute(
                insert(t.audit_log).values(
                    at=self.now(),
                    user_id=user.id if user else None,
                    username=user.username if user else "",
                    action=action,
                    target=target,
                    details=details,
                )
            )

        return self._tx(add)

    def list_audit(self, limit: int = 200) -> Deferred[list[AuditEntry]]:
        return self._tx(
            lambda conn: [
                AuditEntry(
                    at=r.at, user=r.username, action=r.action, target=r.target, details=r.details
                )
                for r in conn.execute(
                    select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit)
                )
            ]
        )
