"""
Per-site databases on a PostgreSQL or MySQL/MariaDB server: create, re-password and drop a
site's user and database, and run one statement as the site (the dashboard's database shell).

The drivers are blocking, so every call runs through an injected L{Runner} (a bounded, named
L{BlockingPool} in production) and every connection has a connect timeout. Names and
passwords are checked before any SQL runs, and a site user can reach only its own database
(the original left PostgreSQL 15 sites unable to create tables, used invalid MySQL 8 syntax
and left C{_}, a wildcard, unescaped in MySQL grants).
"""

from __future__ import annotations

import datetime
import decimal
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias, TypedDict, TypeVar

import psycopg
import pymysql
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql
from pymysql.cursors import SSCursor
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from director import contract
from director.common.threads import Runner
from director.contract.databases import DATABASE_KINDS as DATABASE_KINDS
from director.contract.databases import DatabaseKind as DatabaseKind

T = TypeVar("T")

log = Logger()


#: Site database names and user names (we use C{site_<id>} for both). 32 characters at most:
#: MySQL 8 caps user names at 32; PostgreSQL (63) and MariaDB (80) allow more.
SITE_IDENTIFIER_PATTERN = re.compile(r"^site_[a-z0-9_]{1,27}$")

#: Printable passwords only (no control characters, so none can end a line in a log or an
#: environment file), long enough to matter, short enough for every server.
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256

#: Bounds on L{IDatabaseAdmin.query} arguments.
MAX_QUERY_TIMEOUT_SECONDS = 300.0
MAX_QUERY_ROWS = 10_000
MAX_QUERY_LENGTH = 1_000_000

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None


class QueryResult(TypedDict):
    """What L{IDatabaseAdmin.query} returns (JSON-safe as it is)."""

    columns: list[str]
    rows: list[list[JSONValue]]
    rowcount: int
    truncated: bool


class DatabaseError(Exception):
    """
    A database operation was refused or failed; C{code} is stable (for APIs and tests),
    C{message} is for a person.

    Codes: C{invalid_name}, C{invalid_password}, C{invalid_argument}, C{wrong_kind} (bad
    input, nothing was sent to the server); C{unavailable} (server unreachable, or no
    connection slot left); C{not_found} (no such user); C{access_denied} (the site user could
    not log in to its database); C{query_timeout}; C{query_failed} (the site's SQL raised an
    error); C{server_error} (an administrative statement failed); C{unsupported} (only the
    in-memory fake raises it).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def site_identifier(site_id: int) -> str:
    """The database name and user name of site C{site_id}."""
    name = f"site_{site_id}"
    validate_identifier(name, "site id")
    return name


def new_password() -> str:
    """A fresh random password, URL-safe: no quoting needed in a URL or an env file."""
    return secrets.token_urlsafe(24)


def validate_identifier(value: object, what: str = "name") -> str:
    """Return C{value} if it is a valid site database or user name, else raise."""
    if not isinstance(value, str) or not SITE_IDENTIFIER_PATTERN.fullmatch(value):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise DatabaseError(
            "invalid_name",
            f"invalid database {what} {shown}: it must match {SITE_IDENTIFIER_PATTERN.pattern}",
        )
    return value


def validate_database_password(value: object) -> str:
    """Return C{value} if it is an acceptable password, else raise (never echoing it)."""
    if not isinstance(value, str):
        raise DatabaseError("invalid_password", "the password must be a string")
    if not MIN_PASSWORD_LENGTH <= len(value) <= MAX_PASSWORD_LENGTH:
        raise DatabaseError(
            "invalid_password",
            f"the password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
        )
    if not value.isprintable():
        raise DatabaseError("invalid_password", "the password contains control characters")
    return value


@dataclass(frozen=True)
class SiteDatabase(contract.SiteDatabase):
    """One site's database (its URL and environment are the contract's), checked here."""

    def validate(self) -> None:
        """Raise L{DatabaseError} unless every field is safe to use."""
        if self.kind not in DATABASE_KINDS:
            raise DatabaseError("wrong_kind", f"unknown database type {self.kind!r}")
        validate_identifier(self.name, "name")
        validate_identifier(self.username, "user name")
        validate_database_password(self.password)


@dataclass(frozen=True)
class DatabaseHost(contract.DatabaseHost):
    """
    A database server (see L{contract.DatabaseHost}), with how this orchestrator talks to it.
    An C{admin_host} starting with C{/} is a UNIX socket (a directory for PostgreSQL, the
    socket file for MySQL).
    """

    connect_timeout: int = 10
    #: bounds every administrative statement, so a stuck server cannot hold a pool thread
    admin_statement_timeout: float = 60.0
    #: connections one site user may hold (None: the server's limit), so one site cannot
    #: take every connection slot of a shared server
    site_connection_limit: int | None = 20

    def __post_init__(self) -> None:
        if self.kind not in DATABASE_KINDS:
            raise ValueError(f"unknown database type {self.kind!r}")

    @classmethod
    def of(cls, host: contract.DatabaseHost) -> DatabaseHost:
        """The server the manager described as C{host}, with this orchestrator's defaults."""
        return cls(**host.to_json())

    def site_database(self, name: str, username: str, password: str) -> SiteDatabase:
        """A site database on this server, addressed the way containers reach it."""
        return SiteDatabase(self.kind, name, username, password, self.site_host, self.site_port)


