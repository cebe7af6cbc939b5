"""
Per-site databases on a PostgreSQL or MySQL/MariaDB server: create, re-password and drop a
site's user and database, and run one statement as the site (the dashboard's database shell).

The drivers are blocking, so every call runs through an injected L{Runner} (a bounded, named
L{BlockingPool} in production) and every connection has a connect timeout. Names and
passwords are checked before any SQL runs, and a site user can reach only its own database
(the original left PostgreSQL 15 sites unable to create tables, used invalid MySQL 8 syntax
and left C{_}, a wildcard, unescaped in MySQL grants).

The adapters are L{postgres_admin} and L{mysql_admin}, on L{database_admin_base}; this module
names them all for callers.
"""

from __future__ import annotations

from director.common.threads import Runner
from director.contract.databases import DATABASE_KINDS, DatabaseKind
from director.orchestrator.database_admin_base import (
    DATABASE_ERROR_STATUS,
    MAX_PASSWORD_LENGTH,
    MAX_QUERY_LENGTH,
    MAX_QUERY_ROWS,
    MAX_QUERY_TIMEOUT_SECONDS,
    MIN_PASSWORD_LENGTH,
    SITE_IDENTIFIER_PATTERN,
    DatabaseAdminBase,
    DatabaseError,
    DatabaseHost,
    IDatabaseAdmin,
    JSONValue,
    QueryResult,
    SiteDatabase,
    new_password,
    site_identifier,
    to_json_value,
    validate_database_password,
    validate_identifier,
)
from director.orchestrator.mysql_admin import MySQLAdmin, _grant_pattern, _session_time_limit
from director.orchestrator.postgres_admin import PostgresAdmin

__all__ = [
    "DATABASE_ERROR_STATUS",
    "DATABASE_KINDS",
    "MAX_PASSWORD_LENGTH",
    "MAX_QUERY_LENGTH",
    "MAX_QUERY_ROWS",
    "MAX_QUERY_TIMEOUT_SECONDS",
    "MIN_PASSWORD_LENGTH",
    "SITE_IDENTIFIER_PATTERN",
    "DatabaseAdminBase",
    "DatabaseError",
    "DatabaseHost",
    "DatabaseKind",
    "IDatabaseAdmin",
    "JSONValue",
    "MySQLAdmin",
    "PostgresAdmin",
    "QueryResult",
    "SiteDatabase",
    "_grant_pattern",
    "_session_time_limit",
    "make_database_admin",
    "new_password",
    "site_identifier",
    "to_json_value",
    "validate_database_password",
    "validate_identifier",
]


def make_database_admin(runner: Runner, host: DatabaseHost) -> IDatabaseAdmin:
    """The adapter for C{host}'s kind of server."""
    if host.kind == "postgres":
        return PostgresAdmin(runner, host)
    return MySQLAdmin(runner, host)
