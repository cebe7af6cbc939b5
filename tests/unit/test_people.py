"""People: members added before they first sign in, and mail to those who are added."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from director.manager.store import Conflict
from director.testing.manager import ManagerHarness, RecordingMailer, static_site_fields

pytestmark = pytest.mark.manager_store


class PendingMemberStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.h.user("alice")

    def site(self, name: str) -> Any:
        return self.h.result(self.h.store.get_site(name))

    def test_people_without_an_account_wait_and_join_at_their_first_sign_in(self) -> None:
        site, _ = self.h.result(
            self.h.store.create_site(
                static_site_fields("club"), ["alice", "newkid"], ("create_site", []), None
            )
        )
        self.assertEqual((site.members, site.pending_members), (("alice",), ("newkid",)))
        self.h.result(self.h.store.create_user("newkid", "student"))
        self.assertEqual(
            (self.site("club").members, self.site("club").pending_members),
            (("alice", "newkid"), ()),
        )

    def test_an_account_made_at_an_oidc_sign_in_joins_too(self) -> None:
        self.h.result(
            self.h.store.create_site(
                static_site_fields("club"), ["alice", "oidckid"], ("create_site", []), None
            )
        )
        self.h.result(
            self.h.store.create_oidc_user(
                ["oidckid"], "student", "o@school.test", "O. Kid", "https://idp.test", "sub-1"
            )
        )
        self.assertEqual(self.site("club").members, ("alice", "oidckid"))
        self.assertEqual(self.site("club").pending_members, ())

    def test_the_member_list_replaces_pending_ones_too(self) -> None:
        site, _ = self.h.result(
            self.h.store.create_site(
                static_site_fields("club"), ["alice", "a1", "a2"], ("create_site", []), None
            )
        )
        self.h.result(self.h.store.update_site(site.id, {}, members=["alice", "a2", "a3"]))
        self.assertEqual(self.site("club").pending_members, ("a2", "a3"))
        # Removed before signing in: a1's first sign-in joins nothing.
        self.h.result(self.h.store.create_user("a1", "student"))
        self.assertEqual(self.site("club").members, ("alice",))

    def test_someone_with_an_account_must_remain(self) -> None:
        site, _ = self.h.result(
            self.h.store.create_site(
                static_site_fields("club"), ["alice"], ("create_site", []), None
            )
        )
        failure = self.h.store.update_site(site.id, {"description": "x"}, members=["ghost"])
        error = self.failureResultOf(failure, Conflict).value
        self.assertEqual(error.code, "no_member")
        self.assertEqual(
            (self.site("club").members, self.site("club").description), (("alice",), "")
        )


class _APICase(SynchronousTestCase):
    h: ManagerHarness

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return self.h.call(method, path, token, body)


class PeopleAPITests(_APICase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.mail = RecordingMailer()
        self.h.api.mailer = self.mail
        self.alice = self.h.user("alice")
        self.h.user("bob")
        self.admin = self.h.user("root", role="admin")
        self.h.result(self.h.store.update_user("bob", email="bob@school.test"))

    def test_members_before_they_sign_in(self) -> None:
        code, body = self.call(
            "POST", "/api/v1/sites", self.alice, {"name": "team", "users": ["bob", "newkid"]}
        )
        self.assertEqual(code, 202)
        self.assertEqual(body["site"]["members"], ["alice", "bob"])
        self.assertEqual(body["site"]["pending_members"], ["newkid"])
        # bob, who has an address, is told; alice added herself; newkid has no account yet.
        self.assertEqual([to for to, _, _ in self.mail.sent], [["bob@school.test"]])
        self.assertIn("team", self.mail.sent[0][1])
        self.h.engine.wake()
        code, _ = self.call("POST", "/api/v1/users", self.admin, {"username": "newkid"})
        self.assertEqual(code, 201)
        code, body = self.call("GET", "/api/v1/sites/team", self.alice)
        self.assertEqual(
            (body["members"], body["pending_members"]), (["alice", "bob", "newkid"], [])
        )

    def test_member_names_are_checked_and_someone_with_an_account_stays(self) -> None:
        code, body = self.call(
            "POST", "/api/v1/sites", self.alice, {"name": "team", "users": ["Not A Name!"]}
        )
        self.assertEqual((code, body.get("field")), (400, "users"))
        self.assertEqual(self.call("POST", "/api/v1/sites", self.alice, {"name": "team"})[0], 202)
        self.h.engine.wake()
        code, body = self.call("PATCH", "/api/v1/sites/team", self.alice, {"users": ["ghost"]})
        self.assertEqual((code, body["error"]), (409, "no_member"))
        code, body = self.call(
            "PATCH", "/api/v1/sites/team", self.alice, {"users": ["alice", "bob"]}
        )
        self.assertEqual(code, 200)
        self.assertEqual(self.mail.sent[-1][0], ["bob@school.test"])


class NoticesAndServiceAccountTests(_APICase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.mail = RecordingMailer()
        self.h.api.mailer = self.mail
        self.alice = self.h.user("alice")
        self.bob = self.h.user("bob")
        self.h.user("tess", role="teacher")
        self.admin = self.h.user("root", role="admin")
        for name in ("alice", "bob", "tess", "root"):
            self.h.result(self.h.store.update_user(name, email=f"{name}@school.test"))
        self.h.result(self.h.store.update_user("bob", is_active=False))

    def test_banners(self) -> None:
        code, body = self.call("POST", "/api/v1/banners", self.alice, {"message": "hi"})
        self.assertEqual(code, 403)
        code, first = self.call(
            "POST", "/api/v1/banners", self.admin, {"message": "Maintenance <b>tonight</b>"}
        )
        self.assertEqual((code, first["level"], first["expires_at"]), (201, "info", None))
        code, second = self.call(
            "POST",
            "/api/v1/banners",
            self.admin,
            {"message": "Soon over", "level": "warning", "expires_in_hours": 1},
        )
        self.assertEqual(code, 201)
        for bad in (
            {"message": ""},
            {"message": "x", "level": "loud"},
            {"message": "x", "expires_in_hours": 0},
        ):
            self.assertEqual(self.call("POST", "/api/v1/banners", self.admin, bad)[0], 400, bad)
        code, body = self.call("GET", "/api/v1/banners", self.alice)
        self.assertEqual(
            [b["message"] for b in body["banners"]], ["Soon over", "Maintenance <b>tonight</b>"]
        )
        # An hour later the second one is gone for everyone; admins still list it with all=1.
        from datetime import UTC, datetime, timedelta

        later = datetime.now(UTC) + timedelta(hours=2)
        self.assertEqual([b.id for b in self.h.result(self.h.store.banners(later))], [first["id"]])
        code, body = self.call("DELETE", f"/api/v1/banners/{first['id']}", self.admin)
        self.assertEqual(code, 200)
        self.assertEqual(self.call("DELETE", f"/api/v1/banners/{first['id']}", self.admin)[0], 404)
        code, body = self.call("GET", "/api/v1/banners?all=1", self.admin)
        self.assertEqual([b["id"] for b in body["banners"]], [second["id"]])

    def test_service_accounts_have_tokens_only(self) -> None:
        code, body = self.call(
            "POST",
            "/api/v1/users",
            self.admin,
            {
                "username": "backup-bot",
                "role": "admin",
                "is_service": True,
                "password": "a-long-password-1",
            },
        )
        self.assertEqual((code, body["error"]), (409, "service_account"))
        code, body = self.call(
            "POST", "/api/v1/users", self.admin, {"username": "backup-bot", "is_service": True}
        )
        self.assertEqual((code, body["is_service"]), (201, True))
        code, body = self.call("POST", "/api/v1/users/backup-bot/tokens", self.alice, {})
        self.assertEqual(code, 403)
        code, body = self.call("POST", "/api/v1/users/alice/tokens", self.admin, {})
        self.assertEqual((code, body["error"]), (409, "not_service"))  # no impersonation
        self.assertEqual(self.call("POST", "/api/v1/users/nobody/tokens", self.admin, {})[0], 404)
        code, body = self.call(
            "POST", "/api/v1/users/backup-bot/tokens", self.admin, {"name": "nightly"}
        )
        self.assertEqual(code, 201)
        code, me = self.call("GET", "/api/v1/me", body["token"])
        self.assertEqual((code, me["username"], me["is_service"]), (200, "backup-bot", True))
        code, answer = self.call(
            "PATCH", "/api/v1/users/backup-bot", self.admin, {"password": "a-long-password-1"}
        )
        self.assertEqual((code, answer["error"]), (409, "service_account"))
        code, answer = self.call(
            "PATCH", "/api/v1/me", body["token"], {"password": "a-long-password-1"}
        )
        self.assertEqual((code, answer["error"]), (409, "service_account"))
        self.assertIsNone(self.h.result(self.h.store.password_hash("backup-bot"))[1])

    def test_mail_to_a_role_or_a_sites_members(self) -> None:
        self.h.result(self.h.store.create_user("bot", "student", is_service=True))
        self.h.result(self.h.store.update_user("bot", email="bot@school.test"))
        code, body = self.call(
            "POST",
            "/api/v1/mail",
            self.admin,
            {"role": "student", "subject": "Hello\nthere", "body": "Hi."},
        )
        self.assertEqual((code, body["recipients"]), (202, 1))
        # Each their own copy; not bob (deactivated), not the service account; one line.
        self.assertEqual(self.mail.sent, [(["alice@school.test"], "Hello there", "Hi.")])
        code, body = self.call(
            "POST", "/api/v1/mail", self.admin, {"role": "everyone", "subject": "s", "body": "b"}
        )
        self.assertEqual(
            sorted(to[0] for to, _, _ in self.mail.sent[1:]),
            ["alice@school.test", "root@school.test", "tess@school.test"],
        )
        self.call("POST", "/api/v1/sites", self.alice, {"name": "team", "users": ["tess"]})
        self.mail.sent.clear()
        code, body = self.call(
            "POST", "/api/v1/mail", self.admin, {"site": "team", "subject": "s", "body": "b"}
        )
        self.assertEqual(
            (code, sorted(to[0] for to, _, _ in self.mail.sent)),
            (202, ["alice@school.test", "tess@school.test"]),
        )
        for bad in (
            {"subject": "s", "body": "b"},
            {"role": "student", "site": "team", "subject": "s", "body": "b"},
            {"role": "parents", "subject": "s", "body": "b"},
            {"role": "student", "subject": "", "body": "b"},
        ):
            self.assertEqual(self.call("POST", "/api/v1/mail", self.admin, bad)[0], 400, bad)
        self.assertEqual(
            self.call(
                "POST", "/api/v1/mail", self.admin, {"site": "nope", "subject": "s", "body": "b"}
            )[0],
            404,
        )
        self.assertEqual(
            self.call(
                "POST", "/api/v1/mail", self.alice, {"role": "student", "subject": "s", "body": "b"}
            )[0],
            403,
        )
