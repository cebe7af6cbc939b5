"""
L{UserService} directly, over the store on a test database: an administrator's users and
service accounts, a person's own password and tokens, the refusals, sessions ended and the
audit of each change.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

import pytest

from director.manager.access import AccessDenied
from director.manager.models import User, ValidationError
from director.manager.store import Conflict, NotFound
from director.manager.user_service import UserService, text_field, token_request
from director.testing.manager import ServiceTestCase

pytestmark = pytest.mark.manager_store

T = TypeVar("T")


class UserServiceTests(ServiceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.service = UserService(self.h.store, self.h.passwords)
        self.admin: User = self.h.result(self.h.store.create_user("root", "admin", None))
        self.teacher: User = self.h.result(self.h.store.create_user("tea", "teacher", None))

    def sessions(self, user: User) -> int:
        ended: int = self.h.result(self.h.store.delete_sessions(user.id))
        return ended

    async def never(self) -> bool:
        return False

    async def always(self) -> bool:
        return True

    def test_create_users_and_service_accounts(self) -> None:
        """A person with a password, a service account without; both audited."""
        alice = self.run_(
            self.service.create(
                self.admin, {"username": "alice", "password": "a long password", "email": "a@x"}
            )
        )
        self.assertEqual((alice.role, alice.email, alice.is_service), ("student", "a@x", False))
        self.assertTrue(self.run_(self.service.password_matches(alice, "a long password")))
        bot = self.run_(self.service.create(self.admin, {"username": "bot", "is_service": True}))
        self.assertTrue(bot.is_service)
        self.assertFalse(self.run_(self.service.password_matches(bot, "")))
        self.assertIn(("create_user", "alice"), self.audited())
        self.assertIn(("create_user", "bot"), self.audited())

    def test_create_refusals(self) -> None:
        """Bad fields, a password for a service account and a taken name are refused."""
        for fields in (
            {"username": "Bad Name"},
            {"username": "ok", "role": "king"},
            {"username": "ok", "is_service": "yes"},
            {"username": "ok", "full_name": "nul\x00"},
        ):
            self.assertIsInstance(
                self.fails(self.service.create(self.admin, fields)), ValidationError
            )
        error = self.fails(
            self.service.create(
                self.admin, {"username": "ok", "is_service": True, "password": "a long password"}
            )
        )
        assert isinstance(error, Conflict)
        self.assertEqual(error.code, "service_account")
        self.assertIsInstance(
            self.fails(self.service.create(self.admin, {"username": "tea"})), Conflict
        )
        self.assertEqual(
            [u.username for u in self.h.result(self.h.store.list_users())], ["root", "tea"]
        )

    def test_change_ends_sessions_on_deactivation_and_new_password(self) -> None:
        """A role change keeps sessions; a deactivation or a new password ends them."""
        alice = self.run_(self.service.create(self.admin, {"username": "alice"}))
        self.h.result(self.h.store.create_session(alice.id, timedelta(hours=1)))
        changed = self.run_(self.service.change(self.admin, "alice", {"role": "teacher"}))
        self.assertEqual(changed.role, "teacher")
        self.run_(self.service.change(self.admin, "alice", {"password": "another password"}))
        self.assertEqual(self.sessions(alice), 0)
        self.h.result(self.h.store.create_session(alice.id, timedelta(hours=1)))
        gone = self.run_(self.service.change(self.admin, "alice", {"is_active": False}))
        self.assertFalse(gone.is_active)
        self.assertEqual(self.sessions(alice), 0)
        self.assertEqual(self.audited().count(("edit_user", "alice")), 3)
        self.assertIsInstance(
            self.fails(self.service.change(self.admin, "alice", {"is_active": "no"})),
            ValidationError,
        )
        self.run_(self.service.create(self.admin, {"username": "bot", "is_service": True}))
        error = self.fails(self.service.change(self.admin, "bot", {"password": "x" * 12}))
        self.assertIsInstance(error, Conflict)
        self.assertIsInstance(
            self.fails(self.service.change(self.admin, "nobody", {"role": "student"})), NotFound
        )

    def test_change_own_password(self) -> None:
        """
        The current password confirms a new one (other sessions end); an account without
        one needs a recent sign-in; service accounts have none.
        """
        alice = self.run_(
            self.service.create(self.admin, {"username": "alice", "password": "first password"})
        )
        session, _ = self.h.result(self.h.store.create_session(alice.id, timedelta(hours=1)))
        wrong = self.fails(
            self.service.change_own(
                alice,
                {"password": "second password", "current_password": "nope"},
                self.always,
                None,
            )
        )
        assert isinstance(wrong, AccessDenied)
        self.assertEqual(wrong.code, "wrong_password")
        self.run_(
            self.service.change_own(
                alice,
                {"password": "second password", "current_password": "first password"},
                self.never,
                session,
            )
        )
        self.assertTrue(self.run_(self.service.password_matches(alice, "second password")))
        self.assertEqual(self.sessions(alice), 1)  # the session that changed it was kept
        self.assertIn(("change_password", "alice"), self.audited())
        # Without a password yet: a recent sign-in instead.
        error = self.fails(
            self.service.change_own(self.teacher, {"password": "x" * 12}, self.never, None)
        )
        assert isinstance(error, AccessDenied)
        self.assertEqual(error.code, "reauthenticate")
        self.run_(self.service.change_own(self.teacher, {"password": "x" * 12}, self.always, None))
        self.assertTrue(self.run_(self.service.password_matches(self.teacher, "x" * 12)))
        guided = self.run_(
            self.service.change_own(alice, {"accepted_guidelines": True}, self.never, None)
        )
        self.assertTrue(guided.accepted_guidelines)

    def test_tokens(self) -> None:
        """Own tokens are issued and revoked; service accounts' only by an administrator."""
        token, expires = self.run_(self.service.issue_token(self.teacher, self.teacher, "ci", 7))
        self.assertIsNotNone(expires)
        (listed,) = self.h.result(self.h.store.list_tokens(self.teacher.id))
        self.run_(self.service.revoke_token(self.teacher, listed.id))
        self.assertIsInstance(
            self.fails(self.service.revoke_token(self.teacher, listed.id)), NotFound
        )
        self.assertIn(("revoke_token", "tea"), self.audited())
        self.run_(self.service.create(self.admin, {"username": "bot", "is_service": True}))
        token, expires = self.run_(self.service.issue_service_token(self.admin, "bot", "ci", None))
        self.assertIsNone(expires)
        self.assertTrue(token)
        error = self.fails(self.service.issue_service_token(self.admin, "tea", "ci", None))
        assert isinstance(error, Conflict)
        self.assertEqual(error.code, "not_service")
        for name in ("nobody", "Not A Name"):
            self.assertIsInstance(
                self.fails(self.service.issue_service_token(self.admin, name, "ci", None)), NotFound
            )

    def test_listing_and_fields(self) -> None:
        """Teachers and admins list users; the token and text fields' rules."""
        student: User = self.h.result(self.h.store.create_user("stu", "student", None))
        self.assertIsInstance(self.fails(self.service.listed_for(student)), AccessDenied)
        self.assertEqual(len(self.run_(self.service.listed_for(self.teacher))), 3)
        self.assertEqual(token_request({}), ("api", None))
        self.assertRaises(ValidationError, token_request, {"expires_in_days": 0})
        self.assertRaises(ValidationError, text_field, {"email": 5}, "email", 10)
        self.assertEqual(text_field({}, "email", 10), "")
