"""
What one manager test's database costs: a migrated SQLite file, and on PostgreSQL a copy of the
migrated template (both CREATE DATABASE strategies) and its drop.

    .venv/bin/python tests/with_postgres.py .venv/bin/python bench/manager_test_databases.py

Without DIRECTOR_TEST_DATABASE_URL only the SQLite figure is printed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from director.manager.store import make_engine, migrate
from director.testing import manager_database

ROUNDS = 20


def timed(f: object, rounds: int = ROUNDS) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        f()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


def show(label: str, ms: list[float]) -> None:
    print(f"{label:58s} median {statistics.median(ms):7.1f} ms  max {max(ms):7.1f} ms")


def one_test_database() -> None:
    """What a ManagerHarness does with its database, and the clean-up after the test."""
    url = manager_database.database_url(Path(tempfile.mkdtemp()))
    with manager_database.engine(url).connect() as connection:
        connection.execute(text("SELECT count(*) FROM users")).scalar()
    manager_database.release_test_databases()


def main() -> None:
    on_pg = manager_database.on_postgresql()
    if on_pg:
        server = manager_database._server()
        start = time.perf_counter()
        template = server.template()
        print(f"template migrated once per run in {(time.perf_counter() - start) * 1000:.0f} ms")
        admin = server.admin()
        for strategy in ("WAL_LOG", "FILE_COPY"):

            def create_drop(strategy: str = strategy) -> None:
                name = f"{template}_bench"
                admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY {strategy}')
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

            show(f"PostgreSQL CREATE (TEMPLATE, {strategy}) + DROP", timed(create_drop))
        show(
            "PostgreSQL: one test's database (from the pool, query, emptied)",
            timed(one_test_database),
        )
        manager_database.close()
    else:
        show("SQLite: one test's database (copy of the migrated file, connect, query)",
             timed(one_test_database))  # fmt: skip

        def migrated_afresh() -> None:
            engine = make_engine(f"sqlite:///{tempfile.mkdtemp()}/director.db")
            migrate(engine)
            engine.dispose()

        show(
            "SQLite: the migrations run afresh (what each test did before)", timed(migrated_afresh)
        )


if __name__ == "__main__":
    main()
