"""
The in-memory database admin passes the shared behaviour suite (as PostgreSQL and MySQL),
plus the pure parts of director.orchestrator.databases: names, environment, JSON values.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from director.common.threads import InlineRunner
from director.orchestrator.databases import (
    SITE_IDENTIFIER_PATTERN,
    DatabaseError,
    DatabaseHost,
    DatabaseKind,
    MySQLAdmin,
    PostgresAdmin,
    SiteDatabase,
    _grant_pattern,
    _session_time_limit,
    make_database_admin,
    new_password,
    site_identifier,
    to_json_value,
    validate_identifier,
)
from director.testing.database_contract import DatabaseAdminContract
from director.testing.fake_databases import FakeDatabaseAdmin

T = TypeVar("T")


class FakeContractMixin(DatabaseAdminContract):
    kind: DatabaseKind = "postgres"

    def setUp(self) -> None:
        self._admin = FakeDatabaseAdmin(self.kind)
        self._unreachable = FakeDatabaseAdmin(self.kind)
        self._unreachable.unavailable = True

    def admin(self) -> FakeDatabaseAdmin:
        return self._admin

    def unreachable_admin(self) -> FakeDatabaseAdmin:
        return self._unreachable

    def can_connect(self, site_db: SiteDatabase) -> Deferred[bool]:
        return succeed(self._admin.can_connect(site_db))

    def finish(self, test: Deferred[None]) -> None:
        # everything the fake does fires at once, so the test is already over
        self.successResultOf(test)  # type: ignore[attr-defined]

    def wait(self, d: Deferred[T]) -> T:
        """The result of a Deferred the fake fired at once (its failure raised)."""
        results: list[Any] = []
        d.addBoth(results.append)
        assert results, "the fake's Deferred did not fire at once"
        if isinstance(results[0], Failure):
            results[0].raiseException()
        result: T = results[0]
        return result

    def error(self, d: Deferred[Any], code: str) -> DatabaseError:
        """The DatabaseError C{d} failed with at once; it must have C{code}."""
        return self.wait(Deferred.fromCoroutine(self.assert_error(d, code)))


class FakePostgresAdminTests(FakeContractMixin, SynchronousTestCase):
    kind: DatabaseKind = "postgres"

    def test_select_column_named_like_postgres(self) -> None:
        site_db = self.new_site()
        self.wait(self._admin.create(site_db))
        result = self.wait(self._admin.query(site_db, "select 3;", 5, 10))
        self.assertEqual(result["columns"], ["?column?"])
        self.assertEqual(self._admin.queries, ["select 3;"])

    def test_other_sql_is_unsupported(self) -> None:
        site_db = self.new_site()
        self.wait(self._admin.create(site_db))
        for sql in ("SELECT * FROM t", "SELECT pg_sleep(1)", "SELECT SLEEP(9)"):
            self.error(self._admin.query(site_db, sql, 5, 10), "unsupported")

    def test_recreate_moves_ownership(self) -> None:
        first = self.new_site()
        self.wait(self._admin.create(first))
        other = SiteDatabase("postgres", first.name, "site_other", new_password(), "h", 1)
        self.wait(self._admin.create(other))
        self.assertFalse(self._admin.can_connect(first))
        self.assertTrue(self._admin.can_connect(other))


class FakeMySQLAdminTests(FakeContractMixin, SynchronousTestCase):
    kind: DatabaseKind = "mysql"

    def test_select_column_named_like_mysql(self) -> None:
        site_db = self.new_site()
        self.wait(self._admin.create(site_db))
        result = self.wait(self._admin.query(site_db, "SELECT 12", 5, 10))
        self.assertEqual(
            result, {"columns": ["12"], "rows": [[12]], "rowcount": 1, "truncated": False}
        )


def _site(**changes: Any) -> SiteDatabase:
    fields: dict[str, Any] = {
        "kind": "postgres",
        "name": "site_12",
        "username": "site_12",
        "password": "p@ss:w/rd?#%",
        "host": "172.17.0.1",
        "port": 5432,
    }
    fields.update(changes)
    return SiteDatabase(**fields)


class SiteDatabaseTests(SynchronousTestCase):
    def test_environment(self) -> None:
        env = _site().environment()
        url = "postgresql://site_12:p%40ss%3Aw%2Frd%3F%23%25@172.17.0.1:5432/site_12"
        self.assertEqual(
            env,
            {
                "DIRECTOR_DATABASE_URL": url,
                "DATABASE_URL": url,
                "DIRECTOR_DATABASE_TYPE": "postgres",
                "DIRECTOR_DATABASE_HOST": "172.17.0.1",
                "DIRECTOR_DATABASE_PORT": "5432",
                "DIRECTOR_DATABASE_NAME": "site_12",
                "DIRECTOR_DATABASE_USERNAME": "site_12",
                "DIRECTOR_DATABASE_PASSWORD": "p@ss:w/rd?#%",
            },
        )

    def test_url_round_trips(self) -> None:
        site_db = _site(kind="mysql", port=3306)
        parts = urlsplit(site_db.url)
        self.assertEqual(parts.scheme, "mysql")
        self.assertEqual(unquote(parts.username or ""), "site_12")
        self.assertEqual(unquote(parts.password or ""), "p@ss:w/rd?#%")
        self.assertEqual((parts.hostname, parts.port, parts.path), ("172.17.0.1", 3306, "/site_12"))

    def test_ipv6_host_in_brackets(self) -> None:
        self.assertIn("@[fd00::1]:5432/", _site(host="fd00::1").url)

    def test_password_not_in_repr(self) -> None:
        self.assertNotIn("p@ss", repr(_site()))
        host = DatabaseHost("mysql", "db", 3306, "admin", "hunter2hunter2")
        self.assertNotIn("hunter2", repr(host))

    def test_host_addresses_for_containers(self) -> None:
        host = DatabaseHost("postgres", "127.0.0.1", 5432, "postgres", "x" * 10)
        self.assertEqual(host.site_database("site_1", "site_1", "pw" * 5).host, "127.0.0.1")
        bridged = DatabaseHost(
            "postgres", "127.0.0.1", 5432, "postgres", "x" * 10, "172.17.0.1", 15432
        )
        site_db = bridged.site_database("site_1", "site_1", "pw" * 5)
        self.assertEqual(
            (site_db.kind, site_db.host, site_db.port), ("postgres", "172.17.0.1", 15432)
        )

    def test_unknown_kind(self) -> None:
        self.assertRaises(ValueError, DatabaseHost, "oracle", "h", 1, "u", "p")

    def test_adapter_for_kind(self) -> None:
        runner = InlineRunner()
        pg = DatabaseHost("postgres", "h", 5432, "postgres", "secretsecret")
        my = DatabaseHost("mysql", "h", 3306, "admin", "secretsecret")
        self.assertIsInstance(make_database_admin(runner, pg), PostgresAdmin)
        self.assertIsInstance(make_database_admin(runner, my), MySQLAdmin)
        self.assertRaises(ValueError, PostgresAdmin, runner, my)
        self.assertRaises(ValueError, MySQLAdmin, runner, pg)


class NameTests(SynchronousTestCase):
    def test_site_identifier(self) -> None:
        self.assertEqual(site_identifier(42), "site_42")
        self.assertEqual(validate_identifier("site_a_1"), "site_a_1")
        self.assertTrue(SITE_IDENTIFIER_PATTERN.fullmatch("site_" + "9" * 27))

    def test_huge_site_id_refused(self) -> None:
        with self.assertRaises(DatabaseError) as caught:
            site_identifier(10**40)
        self.assertEqual(caught.exception.code, "invalid_name")

    def test_new_password_is_valid_and_fresh(self) -> None:
        first, second = new_password(), new_password()
        self.assertNotEqual(first, second)
        _site(password=first).validate()
        self.assertRegex(first, r"^[A-Za-z0-9_-]{32}$")


class JSONValueTests(SynchronousTestCase):
    def test_values(self) -> None:
        when = datetime.datetime(2024, 5, 6, 7, 8, 9, 500, tzinfo=datetime.UTC)
        values: list[object] = [
            None,
            True,
            3,
            2.5,
            float("nan"),
            float("-inf"),
            "text",
            decimal.Decimal("12.340"),
            when,
            datetime.date(2024, 5, 6),
            datetime.time(7, 8, 9),
            datetime.timedelta(days=1, hours=2, seconds=3.25),
            -datetime.timedelta(minutes=1),
            b"\xde\xad",
            memoryview(b"\x00\x01"),
            uuid.UUID(int=1),
            [1, [decimal.Decimal("1.5")]],
            {"a": {"b": b"\xff"}, 3: None},
            frozenset(),
            object,
        ]
        converted = [to_json_value(v) for v in values]
        self.assertEqual(
            converted,
            [
                None,
                True,
                3,
                2.5,
                "nan",
                "-inf",
                "text",
                "12.340",
                "2024-05-06T07:08:09.000500+00:00",
                "2024-05-06",
                "07:08:09",
                "P1DT2H0M3.25S",
                "-P0DT0H1M0S",
                "\\xdead",
                "\\x0001",
                "00000000-0000-0000-0000-000000000001",
                [1, ["1.5"]],
                {"a": {"b": "\\xff"}, "3": None},
                [],
                "<class 'object'>",
            ],
        )
        json.dumps(converted, allow_nan=False)


class MySQLTimeLimitTests(SynchronousTestCase):
    def test_mariadb_limits_every_statement(self) -> None:
        self.assertEqual(
            _session_time_limit("5.5.5-10.11.19-MariaDB-0+deb12u1", 1.5),
            ("SET SESSION max_statement_time = %s", (1.5,)),
        )

    def test_mysql_8_limits_select_in_milliseconds(self) -> None:
        self.assertEqual(
            _session_time_limit("8.0.36", 1.5), ("SET SESSION max_execution_time = %s", (1500,))
        )
        self.assertEqual(_session_time_limit("8.4.0", 0.0001)[1], (1,))

    def test_grant_pattern_escapes_wildcards(self) -> None:
        self.assertEqual(_grant_pattern("site_1_a"), "`site\\_1\\_a`")
        with self.assertRaises(DatabaseError):
            _grant_pattern("site_1`.* TO x; --")
