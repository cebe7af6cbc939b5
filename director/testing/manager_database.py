"""
Where the manager's tests get their database: a SQLite file by default (a copy of one
migrated once per process: 1.5 to 9 ms, where running the migrations took 75), or, when
C{DIRECTOR_TEST_DATABASE_URL} names a PostgreSQL server, a PostgreSQL database of the test's own.

The PostgreSQL mode exists so the manager's whole suite also runs on the database several
managers share. A migrated database comes from a pool: made once with C{CREATE DATABASE ...
TEMPLATE} of a template migrated once per run, and emptied after each test that used it (its
connections ended, every row deleted, every sequence restarted), which is the state of a fresh
copy at a small part of the cost (C{bench/manager_test_databases.py}: 36 ms a test, where
CREATE + DROP took 200 to 260 ms). An empty, unmigrated database (for tests that migrate, or
run C{director init}) is created for the test and dropped after it. L{release_test_databases}
runs after every test (an autouse fixture in C{tests/conftest.py}). C{python
tests/with_postgres.py CMD...} runs CMD with a throw-away server and the variable set; C{make
unit-postgres} uses it.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from director.common.threads import InlineRunner
from director.manager.store import Store, make_engine, migrate
from director.manager.store.engine import run_migrations

#: postgresql+psycopg://user:password@host:port/dbname of a server the tests may create
#: databases on (the user needs CREATEDB); unset or empty: SQLite files.
ENVIRONMENT_VARIABLE = "DIRECTOR_TEST_DATABASE_URL"


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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Server:
    """This process's databases on the server: a template, a pool, and the test's own."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        #: every database made here starts with it, so several runs can share one server
        self.prefix = f"director_test_{secrets.token_hex(3)}"
        self._admin: Any = None
        self._template: str | None = None
        self._reset_sql = ""
        self._free: list[str] = []  # emptied, ready for a test
        self._in_use: list[str] = []  # the current test's, from the pool
        self._own: list[str] = []  # the current test's, dropped after it
        self._cleaners: dict[str, Any] = {}  # pool database -> its connection

    def _connect(self, dbname: str) -> Any:
        import psycopg

        return psycopg.connect(
            host=self.url.host,
            port=self.url.port,
            user=self.url.username,
            password=self.url.password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=10,
        )

    def admin(self) -> Any:
        if self._admin is None or self._admin.closed:
            self._admin = self._connect(self.url.database or "postgres")
        return self._admin

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def _new_name(self) -> str:
        return f"{self.prefix}_{secrets.token_hex(6)}"

    def template(self) -> str:
        """The migrated template (made on first use), and how to empty a copy of it."""
        if self._template is None:
            name = f"{self.prefix}_template"
            self.admin().execute(f"CREATE DATABASE {_quote(name)}")
            engine = make_engine(self.url_of(name))
            try:
                migrate(engine)
                # children before parents, so deleting breaks no foreign key
                ordered = inspect(engine).get_sorted_table_and_fkc_names()
                tables = [t for t, _ in reversed(ordered) if t and t != "alembic_version"]
                with engine.connect() as connection:
                    sequences = connection.exec_driver_sql(
                        "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
                    ).scalars()
                    self._reset_sql = "".join(
                        [f"DELETE FROM {_quote(t)};" for t in tables]  # noqa: S608 (catalog names)
                        + [f"ALTER SEQUENCE {_quote(s)} RESTART;" for s in sequences]
                    )
            finally:
                engine.dispose()
            self._template = name
        return self._template

    def migrated(self) -> str:
        if self._free:
            name = self._free.pop()
        else:
            name = self._new_name()
            self.admin().execute(
                f"CREATE DATABASE {_quote(name)} TEMPLATE {_quote(self.template())}"
                " STRATEGY FILE_COPY"
            )
        self._in_use.append(name)
        return self.url_of(name)

    def empty(self, for_test: bool = True) -> str:
        name = self._new_name()
        self.admin().execute(
            f"CREATE DATABASE {_quote(name)} TEMPLATE template0 STRATEGY FILE_COPY"
        )
        if for_test:
            self._own.append(name)
        return name

    def drop(self, name: str) -> None:
        cleaner = self._cleaners.pop(name, None)
        if cleaner is not None:
            cleaner.close()
        self.admin().execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")

    def release(self) -> None:
        """After a test: its own databases dropped, the pool's emptied for the next one."""
        while self._own:
            self.drop(self._own.pop())
        while self._in_use:
            name = self._in_use.pop()
            cleaner = self._cleaners.get(name)
            if cleaner is None or cleaner.closed:
                cleaner = self._cleaners[name] = self._connect(name)
            # connections the test left open (an engine it never disposed) go first
            cleaner.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            cleaner.execute(self._reset_sql)
            self._free.append(name)

    def close(self) -> None:
        """At the end of the run: every database made here dropped."""
        self.release()
        for name in [*self._free, *([self._template] if self._template else [])]:
            self.drop(name)
        self._free = []
        self._template = None
        if self._admin is not None:
            self._admin.close()
            self._admin = None


