"""
Backups' domain logic, without I/O: what a restore asks for (L{restore_choice}), when the
next run is due (L{backup_due}), and what a user is shown of a run (L{run_view}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from director.manager.models import ValidationError
from director.manager.store import Conflict
from director.manager.store.rows import BackupRun

#: restic's host field (retention group) of the manager's own snapshots
MANAGER_GROUP = "director-manager"
SNAPSHOT_ID = re.compile(r"^[0-9a-f]{8,64}$")
#: a site backup may take this long (its orchestrator runs restic with its own limit)
SITE_BACKUP_TIMEOUT = 6 * 3600.0

RESTORE_ACTIONS = [
    "apply_orchestrator",
    "restore_files",
    "restore_database",
    "restart_process",
    "apply_router",
]


@dataclass(frozen=True)
class RestoreChoice:
    """What a restore puts back: all the files, one path of them, and/or the database."""

    files: bool
    path: str | None
    database: bool

    def params(self, snapshot: str) -> dict[str, Any]:
        return {
            "snapshot": snapshot,
            "files": self.files,
            "path": self.path,
            "database": self.database,
        }


#: a path inside the site, as the files API takes it (no "." or ".." segment, no NUL or \\)
RESTORE_PATH = re.compile(r"^(?!(.*/)?\.\.?(/|$))[^\\\x00]*$")


def restore_choice(body: dict[str, Any], has_database: bool) -> RestoreChoice:
    """
    C{{"files": bool, "path": str, "database": bool}}: the files (all, or only C{path}) unless
    C{files} is false, and the database unless C{database} is false or the site has none.
    """
    files, path, database = body.get("files", True), body.get("path"), body.get("database")
    for name, value in (("files", files), ("database", database)):
        if value is not None and not isinstance(value, bool):
            raise ValidationError(name, "true or false")
    if path is not None:
        if not isinstance(path, str) or not 1 <= len(path) <= 1024 or not RESTORE_PATH.match(path):
            raise ValidationError("path", "a path inside the site, like public/index.html")
        if not files:
            raise ValidationError("path", "a path is restored with the files; drop files: false")
        path = path.strip("/") or None
    if database and not has_database:
        raise Conflict("no_database", "the site has no database to restore into")
    if database is False and not files:
        raise ValidationError("files", "choose the files, a path, and/or the database")
    if database is None:
        database = has_database
    if not files and not database:
        raise Conflict("no_database", "the site has no database to restore into")
    return RestoreChoice(bool(files), path, bool(database))


#: seconds after the manager starts before the first run ever is due (not at once, so that a
#: first start, or a test, is not slowed down by it)
FIRST_RUN_DELAY = 600.0


def backup_due(
    last_started: datetime | None, now: datetime, interval_hours: float, uptime: float
) -> bool:
    """
    Is the next scheduled run due: the last started an interval ago, or there was none yet
    and the manager has been up for L{FIRST_RUN_DELAY} seconds?
    """
    if last_started is None:
        return uptime >= FIRST_RUN_DELAY
    return now - last_started >= timedelta(hours=interval_hours)


def run_view(row: BackupRun, admin: bool) -> dict[str, Any]:
    """A backup run for the API; members are not shown why a run failed (admins are)."""
    view: dict[str, Any] = {
        "id": row.id,
        "kind": row.kind,
        "site": row.site_name or None,
        "status": row.status,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "duration": row.duration,
        "snapshot": row.snapshot,
        "bytes": row.bytes,
    }
    if row.status == "failed":
        view["error"] = row.error if admin else "the backup failed; the administrators see why"
    return view
