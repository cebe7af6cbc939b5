"""
The manager's store on a real PostgreSQL server: the 0002 migration starts site ids above
every id already given (live sites and deleted ones), and ids are never given twice.
"""

from __future__ import annotations

from director.common.threads import InlineRunner, fired
from director.manager.backups import BackupRecords
from director.testing.manager import static_site_fields
from director.testing.manager_database import Schema


def test_site_ids_never_reused_on_postgresql(postgres_schema: Schema) -> None:
    db = postgres_schema
    db.upgrade("0001")
    # A site deleted before the upgrade: only its operations remain.
    db.execute(
        "INSERT INTO operations (site_id, site_name, type, status, params,"
        " created_at, updated_at, attempts, next_attempt_at)"
        " VALUES (7, 'deleted', 'delete_site', 'succeeded', '{}', now(), now(), 0, 0)"
    )
    db.upgrade()
    store = db.store()
    fired(store.create_user("alice", "student"))

    def create(site_name: str) -> int:
        site, _ = fired(
            store.create_site(
                static_site_fields(site_name),
                ["alice"],
                ("create_site", ["apply_orchestrator"]),
                None,
            )
        )
        return int(site.id)

    first = create("first")
    assert first == 8
    fired(store.delete_site_rows(first))
    assert create("second") == 9


def test_backup_runs_on_postgresql(postgres_schema: Schema) -> None:
    """The backups migration, and a scheduled run claimed once by two managers, on PostgreSQL."""
    postgres_schema.upgrade()
    records = BackupRecords(postgres_schema.engine, InlineRunner())
    seen = fired(records.last_started())
    first = fired(records.claim_installation(seen, 24))
    assert first is not None
    assert fired(records.claim_installation(seen, 24)) is None
    fired(records.finish(first, "succeeded", 12.5, size=3 * 1024**3))
    summary = fired(records.summary())
    assert summary.last_success_duration == 12.5
    assert fired(records.recent(kind="installation"))[0].bytes == 3 * 1024**3
