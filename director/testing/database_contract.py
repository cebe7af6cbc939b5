"""
The behaviour every L{IDatabaseAdmin} must show, as a mixin for test classes: the in-memory
fake runs it in C{tests/unit}, the real PostgreSQL and MariaDB adapters in
C{tests/integration}. A subclass supplies the admins, a login check, and L{finish}, which
settles each test's Deferred: at once for the fake (C{successResultOf}), on the running
reactor for real servers (pytest-twisted waits for a Deferred a test returns).
"""

from __future__ import annotations

import secrets
from typing import Any, cast

from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from director.orchestrator.databases import (
    DatabaseError,
    DatabaseKind,
    IDatabaseAdmin,
    SiteDatabase,
    new_password,
)
from director.testing.async_contract import contract_test

#: Names that must be refused before any SQL is sent: wrong shape, quoting tricks,
#: statement injection, a trailing newline (which a C{$}-anchored regex would let through),
#: a look-alike letter, too long for MySQL 8 user names, not a string at all.
BAD_IDENTIFIERS: tuple[object, ...] = (
    "",
    "postgres",
    "mysql",
    "site_",
    "site_A1",
    "Site_1",
    "site-1",
    "site_1\n",
    "site_1\x00",
    "site_1; DROP DATABASE postgres",
    "site_1'--",
    'site_1"; DROP ROLE postgres; --',
    "site_1`; DROP DATABASE mysql; --",
    "site_1 OR 1=1",
    "site_\u0131",
    "site_" + "a" * 28,
    None,
    42,
)


def unchecked_site(kind: object, name: object, username: object, password: object) -> SiteDatabase:
    """A SiteDatabase holding whatever a test wants refused (dataclasses check no types)."""
    make: Any = SiteDatabase
    site_db: SiteDatabase = make(kind, name, username, password, "127.0.0.1", 1)
    return site_db


