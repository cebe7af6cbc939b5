"""
Site databases on real PostgreSQL 15 and MariaDB: the shared behaviour suite (the one the
fake passes), then what only a real server shows: a site can build tables in its own
database, time limits cut statements off, values come back JSON-safe, sessions end on drop,
and names with SQL in them change nothing on the server.

Test bodies run on the reactor (pytest-twisted), so every direct driver call made here to
check the server goes through the same bounded thread pool as the adapters.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import psycopg
import pymysql
import pytest
import pytest_twisted
from services import MariaDBServer, PostgresServer, free_port
from twisted.internet.defer import Deferred, gatherResults

from director.common.threads import BlockingPool
from director.orchestrator import mysql_admin
from director.orchestrator.databases import (
    DatabaseError,
    DatabaseHost,
    IDatabaseAdmin,
    MySQLAdmin,
    PostgresAdmin,
    QueryResult,
    SiteDatabase,
    new_password,
)
from director.testing.database_contract import (
    BAD_IDENTIFIERS,
    DatabaseAdminContract,
    contract_test,
    unchecked_site,
)

T = TypeVar("T")

SERIES_10 = (
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 10) "
    "SELECT n FROM t ORDER BY n"
)


@pytest.fixture(scope="module")
def db_pool() -> Iterator[BlockingPool]:
    """The bounded thread pool the adapters run in, as in production."""
    from twisted.internet import reactor

    pool = BlockingPool(reactor, "test-databases", size=4, timeout=60)
    pool.startService()
    yield pool
    pool.stopService()


class RealServerTests(DatabaseAdminContract):
    """The contract plus real-only checks for one server; subclasses add driver access."""

    _admin: IDatabaseAdmin
    _unreachable: IDatabaseAdmin
    _sites: list[SiteDatabase]
    _pool: BlockingPool

    def admin(self) -> IDatabaseAdmin:
        return self._admin

    def unreachable_admin(self) -> IDatabaseAdmin:
        return self._unreachable

    def finish(self, test: Deferred[None]) -> Deferred[None]:
        return test  # pytest-twisted waits for it on the running reactor

    def remember(self, site_db: SiteDatabase) -> None:
        self._sites.append(site_db)

    def can_connect(self, site_db: SiteDatabase) -> Deferred[bool]:
        return self._pool.run(self.blocking_can_connect, site_db)

    def setup_admins(self, pool: BlockingPool, host: DatabaseHost) -> Iterator[None]:
        """Admins for the fixture; afterwards, drop every site the test made."""
        make = PostgresAdmin if host.kind == "postgres" else MySQLAdmin
        dead = DatabaseHost(
            host.kind, "127.0.0.1", free_port(), "admin", "password-123", connect_timeout=3
        )
        self._pool = pool
        self._admin = make(pool, host)
        self._unreachable = make(pool, dead)
        self._sites = []
        yield
        for site_db in self._sites:
            pytest_twisted.blockon(self._admin.drop(site_db.name, site_db.username))

    # ---------------------------------------------------------------- driver access

    def connect(self, site_db: SiteDatabase) -> Any:
        """(blocking) An autocommit connection as the site user, to its database."""
        raise NotImplementedError

    def blocking_can_connect(self, site_db: SiteDatabase) -> bool:
        raise NotImplementedError

    def admin_query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """(blocking) Rows of a statement run as the server's administrator."""
        raise NotImplementedError

    def server_state(self) -> object:
        """(blocking) Every database, user and grant on the server."""
        raise NotImplementedError

    def in_thread(self, f: Callable[..., T], *args: object) -> Deferred[T]:
        return self._pool.run(f, *args)

    # ---------------------------------------------------------------- helpers

    async def created(self) -> SiteDatabase:
        site_db = self.new_site()
        await self._admin.create(site_db)
        return site_db

    async def run(
        self, site_db: SiteDatabase, sql: str, timeout: float = 10, max_rows: int = 100
    ) -> QueryResult:
        return await self._admin.query(site_db, sql, timeout, max_rows)

    # ---------------------------------------------------------------- real-only tests

    @contract_test
    async def test_site_user_builds_tables_in_its_database(self) -> None:
        site_db = await self.created()

        def build() -> list[Any]:
            with contextlib.closing(self.connect(site_db)) as conn:
                cur = conn.cursor()
                cur.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(100))")
                cur.execute("INSERT INTO notes VALUES (1, 'first'), (2, 'second')")
                cur.execute("SELECT body FROM notes ORDER BY id")
                return [row[0] for row in cur.fetchall()]

        assert await self.in_thread(build) == ["first", "second"]

    @contract_test
    async def test_query_statements_and_rowcount(self) -> None:
        site_db = await self.created()
        created = await self.run(site_db, "CREATE TABLE t (n INTEGER, label VARCHAR(10))")
        assert created == {"columns": [], "rows": [], "rowcount": 0, "truncated": False}
        inserted = await self.run(site_db, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL)")
        assert inserted["rowcount"] == 3
        assert inserted["columns"] == []
        selected = await self.run(site_db, "SELECT n, label FROM t ORDER BY n")
        assert selected == {
            "columns": ["n", "label"],
            "rows": [[1, "a"], [2, "b"], [3, None]],
            "rowcount": 3,
            "truncated": False,
        }
        updated = await self.run(site_db, "UPDATE t SET label = 'z' WHERE n > 1")
        assert updated["rowcount"] == 2
        assert (await self.run(site_db, "SELECT '100%' AS p"))["rows"] == [["100%"]]

    @contract_test
    async def test_query_truncates_at_max_rows(self) -> None:
        site_db = await self.created()
        result = await self.run(site_db, SERIES_10, max_rows=3)
        assert result["rows"] == [[1], [2], [3]]
        assert result["rowcount"] == 10
        assert result["truncated"] is True
        assert (await self.run(site_db, SERIES_10, max_rows=10))["truncated"] is False

    @contract_test
    async def test_query_runs_one_statement_only(self) -> None:
        site_db = await self.created()
        await self.run(site_db, "CREATE TABLE keep (n INTEGER)")
        for sql in ("SELECT 1; DROP TABLE keep", "DROP TABLE keep; SELECT 1"):
            await self.assert_error(self._admin.query(site_db, sql, 5, 10), "query_failed")
        assert (await self.run(site_db, "SELECT COUNT(*) FROM keep"))["rows"] == [[0]]

    @contract_test
    async def test_query_reports_sql_errors(self) -> None:
        site_db = await self.created()
        error = await self.assert_error(
            self._admin.query(site_db, "SELEC 1", 5, 10), "query_failed"
        )
        assert "syntax" in error.message.lower()
        missing = await self.assert_error(
            self._admin.query(site_db, "SELECT * FROM no_such_table", 5, 10), "query_failed"
        )
        assert "no_such_table" in missing.message

    @contract_test
    async def test_time_limit_cuts_a_long_statement_off(self) -> None:
        site_db = await self.created()
        started = time.monotonic()
        error = await self.assert_error(
            self._admin.query(site_db, self.sleep_sql(5), 1, 10), "query_timeout"
        )
        elapsed = time.monotonic() - started
        assert elapsed < 4, f"the 1 s limit took {elapsed:.1f} s"
        assert "longer than 1 s" in error.message
        assert (await self.run(site_db, "SELECT 2"))["rows"] == [[2]]

    @contract_test
    async def test_drop_ends_open_sessions(self) -> None:
        site_db = await self.created()
        conn = await self.in_thread(self.connect, site_db)

        def select_one() -> None:
            conn.cursor().execute("SELECT 1")

        try:
            await self.in_thread(select_one)
            await self._admin.drop(site_db.name, site_db.username)
            assert (await self._admin.exists(site_db.name)) is False
            with pytest.raises((psycopg.Error, pymysql.MySQLError)):
                await self.in_thread(select_one)  # the server ended this session
        finally:
            with contextlib.suppress(psycopg.Error, pymysql.MySQLError):
                conn.close()

    @contract_test
    async def test_names_with_sql_change_nothing_on_the_server(self) -> None:
        before = await self.in_thread(self.server_state)
        good = self.new_site()
        for bad in BAD_IDENTIFIERS:
            for site_db in (
                unchecked_site(good.kind, bad, good.username, good.password),
                unchecked_site(good.kind, good.name, bad, good.password),
            ):
                await self.assert_error(self._admin.create(site_db), "invalid_name")
                await self.assert_error(
                    self._admin.query(site_db, "SELECT 1", 5, 1), "invalid_name"
                )
            await self.assert_error(self._admin.drop(cast(str, bad), good.username), "invalid_name")
        assert await self.in_thread(self.server_state) == before

    @contract_test
    async def test_concurrent_creates_through_the_pool(self) -> None:
        sites = [self.new_site() for _ in range(6)]
        await gatherResults([self._admin.create(s) for s in sites])
        for site_db in sites:
            assert await self.can_connect(site_db)


