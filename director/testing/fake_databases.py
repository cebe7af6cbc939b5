"""
An in-memory L{IDatabaseAdmin} for unit tests of the orchestrator. It passes the same
behaviour suite (L{director.testing.database_contract}) as the real PostgreSQL and MariaDB
adapters, so code tested against it behaves the same against a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from zope.interface import implementer

from director.common.threads import InlineRunner, Runner
from director.orchestrator.databases import (
    DatabaseAdminBase,
    DatabaseError,
    DatabaseKind,
    IDatabaseAdmin,
    JSONValue,
    QueryResult,
    SiteDatabase,
)

_SELECT_INTEGER = re.compile(r"\s*SELECT\s+(-?\d+)\s*;?\s*", re.IGNORECASE)
_SLEEP = {
    "postgres": re.compile(r"\s*SELECT\s+pg_sleep\(\s*(\d+(?:\.\d+)?)\s*\)\s*;?\s*", re.I),
    "mysql": re.compile(r"\s*SELECT\s+SLEEP\(\s*(\d+(?:\.\d+)?)\s*\)\s*;?\s*", re.I),
}


@dataclass
class FakeDatabase:
    """A database, and the users granted it (PostgreSQL: its one owner)."""

    users: set[str] = field(default_factory=set)


@implementer(IDatabaseAdmin)
class FakeDatabaseAdmin(DatabaseAdminBase):
    """
    Users, passwords and databases kept in dicts. C{query} understands only C{SELECT <n>}
    and a sleep longer than its time limit (C{pg_sleep(n)} or C{SLEEP(n)}); anything else
    fails with C{unsupported}. Set C{unavailable} to make every call that would reach a
    server fail as an unreachable one does.
    """

    def __init__(self, kind: DatabaseKind = "postgres", runner: Runner | None = None) -> None:
        super().__init__(runner or InlineRunner())
        self.kind = kind
        self.users: dict[str, str] = {}
        self.databases: dict[str, FakeDatabase] = {}
        self.unavailable = False
        #: every statement passed to C{query}, in order
        self.queries: list[str] = []

    def can_connect(self, site_db: SiteDatabase) -> bool:
        """Whether these credentials would open a session in that database."""
        database = self.databases.get(site_db.name)
        return (
            database is not None
            and self.users.get(site_db.username) == site_db.password
            and site_db.username in database.users
        )

    def _reach(self) -> None:
        if self.unavailable:
            raise DatabaseError("unavailable", "the fake database server is unavailable")

    def _thd_create(self, site_db: SiteDatabase) -> None:
        self._reach()
        self.users[site_db.username] = site_db.password
        database = self.databases.setdefault(site_db.name, FakeDatabase())
        if self.kind == "postgres":
            # PostgresAdmin makes the user the database's owner, the only one who may connect
            database.users = {site_db.username}
        else:
            database.users.add(site_db.username)

    def _thd_set_password(self, site_db: SiteDatabase) -> None:
        self._reach()
        if site_db.username not in self.users:
            raise DatabaseError("not_found", f"there is no database user {site_db.username!r}")
        self.users[site_db.username] = site_db.password

    def _thd_drop(self, name: str, username: str) -> None:
        self._reach()
        self.databases.pop(name, None)
        self.users.pop(username, None)
        for database in self.databases.values():
            database.users.discard(username)

    def _thd_exists(self, name: str) -> bool:
        self._reach()
        return name in self.databases

    def _thd_query(
        self, site_db: SiteDatabase, sql: str, timeout_seconds: float, max_rows: int
    ) -> QueryResult:
        self._reach()
        if not self.can_connect(site_db):
            raise DatabaseError(
                "access_denied", f"{site_db.username} cannot log in to database {site_db.name}"
            )
        self.queries.append(sql)
        if match := _SELECT_INTEGER.fullmatch(sql):
            value = int(match.group(1))
            column = "?column?" if self.kind == "postgres" else match.group(1)
            rows: list[list[JSONValue]] = [[value]]
            return {
                "columns": [column],
                "rows": rows[:max_rows],
                "rowcount": 1,
                "truncated": max_rows < 1,
            }
        sleep = _SLEEP[self.kind].fullmatch(sql)
        if sleep and float(sleep.group(1)) > timeout_seconds:
            raise DatabaseError(
                "query_timeout", f"the statement ran longer than {timeout_seconds:g} s"
            )
        raise DatabaseError(
            "unsupported",
            "FakeDatabaseAdmin runs only SELECT <integer> and over-long sleeps; "
            "test other SQL against a real server",
        )