_servers: dict[str, _Server] = {}
_templates: dict[str, Path] = {}
_engines: list[Engine] = []
#: how many databases and engines the current test asked for
_uses = [0]


def _server() -> _Server:
    url = server_url()
    assert url is not None
    if url not in _servers:
        _servers[url] = _Server(url)
    return _servers[url]


def _sqlite_template() -> Path:
    """A SQLite file migrated once per process: a copy is a migrated database (1 ms, not 500)."""
    if "sqlite" not in _templates:
        path = Path(tempfile.mkdtemp(prefix="director-test-template-")) / "director.db"
        engine = make_engine(f"sqlite:///{path}")
        try:
            migrate(engine)
            with engine.connect() as connection:  # everything in the file, none in its WAL
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()
        atexit.register(shutil.rmtree, path.parent, True)
        _templates["sqlite"] = path
    return _templates["sqlite"]


def database_url(directory: Path, *, migrated: bool = True) -> str:
    """
    The URL of a database for one test: C{directory}/director.db, or a PostgreSQL database
    no other test uses at the same time. C{migrated}: at the newest schema; otherwise empty,
    for tests that run the migrations (or C{director init}) themselves.
    """
    _uses[0] += 1
    if not on_postgresql():
        path = directory / "director.db"
        if migrated:
            directory.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_sqlite_template(), path)
            path.chmod(0o600)
        return f"sqlite:///{path}"
    server = _server()
    return server.migrated() if migrated else server.url_of(server.empty())


@contextmanager
def shared_database(directory: Path) -> Iterator[str]:
    """
    An empty database for several tests (a module's daemons): C{directory}/director.db, or a
    new PostgreSQL database dropped when the block ends rather than after one test.
    """
    if not on_postgresql():
        yield f"sqlite:///{directory / 'director.db'}"
        return
    server = _server()
    name = server.empty(for_test=False)
    try:
        yield server.url_of(name)
    finally:
        server.drop(name)


def engine(url: str) -> Engine:
    """C{make_engine(url)}, disposed after the test (before its database is emptied)."""
    _uses[0] += 1
    made = make_engine(url)
    _engines.append(made)
    return made


class Schema:
    """
    A database moved by hand between schema revisions, and what migration tests look at:
    the same calls on SQLite and PostgreSQL (so rows are written with portable SQL).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def upgrade(self, revision: str = "head") -> None:
        migrate(self.engine, revision)

    def downgrade(self, revision: str) -> None:
        run_migrations(self.engine, "downgrade", revision)

    def execute(self, *statements: str) -> None:
        """Run C{statements} in one transaction (rows a migration must keep or change)."""
        with self.engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))

    def scalar(self, sql: str) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(text(sql)).scalar()

    def columns(self, table: str) -> set[str]:
        return {c["name"] for c in inspect(self.engine).get_columns(table)}

    def tables(self) -> set[str]:
        return set(inspect(self.engine).get_table_names())

    def differences(self) -> list[Any]:
        """How the schema differs from the one the code declares (none, after C{upgrade})."""
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        from director.manager.schema import metadata

        with self.engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), metadata))

    def store(self) -> Store:
        """The store on this database, run inline (C{director.common.threads.fired} reads it)."""
        return Store(self.engine, InlineRunner())


#: A member's site as rows of the revisions 0007 and 0008, whose migrations must keep them.
SITE_WITH_MEMBER = (
    "INSERT INTO users (id, username, full_name, email, role, is_active,"
    " accepted_guidelines, created_at, is_service)"
    " VALUES (1, 'alice', '', '', 'student', true, true, '2026-01-01', false)",
    "INSERT INTO sites (id, name, type, purpose, availability, description,"
    " image, packages, cpus, memory_mb, pids, client_max_body_size,"
    " admin_comments, created_at, public_comment)"
    " VALUES (1, 'blog', 'static', 'project', 'enabled', '', 'i', '[]',"
    " 1, 256, 100, '2m', '', '2026-01-01', '')",
    "INSERT INTO site_members VALUES (1, 1)",
)


def migrated_to(revision: str) -> Schema:
    """
    A database of the test's own (SQLite, or PostgreSQL with C{DIRECTOR_TEST_DATABASE_URL}),
    empty and migrated to C{revision}: for tests of the migrations after it.
    """
    directory = Path(tempfile.mkdtemp(prefix="director-migration-"))
    atexit.register(shutil.rmtree, directory, True)
    schema = Schema(engine(database_url(directory, migrated=False)))
    schema.upgrade(revision)
    return schema


def init_settings(url: str) -> list[str]:
    """C{director init} arguments that point the new config at C{url} (none for SQLite)."""
    if url.startswith("sqlite"):
        return []
    return ["--set", f'manager.database_url="{url}"']


def uses() -> int:
    """How many databases and engines the current test asked for (0: it has no store)."""
    return _uses[0]


def release_test_databases() -> None:
    """After each test: dispose its engines, then drop or empty its databases."""
    _uses[0] = 0
    while _engines:
        _engines.pop().dispose()
    for server in _servers.values():
        server.release()


def close() -> None:
    """At the end of the run: drop every database this process made."""
    release_test_databases()
    while _servers:
        _servers.popitem()[1].close()