class DatabaseAdminContract:
    """Mix into a test class and implement the hooks up to L{remember}."""

    def admin(self) -> IDatabaseAdmin:
        """The admin under test (the same object for the whole test)."""
        raise NotImplementedError

    def unreachable_admin(self) -> IDatabaseAdmin:
        """An admin of the same kind whose server cannot be reached."""
        raise NotImplementedError

    def can_connect(self, site_db: SiteDatabase) -> Deferred[bool]:
        """Whether these credentials open a session in C{site_db.name}."""
        raise NotImplementedError

    def finish(self, test: Deferred[None]) -> Deferred[None] | None:
        """Settle a test: check its result now, or return it for the runner to wait on."""
        raise NotImplementedError

    def remember(self, site_db: SiteDatabase) -> None:
        """Called for every site a test makes, so a real server can be cleaned up."""

    # ---------------------------------------------------------------- helpers

    def new_site(self, name: str | None = None) -> SiteDatabase:
        name = name or f"site_t{secrets.token_hex(6)}"
        site_db = SiteDatabase(self.admin().kind, name, name, new_password(), "127.0.0.1", 1)
        self.remember(site_db)
        return site_db

    def with_password(self, site_db: SiteDatabase, password: str) -> SiteDatabase:
        return SiteDatabase(
            site_db.kind, site_db.name, site_db.username, password, site_db.host, site_db.port
        )

    def sleep_sql(self, seconds: int) -> str:
        if self.admin().kind == "postgres":
            return f"SELECT pg_sleep({seconds})"
        return f"SELECT SLEEP({seconds})"

    async def assert_error(self, d: Deferred[Any], code: str) -> DatabaseError:
        """The L{DatabaseError} C{d} fails with, which must have C{code} and a message."""
        try:
            result = await d
        except DatabaseError as e:
            error = e
        else:
            raise AssertionError(f"expected a {code!r} DatabaseError, got {result!r}")
        assert error.code == code, f"expected {code!r}, got {error.code!r}: {error.message}"
        assert error.message, "the error has no message for a person"
        return error

    # ---------------------------------------------------------------- tests

    @contract_test
    async def test_provides_interface(self) -> None:
        assert verifyObject(IDatabaseAdmin, self.admin())
        assert self.admin().kind in ("postgres", "mysql")

    @contract_test
    async def test_create_makes_database_only_its_user_can_use(self) -> None:
        site_db = self.new_site()
        assert (await self.admin().exists(site_db.name)) is False
        await self.admin().create(site_db)
        assert (await self.admin().exists(site_db.name)) is True
        assert await self.can_connect(site_db)
        assert not await self.can_connect(self.with_password(site_db, new_password()))

    @contract_test
    async def test_create_again_keeps_database_and_sets_password(self) -> None:
        site_db = self.new_site()
        await self.admin().create(site_db)
        again = self.with_password(site_db, new_password())
        await self.admin().create(again)
        await self.admin().create(again)
        assert (await self.admin().exists(site_db.name)) is True
        assert await self.can_connect(again)
        assert not await self.can_connect(site_db), "the old password still works"

    @contract_test
    async def test_set_password(self) -> None:
        site_db = self.new_site()
        await self.admin().create(site_db)
        changed = self.with_password(site_db, new_password())
        await self.admin().set_password(changed)
        assert await self.can_connect(changed)
        assert not await self.can_connect(site_db), "the old password still works"

    @contract_test
    async def test_set_password_of_unknown_user(self) -> None:
        await self.assert_error(self.admin().set_password(self.new_site()), "not_found")

    @contract_test
    async def test_other_site_user_cannot_connect(self) -> None:
        # On MySQL, `_` in a GRANT's database name is a wildcard: an unescaped grant on
        # site_<x>_1 would also open site_<x>a1.
        stem = f"site_t{secrets.token_hex(4)}"
        first = self.new_site(f"{stem}a1")
        second = self.new_site(f"{stem}_1")
        await self.admin().create(first)
        await self.admin().create(second)
        intruder = SiteDatabase(
            second.kind, first.name, second.username, second.password, second.host, second.port
        )
        assert not await self.can_connect(intruder)
        assert await self.can_connect(first)
        assert await self.can_connect(second)

    @contract_test
    async def test_drop_removes_database_and_user(self) -> None:
        site_db = self.new_site()
        await self.admin().create(site_db)
        await self.admin().drop(site_db.name, site_db.username)
        assert (await self.admin().exists(site_db.name)) is False
        assert not await self.can_connect(site_db)
        await self.assert_error(self.admin().set_password(site_db), "not_found")

    @contract_test
    async def test_drop_is_idempotent(self) -> None:
        site_db = self.new_site()
        await self.admin().drop(site_db.name, site_db.username)
        await self.admin().create(site_db)
        await self.admin().drop(site_db.name, site_db.username)
        await self.admin().drop(site_db.name, site_db.username)
        assert (await self.admin().exists(site_db.name)) is False

    @contract_test
    async def test_drop_leaves_other_sites_alone(self) -> None:
        kept, dropped = self.new_site(), self.new_site()
        await self.admin().create(kept)
        await self.admin().create(dropped)
        await self.admin().drop(dropped.name, dropped.username)
        assert (await self.admin().exists(kept.name)) is True
        assert await self.can_connect(kept)

    @contract_test
    async def test_create_after_drop(self) -> None:
        site_db = self.new_site()
        await self.admin().create(site_db)
        await self.admin().drop(site_db.name, site_db.username)
        fresh = self.with_password(site_db, new_password())
        await self.admin().create(fresh)
        assert await self.can_connect(fresh)
        assert not await self.can_connect(site_db)

    @contract_test
    async def test_bad_names_refused_before_reaching_the_server(self) -> None:
        # The unreachable admin would answer `unavailable` if anything were sent.
        for admin in (self.unreachable_admin(), self.admin()):
            good = self.new_site()
            for bad in BAD_IDENTIFIERS:
                as_name = unchecked_site(admin.kind, bad, good.username, good.password)
                as_user = unchecked_site(admin.kind, good.name, bad, good.password)
                for site_db in (as_name, as_user):
                    await self.assert_error(admin.create(site_db), "invalid_name")
                    await self.assert_error(admin.set_password(site_db), "invalid_name")
                    await self.assert_error(admin.query(site_db, "SELECT 1", 5, 10), "invalid_name")
                await self.assert_error(admin.drop(cast(str, bad), good.username), "invalid_name")
                await self.assert_error(admin.drop(good.name, cast(str, bad)), "invalid_name")
                await self.assert_error(admin.exists(cast(str, bad)), "invalid_name")

    @contract_test
    async def test_bad_passwords_refused(self) -> None:
        good = self.new_site()
        for password in ("", "short", "line\nbreak", "nul\x00nul-nul", "x" * 257, None):
            site_db = unchecked_site(good.kind, good.name, good.username, password)
            for admin in (self.unreachable_admin(), self.admin()):
                error = await self.assert_error(admin.create(site_db), "invalid_password")
                assert not password or password not in error.message
                await self.assert_error(admin.set_password(site_db), "invalid_password")
        assert (await self.admin().exists(good.name)) is False

    @contract_test
    async def test_other_kind_refused(self) -> None:
        site_db = self.new_site()
        other: DatabaseKind = "mysql" if site_db.kind == "postgres" else "postgres"
        wrong = SiteDatabase(
            other, site_db.name, site_db.username, site_db.password, site_db.host, site_db.port
        )
        await self.assert_error(self.unreachable_admin().create(wrong), "wrong_kind")
        await self.assert_error(self.admin().query(wrong, "SELECT 1", 5, 10), "wrong_kind")

    @contract_test
    async def test_unreachable_server(self) -> None:
        admin = self.unreachable_admin()
        site_db = self.new_site()
        await self.assert_error(admin.create(site_db), "unavailable")
        await self.assert_error(admin.exists(site_db.name), "unavailable")
        await self.assert_error(admin.drop(site_db.name, site_db.username), "unavailable")
        await self.assert_error(admin.set_password(site_db), "unavailable")
        await self.assert_error(admin.query(site_db, "SELECT 1", 5, 10), "unavailable")

    @contract_test
    async def test_query_select(self) -> None:
        site_db = self.new_site()
        await self.admin().create(site_db)
        result = await self.admin().query(site_db, "SELECT 1", 5, 10)
        assert len(result["columns"]) == 1
        assert result["rows"] == [[1]]
        assert result["rowcount"] == 1
        assert result["truncated"] is False

    @contract_test
    async def test_query_max_rows_zero(self) -> None:
        site_db = self.new_site()
        await self.admin().create(site_db)
        result = await self.admin().query(site_db, "SELECT 7", 5, 0)
        assert result["rows"] == []
        assert result["rowcount"] == 1
        assert result["truncated"] is True

    @contract_test
    async def test_query_time_limit(self) -> None:
        site_db = self.new_site()
        await self.admin().create(site_db)
        error = await self.assert_error(
            self.admin().query(site_db, self.sleep_sql(5), 1, 10), "query_timeout"
        )
        assert "1 s" in error.message

    @contract_test
    async def test_query_bad_arguments(self) -> None:
        site_db = self.new_site()
        admin = self.unreachable_admin()
        for sql, timeout, max_rows in [
            ("", 5, 10),
            ("   ", 5, 10),
            ("SELECT 1", 0, 10),
            ("SELECT 1", -1, 10),
            ("SELECT 1", 10_000, 10),
            ("SELECT 1", True, 10),
            ("SELECT 1", 5, -1),
            ("SELECT 1", 5, 1_000_000),
            ("SELECT 1", 5, 2.5),
            ("SELECT '\x00'", 5, 10),
        ]:
            d = admin.query(site_db, sql, cast(float, timeout), cast(int, max_rows))
            await self.assert_error(d, "invalid_argument")

    @contract_test
    async def test_query_needs_the_sites_credentials(self) -> None:
        site_db = self.new_site()
        await self.assert_error(self.admin().query(site_db, "SELECT 1", 5, 10), "access_denied")
        await self.admin().create(site_db)
        wrong = self.with_password(site_db, new_password())
        await self.assert_error(self.admin().query(wrong, "SELECT 1", 5, 10), "access_denied")
        await self.admin().drop(site_db.name, site_db.username)
        await self.assert_error(self.admin().query(site_db, "SELECT 1", 5, 10), "access_denied")

    @contract_test
    async def test_query_runs_as_the_site_user(self) -> None:
        first, second = self.new_site(), self.new_site()
        await self.admin().create(first)
        await self.admin().create(second)
        cross = SiteDatabase(
            first.kind, second.name, first.username, first.password, first.host, first.port
        )
        await self.assert_error(self.admin().query(cross, "SELECT 1", 5, 10), "access_denied")
