"""
Who belongs to a site: members with an account, and pending members (named before they
first signed in) who join when their account is made.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from director.manager import schema as t
from director.manager.store.base import Conflict


def member_sites(username: str) -> Any:
    return (
        select(t.site_members.c.site_id)
        .join(t.users, t.users.c.id == t.site_members.c.user_id)
        .where(t.users.c.username == username)
    )


def set_members(conn: Connection, site_id: int, usernames: list[str], moment: datetime) -> None:
    """
    The site's members are C{usernames}: those with an account now, the others when
    they first sign in (pending). At least one of a non-empty list must have an account.
    """
    rows = conn.execute(
        select(t.users.c.id, t.users.c.username).where(t.users.c.username.in_(usernames))
    ).all()
    if usernames and not rows:
        raise Conflict(
            "no_member", "a site needs at least one member who has signed in to Director"
        )
    conn.execute(delete(t.site_members).where(t.site_members.c.site_id == site_id))
    for row in rows:
        conn.execute(insert(t.site_members).values(site_id=site_id, user_id=row.id))
    conn.execute(delete(t.pending_members).where(t.pending_members.c.site_id == site_id))
    for username in sorted(set(usernames) - {r.username for r in rows}):
        conn.execute(
            insert(t.pending_members).values(site_id=site_id, username=username, created_at=moment)
        )


def attach_pending(conn: Connection, user_id: int, username: str) -> None:
    """A new account joins the sites it was added to before it existed."""
    pending = t.pending_members
    for row in conn.execute(select(pending.c.site_id).where(pending.c.username == username)):
        conn.execute(insert(t.site_members).values(site_id=row.site_id, user_id=user_id))
    conn.execute(delete(pending).where(pending.c.username == username))
