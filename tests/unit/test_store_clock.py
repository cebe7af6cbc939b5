"""
The store's one clock and its typed rows, on a real database (SQLite, or PostgreSQL in `make
unit-postgres`): every time it records or compares comes from the clock it was given, and
each row it returns is frozen.
"""

import dataclasses
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.common.threads import InlineRunner
from director.manager.placement_store import PlacementStore
from director.manager.store import Store
from director.manager.store.base import aware
from director.testing import manager_database
from director.testing.manager import static_site_fields

pytestmark = pytest.mark.manager_store

T = TypeVar("T")
START = 1_900_000_000.0  # 2030-03-17, far from the wall clock's time


class StoreClockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        engine = manager_database.engine(manager_database.database_url(Path(tempfile.mkdtemp())))
        self.store = Store(engine, InlineRunner(), self.clock)
        self.placements = PlacementStore(engine, InlineRunner(), self.clock)
        self.user = self.result(self.store.create_user("alice", "student"))

    def result(self, d: "Deferred[T]") -> T:
        return self.successResultOf(d)

    def at(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    def test_now_is_the_clocks_time(self) -> None:
        """C{Store.now} reads the injected clock, not the wall clock."""
        self.assertEqual(self.store.now(), self.at(START))
        self.clock.advance(90)
        self.assertEqual(self.store.now(), self.at(START + 90))

    def test_records_are_stamped_by_the_clock(self) -> None:
        """Tokens, banners, operations, sites and orchestrators get the clock's time."""
        self.result(self.store.create_token(self.user.id, "ci"))
        [token] = self.result(self.store.list_tokens(self.user.id))
        self.assertEqual(token.created_at, self.at(START))
        banner = self.result(self.store.add_banner("hello", "info", None, None))
        self.assertEqual(banner.created_at, self.at(START))
        self.clock.advance(5)
        site, op = self.result(
            self.store.create_site(
                static_site_fields("clocked"),
                ["alice"],
                ("create_site", ["apply_orchestrator"]),
                None,
            )
        )
        self.assertEqual(aware(site.created_at), self.at(START + 5))
        self.assertEqual(aware(op.created_at), self.at(START + 5))
        self.clock.advance(5)
        self.result(self.store.set_action(op.id, 0, "running"))
        self.assertEqual(
            aware(self.result(self.store.get_operation(op.id)).updated_at), self.at(START + 10)
        )
        added = self.result(self.placements.add("node9", "http://node9.invalid", "10.0.0.9:80"))
        self.assertEqual(aware(added.created_at), self.at(START + 10))

    def test_token_expiry_goes_by_the_clock(self) -> None:
        """A token expires when the store's clock passes its expiry, whatever the wall says."""
        secret = self.result(self.store.create_token(self.user.id, "short", self.at(START + 60)))
        self.assertEqual(self.result(self.store.user_for_token(secret)), self.user)
        self.assertFalse(self.result(self.store.list_tokens(self.user.id))[0].expired)
        self.clock.advance(61)
        self.assertIsNone(self.result(self.store.user_for_token(secret)))
        self.assertTrue(self.result(self.store.list_tokens(self.user.id))[0].expired)

    def test_session_lifetime_goes_by_the_clock(self) -> None:
        """A session lasts its lifetime on the store's clock; then it is gone."""
        session_id, csrf = self.result(self.store.create_session(self.user.id, timedelta(hours=1)))
        self.assertEqual(self.result(self.store.session(session_id)), (self.user, csrf))
        self.assertEqual(self.result(self.store.session_started(session_id)), self.at(START))
        self.clock.advance(3601)
        self.assertIsNone(self.result(self.store.session(session_id)))
        self.assertIsNone(self.result(self.store.session_started(session_id)))

    def test_banners_expire_by_the_clock(self) -> None:
        """Banners active at the store's now: one that expired on its clock is left out."""
        self.result(self.store.add_banner("soon over", "info", None, self.at(START + 60)))
        kept = self.result(self.store.add_banner("stays", "warning", None, None))
        self.clock.advance(120)
        self.assertEqual(
            [b.id for b in self.result(self.store.banners(self.store.now()))], [kept.id]
        )


class TypedRowTests(SynchronousTestCase):
    def setUp(self) -> None:
        engine = manager_database.engine(manager_database.database_url(Path(tempfile.mkdtemp())))
        self.store = Store(engine, InlineRunner())
        self.user = self.successResultOf(self.store.create_user("bob", "admin"))

    def rows(self) -> list[Any]:
        s = self.store
        s.create_token(self.user.id, "ci")
        s.add_ssh_key(self.user.id, "ssh-ed25519 AAAA", "SHA256:x", "laptop")
        s.add_banner("hello", "info", self.user.id, None)
        s.audit(self.user, "did", "it", {"n": 1})
        s.put_image("director/python:3", "Python", is_default=True)
        s.put_database_host("postgres", "127.0.0.1", 5432, "root", "pw", None, None)
        teacher = self.successResultOf(s.create_user("carol", "teacher"))
        s.create_request(self.user.id, teacher.id, "club", "chess", "")
        found: list[Any] = []
        reads: tuple[Deferred[Any], ...] = (
            s.list_tokens(self.user.id),
            s.ssh_keys(self.user.id),
            s.banners(),
            s.list_audit(),
            s.list_images(),
            s.list_database_hosts(),
            s.list_requests(),
        )
        for d in reads:
            found += self.successResultOf(d)
        return found

    def test_every_row_is_a_frozen_dataclass(self) -> None:
        """No row the store returns is a dict; none can be changed in place."""
        rows = self.rows()
        self.assertEqual(len(rows), 7)
        for row in rows:
            self.assertTrue(dataclasses.is_dataclass(row), row)
            field = dataclasses.fields(row)[0].name
            with self.assertRaises(dataclasses.FrozenInstanceError):
                setattr(row, field, None)

    def test_json_forms(self) -> None:
        """Each row's JSON form has the keys the API has always given."""
        token, key, banner, entry, image, host, request = self.rows()
        self.assertEqual(
            set(token.to_json()),
            {"id", "name", "created_at", "expires_at", "last_used_at", "expired"},
        )
        self.assertEqual(set(key.to_json()), {"id", "fingerprint", "comment", "public_key"})
        self.assertEqual(
            set(banner.to_json()), {"id", "message", "level", "created_at", "expires_at"}
        )
        self.assertEqual(entry.to_json()["details"], {"n": 1})
        self.assertEqual(set(entry.to_json()), {"at", "user", "action", "target", "details"})
        self.assertEqual(image.to_json()["name"], "director/python:3")
        self.assertIsNone(host.to_json(show_password=False)["admin_password"])
        self.assertEqual(host.to_json()["admin_password"], "pw")
        self.assertEqual(host.admin().admin_port, 5432)
        self.assertNotIn("admin_comment", request.to_json(admin=False))
        self.assertEqual(request.to_json()["teacher"], "carol")