class TestPostgresAdmin(RealServerTests):
    server: PostgresServer

    @pytest.fixture(autouse=True)
    def _servers(self, postgres_server: PostgresServer, db_pool: BlockingPool) -> Iterator[None]:
        server = self.server = postgres_server
        host = DatabaseHost(
            "postgres",
            server.host,
            server.port,
            server.admin_user,
            server.admin_password,
            container_host=server.bridge_host,
        )
        yield from self.setup_admins(db_pool, host)

    def connect(self, site_db: SiteDatabase) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.server.dsn(site_db.name, site_db.username, site_db.password),
            autocommit=True,
            connect_timeout=5,
        )

    def blocking_can_connect(self, site_db: SiteDatabase) -> bool:
        try:
            self.connect(site_db).close()
        except psycopg.OperationalError as e:
            if "FATAL" in str(e):  # the server answered, and said no
                return False
            raise
        return True

    def admin_query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.server.dsn(), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql, params or None)
            return cur.fetchall() if cur.description else []

    def server_state(self) -> object:
        return (
            self.admin_query("SELECT datname, datdba, datacl::text FROM pg_database ORDER BY 1"),
            self.admin_query("SELECT rolname, rolpassword FROM pg_authid ORDER BY 1"),
        )

    @contract_test
    async def test_server_is_postgres_15(self) -> None:
        rows = await self.in_thread(self.admin_query, "SHOW server_version_num")
        assert 150000 <= int(rows[0][0]) < 160000

    @contract_test
    async def test_site_user_owns_its_database_and_only_it_may_connect(self) -> None:
        site_db, other = await self.created(), await self.created()
        rows = await self.in_thread(
            self.admin_query,
            "SELECT pg_get_userbyid(datdba), "
            "has_database_privilege(%s, datname, 'CONNECT'), "
            "has_database_privilege(%s, datname, 'CONNECT'), "
            "has_database_privilege('public', datname, 'CONNECT') "
            "FROM pg_database WHERE datname = %s",
            site_db.username,
            other.username,
            site_db.name,
        )
        assert rows == [(site_db.username, True, False, False)]

    @contract_test
    async def test_role_is_unprivileged_limited_and_scram(self) -> None:
        site_db = await self.created()
        rows = await self.in_thread(
            self.admin_query,
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolconnlimit, "
            "left(rolpassword, 14) FROM pg_authid WHERE rolname = %s",
            site_db.username,
        )
        assert rows == [(False, False, False, True, 20, "SCRAM-SHA-256$")]

    @contract_test
    async def test_query_runs_as_site_user_not_admin(self) -> None:
        site_db = await self.created()
        result = await self.run(
            site_db,
            "SELECT current_user, current_database(), usesuper FROM pg_user "
            "WHERE usename = current_user",
        )
        assert result["rows"] == [[site_db.username, site_db.name, False]]

    @contract_test
    async def test_query_values_are_json_safe(self) -> None:
        site_db = await self.created()
        result = await self.run(
            site_db,
            "SELECT 1.50::numeric AS num, 2.5::float8 AS f, "
            "'2024-05-06 07:08:09+00'::timestamptz AS ts, '2024-05-06'::date AS d, "
            "'\\xdeadbeef'::bytea AS b, NULL AS n, ARRAY[1, 2] AS arr, "
            "'{\"a\": [1, 2.5]}'::jsonb AS j, interval '1 day 2 hours' AS i, "
            "'00000000-0000-0000-0000-000000000001'::uuid AS u, true AS t, "
            "'10.0.0.1'::inet AS ip, 'NaN'::float8 AS nan",
        )
        assert result["columns"] == [
            "num", "f", "ts", "d", "b", "n", "arr", "j", "i", "u", "t", "ip", "nan",
        ]  # fmt: skip
        assert result["rows"] == [
            [
                "1.50", 2.5, "2024-05-06T07:08:09+00:00", "2024-05-06", "\\xdeadbeef", None,
                [1, 2], {"a": [1, 2.5]}, "P1DT2H0M0S", "00000000-0000-0000-0000-000000000001",
                True, "10.0.0.1", "nan",
            ]
        ]  # fmt: skip
        json.dumps(result, allow_nan=False)

    @contract_test
    async def test_create_repairs_a_database_owned_by_the_admin(self) -> None:
        # what the original left behind: the database owned by the administrator
        site_db = self.new_site()
        await self.in_thread(self.admin_query, f'CREATE DATABASE "{site_db.name}"')
        await self._admin.create(site_db)

        def create_table() -> None:
            with contextlib.closing(self.connect(site_db)) as conn:
                conn.execute("CREATE TABLE t (n INTEGER)")

        await self.in_thread(create_table)
        rows = await self.in_thread(
            self.admin_query,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
            site_db.name,
        )
        assert rows == [(site_db.username,)]


