"""Site requests: a student asks, a teacher approves, an admin creates the site."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from director.manager import schema as t
from director.manager.store.base import NotFound, StoreBase, new_id
from director.manager.store.rows import SiteRequest


class RequestStore(StoreBase):
    """Site requests."""

    def create_request(
        self, requester_id: int, teacher_id: int, name: str, activity: str, description: str
    ) -> Deferred[int]:
        def create(conn: Connection) -> int:
            result = conn.execute(
                insert(t.site_requests).values(
                    requester_id=requester_id,
                    teacher_id=teacher_id,
                    name=name,
                    activity=activity,
                    description=description,
                    status="pending-teacher",
                    created_at=self.now(),
                )
            )
            return new_id(result)

        return self._tx(create)

    def list_requests(self, user_id: int | None = None) -> Deferred[list[SiteRequest]]:
        def list_(conn: Connection) -> list[SiteRequest]:
            requester = t.users.alias("requester")
            teacher = t.users.alias("teacher")
            query = (
                select(
                    t.site_requests,
                    requester.c.username.label("requester"),
                    teacher.c.username.label("teacher"),
                )
                .join(requester, requester.c.id == t.site_requests.c.requester_id)
                .join(teacher, teacher.c.id == t.site_requests.c.teacher_id)
                .order_by(t.site_requests.c.id.desc())
            )
            if user_id is not None:
                query = query.where(
                    or_(
                        t.site_requests.c.requester_id == user_id,
                        t.site_requests.c.teacher_id == user_id,
                    )
                )
            return [
                SiteRequest(
                    id=r.id,
                    name=r.name,
                    activity=r.activity,
                    description=r.description,
                    status=r.status,
                    requester=r.requester,
                    teacher=r.teacher,
                    site_id=r.site_id,
                    created_at=r.created_at,
                    public_comment=r.public_comment,
                    admin_comment=r.admin_comment,
                )
                for r in conn.execute(query)
            ]

        return self._tx(list_)

    def set_request_comments(self, request_id: int, values: dict[str, str]) -> Deferred[bool]:
        """Set a request's public_comment and/or admin_comment; False if there is none."""
        return self._tx(
            lambda conn: (
                conn.execute(
                    update(t.site_requests)
                    .where(t.site_requests.c.id == request_id)
                    .values(**values)
                ).rowcount
                > 0
            )
        )

    def set_request_status(
        self, request_id: int, status: str, site_id: int | None = None
    ) -> Deferred[None]:
        def set_(conn: Connection) -> None:
            values: dict[str, Any] = {"status": status}
            if site_id is not None:
                values["site_id"] = site_id
            if (
                conn.execute(
                    update(t.site_requests)
                    .where(t.site_requests.c.id == request_id)
                    .values(**values)
                ).rowcount
                == 0
            ):
                raise NotFound(request_id)

        return self._tx(set_)
