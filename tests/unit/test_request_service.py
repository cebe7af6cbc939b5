"""
L{RequestService} directly, over the store on a test database: a student's request, the
teacher's approval, the administrator's creation through L{SiteService}, the refusals, the
comments, and who is mailed at each step.
"""

from __future__ import annotations

from typing import TypeVar

import pytest

from director.manager.access import AccessDenied
from director.manager.models import User, UserLimits, ValidationError
from director.manager.request_service import RequestService
from director.manager.site_service import SiteService
from director.manager.store import Conflict, NotFound
from director.testing.manager import RecordingMailer, ServiceTestCase

pytestmark = pytest.mark.manager_store

T = TypeVar("T")


class RequestServiceTests(ServiceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.mail = RecordingMailer()
        self.service = RequestService(
            self.h.store, SiteService(self.h.store, self.h.pool), self.mail, UserLimits()
        )
        self.student = self.make_user("stu", "student")
        self.other = self.make_user("oth", "student")
        self.teacher = self.make_user("tea", "teacher")
        self.admin = self.make_user("adm", "admin")

    def make_user(self, name: str, role: str) -> User:
        self.h.result(self.h.store.create_user(name, role, None))
        user: User = self.h.result(self.h.store.update_user(name, email=f"{name}@school.test"))
        return user

    def submit(self, name: str = "robotics", teacher: object = "tea") -> int:
        return self.run_(
            self.service.submit(self.student, name, "Robotics club", "", teacher, None)
        )

    def test_request_to_site(self) -> None:
        """Submitted, approved by its teacher, created by an admin: a site with both members."""
        request_id = self.submit()
        self.assertEqual(self.mail.sent[-1][0], ["tea@school.test"])
        self.assertEqual(
            self.run_(self.service.act(self.teacher, request_id, "approve")).status,
            "pending-admin",
        )
        self.assertEqual(self.mail.sent[-1][0], ["adm@school.test"])
        outcome = self.run_(self.service.act(self.admin, request_id, "create"))
        assert outcome.site is not None and outcome.operation is not None
        self.assertEqual(outcome.status, "created")
        self.assertEqual((outcome.site.name, outcome.site.purpose), ("robotics", "activity"))
        self.assertEqual(set(outcome.site.members), {"stu", "tea"})
        self.assertEqual(outcome.operation.type, "create_site")
        self.assertEqual(self.mail.sent[-1][0], ["stu@school.test"])
        (req,) = self.run_(self.service.visible_to(self.student))
        self.assertEqual(req.status, "created")
        actions = [e.action for e in self.h.result(self.h.store.list_audit())]
        for action in ("request_site", "request_approve", "create_site_from_request"):
            self.assertIn(action, actions)

    def test_bad_requests_refused(self) -> None:
        """A bad name or activity, or a sponsor who is no teacher, records nothing."""
        self.assertIsInstance(
            self.fails(self.service.submit(self.student, "Bad Name!", "a", "", "tea", None)),
            ValidationError,
        )
        self.assertIsInstance(
            self.fails(self.service.submit(self.student, "ok", "", "", "tea", None)),
            ValidationError,
        )
        self.assertIsInstance(
            self.fails(self.service.submit(self.student, "ok", "a", "", "no one", None)),
            ValidationError,
        )
        error = self.fails(self.service.submit(self.student, "ok", "a", "", "oth", None))
        assert isinstance(error, Conflict)
        self.assertEqual(error.code, "unknown_teacher")
        self.assertEqual(self.run_(self.service.visible_to(self.admin)), [])
        self.assertEqual(self.mail.sent, [])

    def test_who_may_act(self) -> None:
        """
        Only its teacher (or an admin) approves; only an admin creates; another student does
        not see it; an action out of turn is a bad state.
        """
        request_id = self.submit()
        self.assertEqual(self.run_(self.service.visible_to(self.other)), [])
        for user in (self.student, self.other):
            self.assertIsInstance(
                self.fails(self.service.act(user, request_id, "approve")), NotFound
            )
        error = self.fails(self.service.act(self.admin, request_id, "create"))
        assert isinstance(error, Conflict)
        self.assertEqual(error.code, "bad_state")
        self.run_(self.service.act(self.teacher, request_id, "approve"))
        error = self.fails(self.service.act(self.teacher, request_id, "create"))
        assert isinstance(error, AccessDenied)
        self.assertEqual((error.status, error.code), (403, "forbidden"))
        self.assertIsInstance(
            self.fails(self.service.act(self.teacher, request_id, "reject")), Conflict
        )
        self.assertEqual(
            self.run_(self.service.act(self.admin, request_id, "reject")).status, "rejected"
        )
        self.assertEqual(self.mail.sent[-1][0], ["stu@school.test"])
        self.assertIsInstance(self.fails(self.service.act(self.admin, 999, "approve")), NotFound)

    def test_comments(self) -> None:
        """Admins' comments are stored and audited; an unknown request is NotFound."""
        request_id = self.submit()
        req = self.run_(
            self.service.comment(self.admin, request_id, {"public_comment": "Nice idea"})
        )
        self.assertEqual(req.public_comment, "Nice idea")
        self.assertIn(
            ("comment_request", str(request_id)),
            [(e.action, e.target) for e in self.h.result(self.h.store.list_audit())],
        )
        self.assertIsInstance(
            self.fails(self.service.comment(self.admin, 999, {"admin_comment": "x"})), NotFound
        )
        self.assertIsInstance(
            self.fails(self.service.comment(self.admin, request_id, {"admin_comment": 5})),
            ValidationError,
        )
