"""
Site databases on a MySQL or MariaDB server (L{MySQLAdmin}), through PyMySQL in the
databases' pool: a site's user is granted its own database only (its name's C{_} escaped in
the grant), and a query past its time is stopped on the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
from pymysql.cursors import SSCursor
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
    log,
    validate_identifier,
)

_ER_DBACCESS_DENIED = 1044
_ER_ACCESS_DENIED = 1045
_ER_BAD_DB = 1049
_ER_ACCESS_DENIED_NO_PASSWORD = 1698  # MariaDB, at times, for a user that does not exist
_ER_CANNOT_USER = 1396
_ER_NO_SUCH_THREAD = 1094
_ER_STATEMENT_TIMEOUT = 1969  # MariaDB max_statement_time
_ER_QUERY_TIMEOUT = 3024  # MySQL max_execution_time
_CR_SERVER_LOST = 2013

#: seconds the client waits past the server's own limit before it gives up on its own
_CLIENT_GRACE_SECONDS = 5.0


def _backtick(name: str) -> str:
    """A validated identifier in backticks (validation rules out backticks inside)."""
    return f"`{validate_identifier(name)}`"


def _grant_pattern(name: str) -> str:
    """
    A database name for a GRANT, where C{_} is a wildcard: escaped, C{site_1} cannot also
    match C{siteX1}.
    """
    return _backtick(name).replace("_", "\\_")


@implementer(IDatabaseAdmin)
class MySQLAdmin(DatabaseAdminBase):
    """
    Site databases on MariaDB or MySQL 8 (PyMySQL). Users are C{'site_x'@'%'}; statements
    are the ones both servers accept (C{ALTER USER ... IDENTIFIED BY}, not C{PASSWORD()}).
    """

    kind: DatabaseKind = "mysql"

    def __init__(self, runner: Runner, host: DatabaseHost) -> None:
        super().__init__(runner)
        if host.kind != "mysql":
            raise ValueError(f"MySQLAdmin needs a mysql host, not {host.kind!r}")
        self._host = host

    def _connect_args(self, user: str, password: str, read_timeout: float) -> dict[str, Any]:
        host = self._host
        where: dict[str, Any] = (
            {"unix_socket": host.admin_host}
            if host.admin_host.startswith("/")
            else {"host": host.admin_host, "port": host.admin_port}
        )
        return {
            **where,
            "user": user,
            "password": password,
            "autocommit": True,
            "charset": "utf8mb4",
            "connect_timeout": host.connect_timeout,
            "read_timeout": read_timeout,
            "write_timeout": read_timeout,
        }

    @contextmanager
    def _admin(self) -> Iterator[Any]:
        host = self._host
        try:
            conn = pymysql.connect(
                **self._connect_args(
                    host.admin_user, host.admin_password, host.admin_statement_timeout
                )
            )
        except pymysql.MySQLError as e:
            raise DatabaseError(
                "unavailable",
                f"cannot log in to MySQL at {host.admin_host}:{host.admin_port} as "
                f"{host.admin_user}: {_mysql_message(e)}",
            ) from e
        try:
            yield conn.cursor()
        except pymysql.MySQLError as e:
            raise DatabaseError("server_error", f"MySQL: {_mysql_message(e)}") from e
        finally:
            _close_quietly(conn)

    def _thd_create(self, site_db: SiteDatabase) -> None:
        user, password = site_db.username, site_db.password
        limit = self._host.site_connection_limit or 0
        with self._admin() as cur:
            # IF NOT EXISTS leaves an existing user's password alone: ALTER USER sets it.
            cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (user, password))
            cur.execute(
                "ALTER USER %s@'%%' IDENTIFIED BY %s WITH MAX_USER_CONNECTIONS %s",
                (user, password, limit),
            )
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {_backtick(site_db.name)} CHARACTER SET utf8mb4"
            )
            cur.execute(
                f"GRANT ALL PRIVILEGES ON {_grant_pattern(site_db.name)}.* TO %s@'%%'", (user,)
            )

    def _thd_set_password(self, site_db: SiteDatabase) -> None:
        with self._admin() as cur:
            try:
                cur.execute(
                    "ALTER USER %s@'%%' IDENTIFIED BY %s", (site_db.username, site_db.password)
                )
            except pymysql.MySQLError as e:
                if e.args and e.args[0] == _ER_CANNOT_USER:
                    raise DatabaseError(
                        "not_found", f"there is no database user {site_db.username!r}"
                    ) from e
                raise

    def _thd_drop(self, name: str, username: str) -> None:
        with self._admin() as cur:
            # Open sessions would hold DROP DATABASE on a metadata lock: end them first.
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE (USER = %s OR DB = %s) AND ID <> CONNECTION_ID()",
                (username, name),
            )
            for (thread_id,) in cur.fetchall():
                try:
                    cur.execute("KILL CONNECTION %s", (int(thread_id),))
                except pymysql.MySQLError as e:
                    if not e.args or e.args[0] != _ER_NO_SUCH_THREAD:
                        raise
            cur.execute(f"DROP DATABASE IF EXISTS {_backtick(name)}")
            cur.execute("DROP USER IF EXISTS %s@'%%'", (username,))

    def _thd_exists(self, name: str) -> bool:
        with self._admin() as cur:
            cur.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            return cur.fetchone() is not None

    def _thd_query(
        self, site_db: SiteDatabase, sql: str, timeout_seconds: float, max_rows: int
    ) -> QueryResult:
        args = self._connect_args(
            site_db.username, site_db.password, timeout_seconds + _CLIENT_GRACE_SECONDS
        )
        try:
            # No CLIENT.MULTI_STATEMENTS flag: the server refuses a second statement.
            conn = pymysql.connect(database=site_db.name, cursorclass=SSCursor, **args)
        except (pymysql.MySQLError, UnicodeError) as e:  # UnicodeError: a bad host name
            raise _mysql_login_error(site_db, e) from e
        thread_id = conn.thread_id()
        started = time.monotonic()
        try:
            cur = conn.cursor()
            cur.execute(*_session_time_limit(conn.get_server_info(), timeout_seconds))
            cur.execute(sql)  # no arguments: PyMySQL leaves a % in the text alone
            if cur.description is None:
                return _result([], [], cur.rowcount, max_rows)
            columns = [d[0] for d in cur.description]
            rows = cur.fetchmany(max_rows + 1)
            # Unbuffered: count (and drop) the rest instead of holding it in memory.
            rowcount = len(rows) + sum(1 for _ in cur)
            return _result(columns, rows, rowcount, max_rows)
        except pymysql.MySQLError as e:
            code = e.args[0] if e.args else None
            gave_up = code == _CR_SERVER_LOST and time.monotonic() - started >= timeout_seconds
            if gave_up:
                self._kill_query(thread_id)
            if gave_up or code in (_ER_STATEMENT_TIMEOUT, _ER_QUERY_TIMEOUT):
                raise DatabaseError(
                    "query_timeout", f"the statement ran longer than {timeout_seconds:g} s"
                ) from e
            if isinstance(e, pymysql.OperationalError) and isinstance(code, int) and code >= 2000:
                # 2000 and up are client errors: the connection broke, the SQL did not fail
                raise DatabaseError("unavailable", f"MySQL: {_mysql_message(e)}") from e
            raise DatabaseError("query_failed", _mysql_message(e)) from e
        finally:
            _close_quietly(conn)

    def _kill_query(self, thread_id: int) -> None:
        """Stop a statement the client gave up on, so it does not run on unseen."""
        try:
            with self._admin() as cur:
                cur.execute("KILL QUERY %s", (thread_id,))
        except DatabaseError as e:
            # ER_NO_SUCH_THREAD: it ended by itself; anything else deserves a look
            log.warn(
                "could not stop MySQL session {thread_id}: {error}", thread_id=thread_id, error=e
            )


def _session_time_limit(server_info: str, timeout_seconds: float) -> tuple[str, tuple[object]]:
    """
    The statement that limits how long each statement of this session may run. MySQL 8's
    max_execution_time applies to SELECT only: the client read timeout (and KILL QUERY)
    bound everything else there.
    """
    if "mariadb" in server_info.lower():
        return "SET SESSION max_statement_time = %s", (timeout_seconds,)
    return "SET SESSION max_execution_time = %s", (max(1, int(timeout_seconds * 1000)),)


def _close_quietly(conn: Any) -> None:
    """Close a PyMySQL connection that may already be closed (it raises then)."""
    if conn.open:
        try:
            conn.close()
        except pymysql.MySQLError:
            pass


def _mysql_message(error: Exception) -> str:
    if len(error.args) >= 2:
        return str(error.args[1])
    return _first_line(error)


def _mysql_login_error(site_db: SiteDatabase, error: Exception) -> DatabaseError:
    code = error.args[0] if error.args else None
    if code in (_ER_ACCESS_DENIED, _ER_DBACCESS_DENIED, _ER_BAD_DB, _ER_ACCESS_DENIED_NO_PASSWORD):
        return DatabaseError(
            "access_denied",
            f"{site_db.username} cannot log in to database {site_db.name}: {_mysql_message(error)}",
        )
    return DatabaseError("unavailable", f"MySQL: {_mysql_message(error)}")
