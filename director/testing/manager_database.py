"""
Where the manager's tests get their database: a SQLite file by default, or, when
C{DIRECTOR_TEST_DATABASE_URL} names a PostgreSQL server, a fresh database of its own per test.

The PostgreSQL mode exists so the manager's whole suite also runs on the database several
managers share: each test gets C{CREATE DATABASE ... TEMPLATE} of a template migrated once per
process (copying it is much faster than running the migrations again), and
L{release_test_databases} (an autouse fixture in C{tests/conftest.py}) disposes the test's
engines and drops its databases after it. C{python tests/with_postgres.py CMD...} runs CMD
with a throw-away server and the variable set; C{make unit-postgres} uses it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from director.manager.store import make_engine, migrate

#: postgresql+psycopg://user:password@host:port/dbname of a server the tests may create
#: databases on (the user needs CREATEDB); unset or empty: SQLite files.
ENVIRONMENT_VARIABLE = "DIRECTOR_TEST_DATABASE_URL"

#: Every database this process creates starts with this (and a random part of its own), so
#: several test runs can share one server.
_PREFIX = f"director_test_{secrets.token_hex(3)}"

_state: dict[str, Any] = {"template": None, "admin": None}
_databases: list[str] = []
_engines: list[Engine] = []
#: how many databases and engines the current test asked for
_uses = [0]


def server_url() -> str | None:
    """The PostgreSQL server's URL from the environment, or None for SQLite."""
    url = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not url:
        return None
    if not url.startswith("postgresql"):
        raise ValueError(f"{ENVIRONMENT_VARIABLE} must be a postgresql+psycopg:// URL, got {url!r}")
    return url


def on_postgresql() -> bool:
    return server_url() is not None


def _admin() -> Any:
    """One autocommit psycopg connection to the server's maintenance database."""
    import psycopg

    if _state["admin"] is None or _state["admin"].closed:
        url = make_url(server_url() or "")
        _state["admin"] = psycopg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
            connect_timeout=10,
        )
    return _state["admin"]


def _url_of(name: str) -> str:
    return make_url(server_url() or "").set(database=name).render_as_string(hide_password=False)


def _template() -> str:
    """The migrated template database, made on first use in this process."""
    if _state["template"] is None:
        name = f"{_PREFIX}_template"
        _admin().execute(f'CREATE DATABASE "{name}"')
        engine = make_engine(_url_of(name))
        try:
            migrate(engine)
        finally:
            engine.dispose()
        _state["template"] = name
    return str(_state["template"])


def database_url(directory: Path, *, migrated: bool = True) -> str:
    """
    The URL of a database for one test: C{directory}/director.db, or a new PostgreSQL
    database (dropped after the test). C{migrated}: at the newest schema; otherwise empty,
    for tests that run the migrations (or C{director init}) themselves.
    """
    _uses[0] += 1
    if not on_postgresql():
        url = f"sqlite:///{directory / 'director.db'}"
        if migrated:
            engine = make_engine(url)
            try:
                migrate(engine)
            finally:
                engine.dispose()
        return url
    name = f"{_PREFIX}_{secrets.token_hex(6)}"
    template = _template() if migrated else "template0"
    _admin().execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    _databases.append(name)
    return _url_of(name)


def engine(url: str) -> Engine:
    """C{make_engine(url)}, disposed after the test (before its database is dropped)."""
    _uses[0] += 1
    made = make_engine(url)
    _engines.append(made)
    return made


def init_settings(url: str) -> list[str]:
    """C{director init} arguments that point the new config at C{url} (none for SQLite)."""
    if url.startswith("sqlite"):
        return []
    return ["--set", f'manager.database_url="{url}"']


def uses() -> int:
    """How many databases and engines the current test asked for (0: it has no store)."""
    return _uses[0]


def release_test_databases() -> None:
    """Dispose the current test's engines and drop its databases (connections and all)."""
    _uses[0] = 0
    while _engines:
        _engines.pop().dispose()
    while _databases:
        name = _databases.pop()
        _admin().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_template() -> None:
    """At the end of the run: drop the template and close the admin connection."""
    release_test_databases()
    if _state["template"] is not None:
        _admin().execute(f'DROP DATABASE IF EXISTS "{_state["template"]}" WITH (FORCE)')
        _state["template"] = None
    if _state["admin"] is not None:
        _state["admin"].close()
        _state["admin"] = None
