"""
The manager's store on a real PostgreSQL server: the 0002 migration starts site ids above
every id already given (live sites and deleted ones), and ids are never given twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

import director.manager.migrations as migrations
from director.common.threads import InlineRunner
from director.manager.models import DEFAULT_LIMITS
from director.manager.store import Store, make_engine


def test_site_ids_never_reused_on_postgresql(postgres_database: str) -> None:
    engine = make_engine(postgres_database)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0001")
            # A site deleted before the upgrade: only its operations remain.
            connection.execute(
                text(
                    "INSERT INTO operations (site_id, site_name, type, status, params,"
                    " created_at, updated_at, attempts, next_attempt_at)"
                    " VALUES (7, 'deleted', 'delete_site', 'succeeded', '{}', now(), now(), 0, 0)"
                )
            )
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
        store = Store(engine, InlineRunner())

        def result(d: Deferred[Any]) -> Any:
            out: list[Any] = []
            d.addBoth(out.append)
            if isinstance(out[0], Failure):
                out[0].raiseException()
            return out[0]

        result(store.create_user("alice", "student"))

        def create(site_name: str) -> int:
            site, _ = result(
                store.create_site(
                    {
                        "name": site_name,
                        "type": "static",
                        "purpose": "project",
                        "availability": "enabled",
                        "description": "",
                        "image": "director/python:3",
                        "packages": [],
                        "limits": dict(DEFAULT_LIMITS),
                    },
                    ["alice"],
                    ("create_site", ["apply_orchestrator"]),
                    None,
                )
            )
            return int(site.id)

        first = create("first")
        assert first == 8
        result(store.delete_site_rows(first))
        assert create("second") == 9
    finally:
        engine.dispose()


def test_backup_runs_on_postgresql(postgres_database: str) -> None:
    """The backups migration, and a scheduled run claimed once by two managers, on PostgreSQL."""
    from director.manager.backups import BackupRecords
    from director.manager.store import migrate

    engine = make_engine(postgres_database)
    try:
        migrate(engine)
        records = BackupRecords(engine, InlineRunner())

        def result(d: Deferred[Any]) -> Any:
            out: list[Any] = []
            d.addBoth(out.append)
            if isinstance(out[0], Failure):
                out[0].raiseException()
            return out[0]

        seen = result(records.last_started())
        first = result(records.claim_installation(seen, 24))
        assert first is not None
        assert result(records.claim_installation(seen, 24)) is None
        result(records.finish(first, "succeeded", 12.5, size=3 * 1024**3))
        summary = result(records.summary())
        assert summary.last_success_duration == 12.5
        assert result(records.recent(kind="installation"))[0].bytes == 3 * 1024**3
    finally:
        engine.dispose()
