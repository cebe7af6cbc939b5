"""
Migration 0008 (the orchestrator pool) on a real PostgreSQL: up, the schema the code
declares, down and up again with a site placed on an orchestrator in between.
"""

from __future__ import annotations

from director.common.threads import InlineRunner, fired
from director.manager.placement_store import PlacementStore
from director.testing.manager import static_site_fields
from director.testing.manager_database import Schema


def test_orchestrators_migration_on_postgresql(postgres_schema: Schema) -> None:
    db = postgres_schema
    db.upgrade()
    assert db.differences() == []
    store = db.store()
    records = PlacementStore(db.engine, InlineRunner())
    fired(store.create_user("alice", "student"))
    fired(store.create_site(static_site_fields("blog"), ["alice"], ("create_site", []), None))
    fired(records.put("main", "http://127.0.0.1:8100", "127.0.0.1:8180"))
    assert fired(records.place_unplaced("main")) == 1
    site = fired(store.get_site("blog"))
    assert site is not None and site.orchestrator == "main"
    db.downgrade("0007_backups")
    assert "orchestrators" not in db.tables()
    assert "orchestrator_id" not in db.columns("sites")
    assert db.scalar("SELECT COUNT(*) FROM site_members") == 1
    db.upgrade()
    assert db.differences() == []
    site = fired(store.get_site("blog"))
    assert site is not None and site.orchestrator is None
