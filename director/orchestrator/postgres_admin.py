"""
Site databases on a PostgreSQL server (L{PostgresAdmin}), through psycopg in the databases'
pool: a site's user owns its database and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql
from zope.interface import implementer

from director.common.threads import Runner
from director.contract.databases import DATABASE_KINDS as DATABASE_KINDS
from director.contract.databases import DatabaseKind as DatabaseKind
from director.orchestrator.database_admin_base import (
    DatabaseAdminBase,
    DatabaseError,
    DatabaseHost,
    IDatabaseAdmin,
    QueryResult,
    SiteDatabase,
    _first_line,
    _result,
)


@implementer(IDatabaseAdmin)
class PostgresAdmin(DatabaseAdminBase):
    """Site databases on PostgreSQL (psycopg 3), administered through the C{postgres} db."""

    kind: DatabaseKind = "postgres"

    def __init__(self, runner: Runner, host: DatabaseHost) -> None:
        super().__init__(runner)
        if host.kind != "postgres":
            raise ValueError(f"PostgresAdmin needs a postgres host, not {host.kind!r}")
        self._host = host

    @contextmanager
    def _admin(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        host = self._host
        try:
            conn = psycopg.connect(
                host=host.admin_host,
                port=host.admin_port,
                user=host.admin_user,
                password=host.admin_password,
                dbname=dbname,
                autocommit=True,
                connect_timeout=max(2, host.connect_timeout),
                application_name="director-orchestrator",
                options=f"-c statement_timeout={int(host.admin_statement_timeout * 1000)}",
            )
        except psycopg.Error as e:
            raise DatabaseError(
                "unavailable",
                f"cannot log in to PostgreSQL at {host.admin_host}:{host.admin_port} as "
                f"{host.admin_user}: {_first_line(e)}",
            ) from e
        try:
            with conn:
                yield conn
        except psycopg.Error as e:
            raise DatabaseError("server_error", f"PostgreSQL: {_first_line(e)}") from e

    def _verifier(self, conn: psycopg.Connection[Any], site_db: SiteDatabase) -> str:
        """
        The SCRAM verifier of the password, computed here so the password itself never
        reaches the server (nor its statement log).
        """
        verifier: bytes = conn.pgconn.encrypt_password(
            site_db.password.encode(), site_db.username.encode(), b"scram-sha-256"
        )
        return verifier.decode("ascii")

    def _thd_create(self, site_db: SiteDatabase) -> None:
        user = pg_sql.Identifier(site_db.username)
        db = pg_sql.Identifier(site_db.name)
        limit = pg_sql.Literal(self._connection_limit())
        with self._admin() as conn:
            # CREATE/ALTER ROLE is a utility statement and PostgreSQL binds parameters only in
            # plannable ones, so ... PASSWORD $1 is a syntax error: the verifier goes in as a
            # quoted literal (psycopg.sql.Literal) instead.
            password = pg_sql.Literal(self._verifier(conn, site_db))
            try:
                conn.execute(
                    pg_sql.SQL(
                        "CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT {} NOSUPERUSER "
                        "NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                    ).format(user, password, limit)
                )
            except pg_errors.DuplicateObject:
                conn.execute(
                    pg_sql.SQL("ALTER ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT {}").format(
                        user, password, limit
                    )
                )
            # The site user owns its database, so on PostgreSQL 15 (where the public schema
            # belongs to pg_database_owner) it may create tables there.
            try:
                conn.execute(pg_sql.SQL("CREATE DATABASE {} OWNER {}").format(db, user))
            except pg_errors.DuplicateDatabase:
                conn.execute(pg_sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, user))
            # Nobody else may connect (PUBLIC has CONNECT and TEMP on a new database).
            conn.execute(pg_sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        # Schema privileges live in each database: grant while connected to the site's own
        # database (the original ran this in `postgres`); needed before 15 and for old dbs.
        with self._admin(site_db.name) as conn:
            conn.execute(pg_sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(user))

    def _connection_limit(self) -> int:
        limit = self._host.site_connection_limit
        return -1 if limit is None else limit

    def _thd_set_password(self, site_db: SiteDatabase) -> None:
        with self._admin() as conn:
            statement = pg_sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                pg_sql.Identifier(site_db.username), pg_sql.Literal(self._verifier(conn, site_db))
            )
            try:
                conn.execute(statement)
            except pg_errors.UndefinedObject as e:
                raise DatabaseError(
                    "not_found", f"there is no database user {site_db.username!r}"
                ) from e

    def _thd_drop(self, name: str, username: str) -> None:
        with self._admin() as conn:
            # DROP DATABASE refuses while anyone is connected; WITH (FORCE) would also end
            # them, but the user's sessions in other databases must end too.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE (datname = %s OR usename = %s) AND pid <> pg_backend_pid()",
                (name, username),
            )
            conn.execute(
                pg_sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    pg_sql.Identifier(name)
                )
            )
            conn.execute(pg_sql.SQL("DROP ROLE IF EXISTS {}").format(pg_sql.Identifier(username)))

    def _thd_exists(self, name: str) -> bool:
        with self._admin() as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            return row is not None

    def _thd_query(
        self, site_db: SiteDatabase, sql: str, timeout_seconds: float, max_rows: int
    ) -> QueryResult:
        host = self._host
        try:
            # The admin address, not the container one: the orchestrator may not be on the
            # containers' network. The time limit (SET statement_timeout, given as a login
            # option) is in force before any site SQL runs.
            conn = psycopg.connect(
                host=host.admin_host,
                port=host.admin_port,
                user=site_db.username,
                password=site_db.password,
                dbname=site_db.name,
                autocommit=True,
                connect_timeout=max(2, host.connect_timeout),
                application_name="director-query",
                options=f"-c statement_timeout={max(1, int(timeout_seconds * 1000))}",
            )
        except (psycopg.Error, UnicodeError) as e:  # UnicodeError: a host name IDNA refuses
            raise _postgres_login_error(site_db, e) from e
        try:
            with conn:
                cur = conn.cursor()
                # prepare=True sends the text as one protocol-level prepared statement, which
                # PostgreSQL refuses to hold more than one statement; no parameters, so a %
                # in the text is just a character.
                cur.execute(sql, prepare=True)
                if cur.description is None:
                    return _result([], [], cur.rowcount, max_rows)
                columns = [d.name for d in cur.description]
                return _result(columns, cur.fetchmany(max_rows + 1), cur.rowcount, max_rows)
        except pg_errors.QueryCanceled as e:
            raise DatabaseError(
                "query_timeout", f"the statement ran longer than {timeout_seconds:g} s"
            ) from e
        except psycopg.Error as e:
            if e.sqlstate is None:
                raise DatabaseError("unavailable", f"PostgreSQL: {_first_line(e)}") from e
            raise DatabaseError("query_failed", _first_line(e)) from e


def _postgres_login_error(site_db: SiteDatabase, error: Exception) -> DatabaseError:
    """
    Sort a failed site login. libpq gives no SQLSTATE for these, only text: a FATAL line means
    the server answered (bad password, no such database, no CONNECT right).
    """
    text = str(error)
    if "too many connections" in text:
        return DatabaseError("unavailable", f"PostgreSQL: {_first_line(error)}")
    if "FATAL" in text:
        return DatabaseError(
            "access_denied",
            f"{site_db.username} cannot log in to database {site_db.name}: "
            + text.split("FATAL:", 1)[-1].strip().splitlines()[0],
        )
    return DatabaseError("unavailable", f"PostgreSQL: {_first_line(error)}")
