"""
Migration 0008 (the orchestrator pool) on a real PostgreSQL: up, the schema the code
declares, down and up again with a site placed on an orchestrator in between.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

import director.manager.migrations as migrations
from director.common.threads import InlineRunner
from director.manager.placement_store import PlacementStore
from director.manager.schema import metadata
from director.manager.store import Store, make_engine, migrate
from director.testing.manager import static_site_fields


def _result(d: object) -> object:
    out: list[object] = []
    d.addBoth(out.append)  # type: ignore[attr-defined]
    return out[0]


def test_orchestrators_migration_on_postgresql(postgres_database: str) -> None:
    engine = make_engine(postgres_database)
    try:
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        store = Store(engine, InlineRunner())
        records = PlacementStore(engine, InlineRunner())
        _result(store.create_user("alice", "student"))
        _result(store.create_site(static_site_fields("blog"), ["alice"], ("create_site", []), None))
        _result(records.put("main", "http://127.0.0.1:8100", "127.0.0.1:8180"))
        assert _result(records.place_unplaced("main")) == 1
        assert _result(store.get_site("blog")).orchestrator == "main"  # type: ignore[attr-defined]
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0007_backups")
        assert "orchestrators" not in inspect(engine).get_table_names()
        assert "orchestrator_id" not in {c["name"] for c in inspect(engine).get_columns("sites")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM site_members")).scalar() == 1
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert _result(store.get_site("blog")).orchestrator is None  # type: ignore[attr-defined]
    finally:
        engine.dispose()
