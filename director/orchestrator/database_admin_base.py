"""
What the site database adapters share: the checks on names and passwords (before any SQL
runs), a site's database and the server it is on, the L{IDatabaseAdmin} interface, query
results as JSON, and L{DatabaseAdminBase}, which runs an adapter's blocking calls in its
pool. The adapters are L{postgres_admin} and L{mysql_admin}.
"""

from __future__ import annotations

import datetime
import decimal
import math
import re
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypedDict, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from director import contract
from director.common.errors import CodedError
from director.common.threads import Runner
from director.contract.databases import DATABASE_KINDS as DATABASE_KINDS
from director.contract.databases import DatabaseKind as DatabaseKind

T = TypeVar("T")

log = Logger(namespace="director.orchestrator.databases")


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


class DatabaseError(CodedError):
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

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


#: The HTTP status the orchestrator answers each L{DatabaseError} code with (others: 400).
DATABASE_ERROR_STATUS = {
    "unavailable": 503,
    "server_error": 502,
    "query_failed": 422,
    "query_timeout": 422,
    "access_denied": 422,
    "not_found": 404,
}


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
