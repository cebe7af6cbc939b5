"""
The rows the store returns that are not domain models of their own (those are in
L{director.manager.models} and L{director.manager.schedules}): frozen, typed, each with the
JSON form the API has always given it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from director.contract.databases import DatabaseHost


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class ApiToken:
    """One of a user's API tokens, never its secret (only its hash is kept)."""

    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    expired: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "expires_at": _iso(self.expires_at),
            "last_used_at": _iso(self.last_used_at),
            "expired": self.expired,
        }


@dataclass(frozen=True)
class SshKey:
    """A public key its user may sign in to the SSH shell with."""

    id: int
    fingerprint: str
    comment: str
    public_key: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Banner:
    """A message the admins show every dashboard page, until it expires."""

    id: int
    message: str
    level: str
    created_at: datetime
    expires_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message": self.message,
            "level": self.level,
            "created_at": self.created_at.isoformat(),
            "expires_at": _iso(self.expires_at),
        }


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which target, and when (C{user}: the username, "" for nobody)."""

    at: datetime
    user: str
    action: str
    target: str
    details: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "user": self.user,
            "action": self.action,
            "target": self.target,
            "details": self.details,
        }


@dataclass(frozen=True)
class Image:
    """An image of the catalogue sites are built on (C{name}: the Docker reference)."""

    id: int
    name: str
    friendly_name: str
    description: str
    setup_command: str | None
    is_default: bool
    #: a curated icon name (manager/catalogue.py LOGOS), or None: a letter badge
    logo: str | None = None
    #: everyone | teachers | hidden (admins only)
    visibility: str = "everyone"
    #: a dynamic site's first run.sh (None: by the image's name, catalogue.py)
    run_template: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatabaseHostRecord:
    """
    A database server site databases are made on: how the orchestrator reaches it as
    admin, and (C{container_*}, when different) how site containers reach it.
    """

    id: int
    kind: str
    admin_host: str
    admin_port: int
    admin_user: str
    admin_password: str
    container_host: str | None
    container_port: int | None

    def to_json(self, show_password: bool = True) -> dict[str, Any]:
        """Its API form; without C{show_password}, C{admin_password} is null."""
        shown = asdict(self)
        if not show_password:
            shown["admin_password"] = None
        return shown

    def admin(self) -> DatabaseHost:
        """The host as the orchestrator's contract carries it (without the id)."""
        return DatabaseHost.from_record(self.to_json())


@dataclass(frozen=True)
class SiteRequest:
    """A student's request for a site, with the usernames of the student and the teacher."""

    id: int
    name: str
    activity: str
    description: str
    status: str
    requester: str
    teacher: str
    site_id: int | None
    created_at: datetime
    public_comment: str
    admin_comment: str

    def to_json(self, admin: bool = True) -> dict[str, Any]:
        """Its API form; C{admin_comment} only for administrators."""
        shown = {
            "id": self.id,
            "name": self.name,
            "activity": self.activity,
            "description": self.description,
            "status": self.status,
            "requester": self.requester,
            "teacher": self.teacher,
            "site_id": self.site_id,
            "created_at": self.created_at.isoformat(),
            "public_comment": self.public_comment,
            "admin_comment": self.admin_comment,
        }
        if not admin:
            del shown["admin_comment"]
        return shown


@dataclass(frozen=True)
class BackupRun:
    """
    A row of C{backup_runs}: one part of a backup run (a site, the manager) or the run itself
    (C{installation}). Its times are ISO text, as the API shows them.
    """

    id: int
    kind: str
    site_id: int | None
    site_name: str
    status: str  # running | succeeded | failed
    started_at: str | None
    finished_at: str | None
    duration: float | None
    snapshot: str | None
    bytes: int | None
    error: str | None


@dataclass(frozen=True)
class BackupSummary:
    """The last successful whole run, and how many parts' latest backup failed."""

    last_success_at: datetime | None
    last_success_duration: float | None
    failing: int