class TestMariaDBAdmin(RealServerTests):
    server: MariaDBServer

    @pytest.fixture(autouse=True)
    def _servers(self, mariadb_server: MariaDBServer, db_pool: BlockingPool) -> Iterator[None]:
        server = self.server = mariadb_server
        host = DatabaseHost(
            "mysql",
            server.host,
            server.port,
            server.admin_user,
            server.admin_password,
            container_host=server.bridge_host,
        )
        yield from self.setup_admins(db_pool, host)

    def connect(self, site_db: SiteDatabase) -> Any:
        return pymysql.connect(
            host=self.server.host,
            port=self.server.port,
            user=site_db.username,
            password=site_db.password,
            database=site_db.name,
            autocommit=True,
            connect_timeout=5,
        )

    def blocking_can_connect(self, site_db: SiteDatabase) -> bool:
        try:
            self.connect(site_db).close()
        except pymysql.OperationalError as e:
            # access denied: to the database, to the login, or (MariaDB, for a user that does
            # not exist, depending on the auth plugin it pretends to use) 1698
            if e.args[0] in (1044, 1045, 1698):
                return False
            raise
        return True

    def admin_query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        conn = pymysql.connect(
            host=self.server.host,
            port=self.server.port,
            user=self.server.admin_user,
            password=self.server.admin_password,
            autocommit=True,
            connect_timeout=5,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall())
        finally:
            conn.close()

    def server_state(self) -> object:
        return (
            self.admin_query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1"),
            self.admin_query("SELECT User, Host, authentication_string FROM mysql.user ORDER BY 1"),
            self.admin_query("SELECT Db, User FROM mysql.db ORDER BY 1, 2"),
        )

    @contract_test
    async def test_server_is_mariadb(self) -> None:
        rows = await self.in_thread(self.admin_query, "SELECT VERSION()")
        assert "MariaDB" in rows[0][0]

    @contract_test
    async def test_grant_is_escaped_and_limited(self) -> None:
        site_db = await self.created()
        rows = await self.in_thread(self.admin_query, "SHOW GRANTS FOR %s@'%%'", site_db.username)
        grants = [row[0] for row in rows]
        escaped = site_db.name.replace("_", "\\_")
        assert f"GRANT ALL PRIVILEGES ON `{escaped}`.* TO `{site_db.username}`@`%`" in grants
        assert all("USAGE" in g for g in grants if "*.*" in g), grants
        limit = await self.in_thread(
            self.admin_query,
            "SELECT max_user_connections FROM mysql.user WHERE User = %s",
            site_db.username,
        )
        assert limit == [(20,)]

    @contract_test
    async def test_query_runs_as_site_user_not_admin(self) -> None:
        site_db = await self.created()
        result = await self.run(site_db, "SELECT CURRENT_USER(), DATABASE()")
        assert result["rows"] == [[f"{site_db.username}@%", site_db.name]]
        denied = await self.assert_error(
            self._admin.query(site_db, "SELECT COUNT(*) FROM mysql.user", 5, 10), "query_failed"
        )
        assert "denied" in denied.message

    @contract_test
    async def test_query_values_are_json_safe(self) -> None:
        site_db = await self.created()
        result = await self.run(
            site_db,
            "SELECT CAST(1.50 AS DECIMAL(5,2)) AS num, 2.5e0 AS f, "
            "CAST('2024-05-06 07:08:09' AS DATETIME) AS ts, CAST('2024-05-06' AS DATE) AS d, "
            "X'DEADBEEF' AS b, NULL AS n, CAST('26:00:01' AS TIME) AS tm, 'x' AS s",
        )
        assert result["columns"] == ["num", "f", "ts", "d", "b", "n", "tm", "s"]
        assert result["rows"] == [
            [
                "1.50", 2.5, "2024-05-06T07:08:09", "2024-05-06", "\\xdeadbeef", None,
                "P1DT2H0M1S", "x",
            ]
        ]  # fmt: skip
        json.dumps(result, allow_nan=False)

    @contract_test
    async def test_site_sees_only_its_own_database(self) -> None:
        first, second = await self.created(), await self.created()
        names = {row[0] for row in (await self.run(first, "SHOW DATABASES"))["rows"]}
        assert first.name in names
        assert second.name not in names


