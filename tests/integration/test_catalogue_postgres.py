"""
Migration 0009 (catalogue fields, a site's nginx snippet) on a real PostgreSQL: up, the
schema the code declares, down (a hidden image is not public again) and up again.
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
from director.manager.schema import metadata
from director.manager.store import Store, make_engine, migrate
from director.testing.manager import static_site_fields


def _result(d: object) -> object:
    out: list[object] = []
    d.addBoth(out.append)  # type: ignore[attr-defined]
    return out[0]


def test_catalogue_migration_on_postgresql(postgres_database: str) -> None:
    engine = make_engine(postgres_database)
    try:
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        store = Store(engine, InlineRunner())
        _result(store.create_user("alice", "student"))
        _result(store.create_site(static_site_fields("blog"), ["alice"], ("create_site", []), None))
        _result(
            store.put_image(
                "director/node:18",
                "Node.js",
                "",
                "npm -v",
                False,
                visibility="hidden",
                logo="nodejs",
            )
        )
        site = _result(store.get_site("blog"))
        _result(store.update_site(site.id, {"nginx_snippet": "add_header X-A b;\n"}))  # type: ignore[attr-defined]
        assert _result(store.get_site("blog")).nginx_snippet == "add_header X-A b;\n"  # type: ignore[attr-defined]
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0008_orchestrators")
        assert "nginx_snippet" not in {c["name"] for c in inspect(engine).get_columns("sites")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT is_public FROM images")).scalar() is False
            assert conn.execute(text("SELECT COUNT(*) FROM site_members")).scalar() == 1
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            assert conn.execute(text("SELECT visibility FROM images")).scalar() == "hidden"
    finally:
        engine.dispose()
