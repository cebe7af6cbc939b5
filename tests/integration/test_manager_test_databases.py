"""
The manager tests' databases on a real PostgreSQL server (director.testing.manager_database):
what a test gets is migrated and empty, whatever the test before it left behind.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from services import PostgresServer
from sqlalchemy import text

from director.testing import manager_database


def _names(server: PostgresServer, prefix: str) -> set[str]:
    with psycopg.connect(server.dsn(), autocommit=True, connect_timeout=10) as admin:
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)
        ).fetchall()
    return {r[0] for r in rows}


def test_each_test_gets_a_migrated_empty_database(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (
        f"postgresql+psycopg://{postgres_server.admin_user}:{postgres_server.admin_password}"
        f"@{postgres_server.host}:{postgres_server.port}/postgres"
    )
    monkeypatch.setenv(manager_database.ENVIRONMENT_VARIABLE, url)
    try:
        first = manager_database.database_url(tmp_path)
        server = manager_database._server()
        engine = manager_database.engine(first)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (username, full_name, email, role, is_active,"
                    " accepted_guidelines, created_at)"
                    " VALUES ('alice', '', '', 'student', true, true, now())"
                )
            )
        # a connection the test leaves open, in a transaction, holding a row lock
        leftover = manager_database.make_engine(first).connect()
        leftover.execute(text("SELECT * FROM users FOR UPDATE")).all()
        other = manager_database.database_url(tmp_path, migrated=False)
        assert other.rsplit("/", 1)[1] in _names(postgres_server, server.prefix)

        manager_database.release_test_databases()

        # the unmigrated one is gone; the migrated one is emptied and comes back next time
        assert other.rsplit("/", 1)[1] not in _names(postgres_server, server.prefix)
        again = manager_database.database_url(tmp_path)
        assert again == first
        engine = manager_database.engine(again)
        with engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM users")).scalar() == 0
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            connection.execute(
                text(
                    "INSERT INTO users (username, full_name, email, role, is_active,"
                    " accepted_guidelines, created_at)"
                    " VALUES ('bob', '', '', 'student', true, true, now())"
                )
            )
            # sequences restarted: the first row of a fresh database
            assert connection.execute(text("SELECT id FROM users")).scalar() == 1
        # two at once are two databases
        second = manager_database.database_url(tmp_path)
        assert second != again
        leftover.invalidate()  # its server process was ended: nothing to roll back
    finally:
        manager_database.close()
    assert _names(postgres_server, server.prefix) == set()