@pytest_twisted.ensureDeferred
async def test_wrong_admin_password_is_unavailable(
    postgres_server: PostgresServer, mariadb_server: MariaDBServer, db_pool: BlockingPool
) -> None:
    """A misconfigured admin login names the server and user, never the password."""
    pg, my = postgres_server, mariadb_server
    admins: list[IDatabaseAdmin] = [
        PostgresAdmin(
            db_pool, DatabaseHost("postgres", pg.host, pg.port, "postgres", "wrong-pw-1")
        ),
        MySQLAdmin(db_pool, DatabaseHost("mysql", my.host, my.port, "admin", "wrong-pw-1")),
    ]
    for admin in admins:
        with pytest.raises(DatabaseError) as caught:
            await admin.exists("site_1")
        assert caught.value.code == "unavailable"
        assert "wrong-pw-1" not in caught.value.message
        assert "127.0.0.1" in caught.value.message


@pytest_twisted.ensureDeferred
async def test_mariadb_statement_that_lifts_its_own_limit_is_still_stopped(
    mariadb_server: MariaDBServer, db_pool: BlockingPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    `SET STATEMENT max_statement_time=0 FOR ...` is one statement that escapes the session
    limit: the client read timeout gives up on it and KILL QUERY ends it on the server.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    monkeypatch.setattr(mysql_admin, "_CLIENT_GRACE_SECONDS", 1.0)
    my = mariadb_server
    host = DatabaseHost("mysql", my.host, my.port, my.admin_user, my.admin_password)
    admin = MySQLAdmin(db_pool, host)
    name = f"site_t{secrets.token_hex(6)}"
    site_db = host.site_database(name, name, new_password())
    await admin.create(site_db)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseError) as caught:
            await admin.query(
                site_db, "SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(30)", 1, 10
            )
        assert caught.value.code == "query_timeout"
        assert time.monotonic() - started < 6

        def running() -> int:
            conn = pymysql.connect(
                host=my.host, port=my.port, user=my.admin_user, password=my.admin_password
            )
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        "WHERE USER = %s AND COMMAND = 'Query'",
                        (site_db.username,),
                    )
                    return int(cur.fetchone()[0])
            finally:
                conn.close()

        for _ in range(20):
            if await db_pool.run(running) == 0:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert await db_pool.run(running) == 0, "the statement still runs on the server"
    finally:
        await admin.drop(site_db.name, site_db.username)