class IDatabaseAdmin(Interface):
    """
    Manages site databases on one server. Every method returns a Deferred; bad input fails
    it with L{DatabaseError} before anything is sent to the server.
    """

    kind = Attribute("'postgres' or 'mysql'")

    def create(site_db: SiteDatabase) -> Deferred[None]:
        """
        Create the user and the database only that user may use; if they exist, set the
        password and repair the privileges (so it is safe to call again).
        """

    def set_password(site_db: SiteDatabase) -> Deferred[None]:
        """Give the existing user C{site_db.username} the password C{site_db.password}."""

    def drop(name: str, username: str) -> Deferred[None]:
        """End their sessions, drop the database and the user; nothing to drop is fine."""

    def exists(name: str) -> Deferred[bool]:
        """Whether the database C{name} exists."""

    def query(
        site_db: SiteDatabase, sql: str, timeout_seconds: float, max_rows: int
    ) -> Deferred[QueryResult]:
        """
        Run one statement as the site user (never the administrator), cut off after
        C{timeout_seconds}; return at most C{max_rows} rows with JSON-safe values: decimals
        as strings, dates and times in ISO 8601, binary values as C{\\x}-prefixed hex.
        C{rowcount} counts every row returned (even past C{max_rows}) or changed.
        """


def to_json_value(value: object) -> JSONValue:
    """A driver value as plain JSON: exact numbers and anything unusual become strings."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # strict JSON has no NaN or infinities
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return _iso_duration(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    return str(value)


def _iso_duration(value: datetime.timedelta) -> str:
    """ISO 8601 duration (C{P1DT2H3M4.5S}); negative durations get a leading minus."""
    sign = "-" if value < datetime.timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    secs = f"{seconds}.{value.microseconds:06d}".rstrip("0").rstrip(".")
    return f"{sign}P{value.days}DT{hours}H{minutes}M{secs}S"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class DatabaseAdminBase:
    """
    Input checks and thread hand-off shared by every L{IDatabaseAdmin}: subclasses write
    blocking C{_thd_*} methods, which run only after the input passed.
    """

    kind: DatabaseKind

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def create(self, site_db: SiteDatabase) -> Deferred[None]:
        return self._submit(lambda: self._check_site(site_db), self._thd_create, site_db)

    def set_password(self, site_db: SiteDatabase) -> Deferred[None]:
        return self._submit(lambda: self._check_site(site_db), self._thd_set_password, site_db)

    def drop(self, name: str, username: str) -> Deferred[None]:
        def check() -> None:
            validate_identifier(name, "name")
            validate_identifier(username, "user name")

        return self._submit(check, self._thd_drop, name, username)

    def exists(self, name: str) -> Deferred[bool]:
        return self._submit(lambda: validate_identifier(name, "name"), self._thd_exists, name)

    def query(
        self, site_db: SiteDatabase, sql: str, timeout_seconds: float, max_rows: int
    ) -> Deferred[QueryResult]:
        def check() -> None:
            self._check_site(site_db)
            if not isinstance(sql, str) or not sql.strip():
                raise DatabaseError("invalid_argument", "the statement is empty")
            if len(sql) > MAX_QUERY_LENGTH or "\x00" in sql:
                raise DatabaseError("invalid_argument", "the statement is too long or has NUL")
            timeout_ok = isinstance(timeout_seconds, int | float) and not isinstance(
                timeout_seconds, bool
            )
            if not timeout_ok or not 0 < timeout_seconds <= MAX_QUERY_TIMEOUT_SECONDS:
                raise DatabaseError(
                    "invalid_argument",
                    f"the time limit must be over 0 and at most {MAX_QUERY_TIMEOUT_SECONDS} s",
                )
            if (
                not isinstance(max_rows, int)
                or isinstance(max_rows, bool)
                or not 0 <= max_rows <= MAX_QUERY_ROWS
            ):
                raise DatabaseError(
                    "invalid_argument", f"max_rows must be from 0 to {MAX_QUERY_ROWS}"
                )

        return self._submit(check, self._thd_query, site_db, sql, timeout_seconds, max_rows)

    def _check_site(self, site_db: SiteDatabase) -> None:
        if not isinstance(site_db, SiteDatabase):
            raise DatabaseError("invalid_argument", "expected a SiteDatabase")
        site_db.validate()
        if site_db.kind != self.kind:
            raise DatabaseError(
                "wrong_kind", f"a {site_db.kind} database cannot be managed on a {self.kind} server"
            )

    def _submit(
        self, check: Callable[[], object], work: Callable[..., T], *args: object
    ) -> Deferred[T]:
        try:
            check()
        except DatabaseError:
            return fail()
        return self._runner.run(work, *args)

    def _thd_create(self, site_db: SiteDatabase) -> None:
        raise NotImplementedError

    def _thd_set_password(self, site_db: SiteDatabase) -> None:
        raise NotImplementedError

    def _thd_drop(self, name: str, username: str) -> None:
        raise NotImplementedError

    def _thd_exists(self, name: str) -> bool:
        raise NotImplementedError

    def _thd_query(
        self, site_db: SiteDatabase, sql: str, timeout_seconds: float, max_rows: int
    ) -> QueryResult:
        raise NotImplementedError


def _result(
    columns: Sequence[str], rows: Sequence[Sequence[object]], rowcount: int, max_rows: int
) -> QueryResult:
    return {
        "columns": list(columns),
        "rows": [[to_json_value(v) for v in row] for row in rows[:max_rows]],
        "rowcount": max(rowcount, 0),
        "truncated": len(rows) > max_rows,
    }


# --------------------------------------------------------------------------- PostgreSQL


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


# --------------------------------------------------------------------------- MySQL / MariaDB

#: MySQL client and server error numbers this module tells apart
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


def make_database_admin(runner: Runner, host: DatabaseHost) -> IDatabaseAdmin:
    """The adapter for C{host}'s kind of server."""
    if host.kind == "postgres":
        return PostgresAdmin(runner, host)
    return MySQLAdmin(runner, host)
