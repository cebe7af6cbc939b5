"""
The manager's store on a real database (SQLite, or PostgreSQL in `make unit-postgres`):
constraints, claims, migrations and timestamps.
"""

import tempfile
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from director.manager.store import Conflict
from director.testing import manager_database
from director.testing.manager import ManagerHarness, static_site_fields

pytestmark = pytest.mark.manager_store


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.h = ManagerHarness(self.dir)
        self.store = self.h.store

    def site(self, name: str, members: list[str]) -> int:
        site, _ = self.h.result(
            self.store.create_site(
                static_site_fields(name),
                members,
                ("create_site", ["apply_orchestrator", "apply_router"]),
                None,
            )
        )
        return int(site.id)

    def test_migrations_match_the_schema(self) -> None:
        """Alembic's migrations produce exactly the tables the code declares."""
        self.assertEqual(manager_database.Schema(self.store.engine).differences(), [])

    def test_site_ids_are_never_given_twice(self) -> None:
        """A site created after the newest site was deleted gets a new id, not the old one."""
        self.h.user("alice")
        first = self.site("first", ["alice"])
        newest = self.site("newest", ["alice"])
        self.h.result(self.store.delete_site_rows(newest))
        again = self.site("again", ["alice"])
        self.assertNotIn(again, (first, newest))
        self.assertGreater(again, newest)
        self.assertEqual(
            self.h.result(self.store.list_operations(site_id=again))[0].site_name, "again"
        )
        self.assertEqual(len(self.h.result(self.store.list_operations(site_id=again))), 1)

    def test_timestamps_come_back_in_utc(self) -> None:
        """Whatever the database server's time zone (`make unit-postgres`'s is not UTC)."""
        user = self.h.result(self.store.create_user("alice", "student", None))
        self.h.result(self.store.create_token(user.id, "ci"))
        (token,) = self.h.result(self.store.list_tokens(user.id))
        created = token.to_json()["created_at"]
        self.assertTrue(created.endswith("+00:00"), created)

    def test_migration_starts_site_ids_above_every_id_given(self) -> None:
        """On a database from before 0002, new ids start above live and deleted sites' ids."""
        db = manager_database.migrated_to("0001")
        db.execute(
            "INSERT INTO operations (site_id, site_name, type, status, params,"
            " created_at, updated_at, attempts, next_attempt_at)"
            " VALUES (7, 'deleted', 'delete_site', 'succeeded', '{}',"
            " '2026-01-01', '2026-01-01', 0, 0)"
        )
        db.upgrade()
        store = db.store()
        self.assertEqual(self.h.result(store.highest_site_id()), 7)
        self.h.result(store.create_user("alice", "student"))
        site, _ = self.h.result(
            store.create_site(
                static_site_fields("fresh"),
                ["alice"],
                ("create_site", ["apply_orchestrator"]),
                None,
            )
        )
        self.assertEqual(site.id, 8)

    def test_unique_usernames_and_site_names(self) -> None:
        self.h.user("alice")
        with self.assertRaises(Conflict):
            self.h.result(self.store.create_user("alice", "student"))
        self.site("one", ["alice"])
        with self.assertRaises(Conflict) as cm:
            self.site("one", ["alice"])
        self.assertEqual(cm.exception.code, "name_taken")

    def test_site_without_a_member_who_signed_in_is_not_created(self) -> None:
        """
        Creating a site is all or nothing: members who all have no account yet (only
        pending ones) leave no site behind.
        """
        self.h.user("alice")
        with self.assertRaises(Conflict) as cm:
            self.site("two", ["nobody", "noone"])
        self.assertEqual(cm.exception.code, "no_member")
        self.assertIsNone(self.h.result(self.store.get_site("two")))

    def test_one_active_operation_per_site(self) -> None:
        """The database refuses a second pending/running operation on the same site."""
        self.h.user("alice")
        site_id = self.site("three", ["alice"])
        with self.assertRaises(Conflict) as cm:
            self.h.result(self.store.create_operation(site_id, "three", "restart", ["x"]))
        self.assertEqual(cm.exception.code, "operation_running")

    def test_custom_domains_unique_across_sites(self) -> None:
        self.h.user("alice")
        a = self.site("aaa", ["alice"])
        b = self.site("bbb", ["alice"])
        self.h.result(self.store.update_site(a, {}, domains=["www.example.org"]))
        with self.assertRaises(Conflict) as cm:
            self.h.result(self.store.update_site(b, {}, domains=["www.example.org"]))
        self.assertEqual(cm.exception.code, "domain_taken")
        site = self.h.result(self.store.get_site("bbb"))
        self.assertEqual(site.domains, ())

    def test_claims_are_exclusive_and_leases_expire(self) -> None:
        """
        Two workers never claim the same operation; when a worker's lease runs out (it
        died), another worker claims the operation again and can finish it.
        """
        self.h.user("alice")
        self.site("four", ["alice"])
        first = self.h.result(self.store.claim_operation("w1", 1000.0, 60))
        self.assertIsNotNone(first)
        self.assertIsNone(self.h.result(self.store.claim_operation("w2", 1001.0, 60)))
        again = self.h.result(self.store.claim_operation("w2", 1061.0, 60))
        self.assertEqual(again.id, first.id)
        self.assertEqual(again.status, "running")

    def test_tokens_are_stored_hashed(self) -> None:
        token = self.h.user("bob")
        self.assertEqual(self.h.result(self.store.user_for_token(token)).username, "bob")
        self.assertIsNone(self.h.result(self.store.user_for_token(token + "x")))
        with self.store.engine.connect() as conn:
            stored = [row[0] for row in conn.exec_driver_sql("select token_hash from api_tokens")]
        self.assertNotIn(token, stored)
