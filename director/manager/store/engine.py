"""Opening the manager's database (SQLite or PostgreSQL) and migrating it with Alembic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine


def _private_sqlite_file(url: str) -> None:
    """
    Create the SQLite file 0600 (or make it so): it holds password hashes, session and token
    hashes and database passwords. SQLite gives its -wal and -shm files the same mode.
    """
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for extra in ("", "-wal", "-shm"):
        candidate = Path(str(path) + extra)
        if candidate.exists():
            candidate.chmod(0o600)


def make_engine(url: str) -> Engine:
    """An engine for C{url}; SQLite gets WAL and foreign keys, and a file only we may read."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # Sessions in UTC: timestamps come back as +00:00 (as on SQLite), not in the server's zone.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        connect_args={"connect_timeout": 10, "options": "-c timezone=UTC"},
    )


def migrate(engine: Engine, revision: str = "head") -> None:
    """
    Bring the schema up to date (blocking; at start-up and from `director init`), or to
    C{revision} (the migration tests).
    """
    run_migrations(engine, "upgrade", revision)


def run_migrations(engine: Engine, direction: str, revision: str) -> None:
    """Alembic's C{upgrade} or C{downgrade} to C{revision} in one transaction."""
    from alembic import command
    from alembic.config import Config

    import director.manager.migrations as migrations

    step = {"upgrade": command.upgrade, "downgrade": command.downgrade}[direction]
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        step(cfg, revision)
