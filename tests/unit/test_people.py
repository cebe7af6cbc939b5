"""People: members added before they first sign in, and mail to those who are added."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from director.manager.store import Conflict
from director.testing.manager import ManagerHarness, RecordingMailer, static_site_fields


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


class PeopleAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.mail = RecordingMailer()
        self.h.api.mailer = self.mail
        self.http: Any = StubTreq(self.h.api.app.resource())
        self.alice = self.h.user("alice")
        self.h.user("bob")
        self.admin = self.h.user("root", role="admin")
        self.h.result(self.h.store.update_user("bob", email="bob@school.test"))

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        d = self.http.request(
            method,
            f"http://m.test{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": [f"Bearer {token}"]},
        )
        self.http.flush()
        response = self.successResultOf(d)
        return response.code, json.loads(self.successResultOf(self.http.content(response)))

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
