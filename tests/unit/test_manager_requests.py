"""Site requests: student -> teacher -> admin, with e-mail to whoever acts next."""

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from director.testing.manager import ManagerHarness, RecordingMailer

pytestmark = pytest.mark.manager_store


class RequestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.mail = RecordingMailer()
        self.h.api.mailer = self.mail
        self.http: Any = StubTreq(self.h.api.app.resource())
        self.student = self.h.user("stu")
        self.teacher = self.h.user("tea", role="teacher")
        self.admin = self.h.user("adm", role="admin")
        for name in ("stu", "tea", "adm"):
            self.h.result(self.h.store.update_user(name, email=f"{name}@school.test"))

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        response = self.successResultOf(
            self.http.request(
                method,
                f"http://m.test{path}",
                data=json.dumps(body).encode() if body else None,
                headers={"Authorization": [f"Bearer {token}"]},
            )
        )
        return response.code, json.loads(self.successResultOf(self.http.content(response)))

    def test_request_approved_and_created_in_one_click(self) -> None:
        code, made = self.call(
            "POST",
            "/api/v1/requests",
            self.student,
            {"name": "robotics", "activity": "Robotics club", "teacher": "tea"},
        )
        self.assertEqual(code, 201)
        self.assertEqual(self.mail.sent[-1][0], ["tea@school.test"])
        # The student cannot approve their own request; another student does not see it.
        self.assertEqual(
            self.call("POST", f"/api/v1/requests/{made['id']}/approve", self.student)[0], 404
        )
        self.assertEqual(
            self.call("POST", f"/api/v1/requests/{made['id']}/approve", self.teacher)[1]["status"],
            "pending-admin",
        )
        self.assertEqual(self.mail.sent[-1][0], ["adm@school.test"])
        self.assertEqual(
            self.call("POST", f"/api/v1/requests/{made['id']}/create", self.teacher)[0], 403
        )
        code, created = self.call("POST", f"/api/v1/requests/{made['id']}/create", self.admin)
        self.assertEqual(code, 202)
        self.assertEqual(created["site"]["members"], ["stu", "tea"])
        self.assertEqual(created["site"]["purpose"], "activity")
        self.assertEqual(self.mail.sent[-1][0], ["stu@school.test"])
        self.assertIn("was created", self.mail.sent[-1][2])
        code, again = self.call("POST", f"/api/v1/requests/{made['id']}/create", self.admin)
        self.assertEqual((code, again["error"]), (409, "bad_state"))

    def test_request_needs_a_real_teacher(self) -> None:
        code, body = self.call(
            "POST",
            "/api/v1/requests",
            self.student,
            {"name": "chess", "activity": "Chess", "teacher": "stu"},
        )
        self.assertEqual((code, body["error"]), (409, "unknown_teacher"))
        self.assertEqual(self.mail.sent, [])

    def test_rejection_is_mailed_to_the_student(self) -> None:
        _, made = self.call(
            "POST",
            "/api/v1/requests",
            self.student,
            {"name": "drama", "activity": "Drama", "teacher": "tea"},
        )
        self.call("POST", f"/api/v1/requests/{made['id']}/reject", self.teacher)
        self.assertEqual(self.mail.sent[-1][0], ["stu@school.test"])
        self.assertIn("was not approved", self.mail.sent[-1][2])
