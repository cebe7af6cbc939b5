"""The shell server's calls to the manager's /shell-server/ endpoints (fake manager, StubTreq)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.common.tokens import TokenVerifier
from director.shell.accounts import (
    Account,
    LoginRefused,
    ManagerUnavailable,
    SessionRefused,
    ShellAccounts,
    SiteSummary,
    _grant,
)
from director.testing.fake_shell_manager import FakeShellManager, in_memory_manager

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0jsHqkD8yPtUkYMmrw6oQz9Sn2C8U2FO6dFM3BBWN7"


class AccountsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.fake: FakeShellManager
        self.fake, self.accounts = in_memory_manager(self.clock)
        self.fake.add_site(3, "zeta", type="dynamic")
        self.fake.add_site(1, "alpha")
        self.fake.add_site(2, "off", availability="disabled")
        self.fake.add_site(4, "other")
        self.fake.add_user(
            "alice", "s3cret", keys=(KEY + " alice@laptop",), sites=("zeta", "alpha", "off")
        )
        self.fake.add_user("gone", "pw", active=False, sites=("alpha",))

    def result(self, coroutine: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def failure(self, coroutine: Any, *errors: type[BaseException]) -> Any:
        return self.failureResultOf(Deferred.fromCoroutine(coroutine), *errors).value

    def test_password_login_lists_sites_by_name(self) -> None:
        """A good password gives the account with its member sites, sorted by name."""
        account = self.result(self.accounts.check_password("alice", "s3cret"))
        self.assertEqual(
            account,
            Account(
                "alice",
                (
                    SiteSummary(1, "alpha", "static", "enabled", False),
                    SiteSummary(2, "off", "static", "disabled", True),
                    SiteSummary(3, "zeta", "dynamic", "enabled", False),
                ),
            ),
        )
        self.assertEqual(self.fake.calls, [("login", {"username": "alice", "password": "s3cret"})])

    def test_bad_credentials_are_indistinguishable(self) -> None:
        """A wrong password, an unknown user and an unregistered key all give bad_credentials."""
        for attempt in (
            self.accounts.check_password("alice", "wrong"),
            self.accounts.check_password("nobody", "s3cret"),
            self.accounts.check_key("alice", KEY.replace("K0j", "K1j")),
        ):
            self.assertEqual(self.failure(attempt, LoginRefused).code, "bad_credentials")

    def test_inactive_account(self) -> None:
        """A deactivated account is refused as inactive."""
        error = self.failure(self.accounts.check_password("gone", "pw"), LoginRefused)
        self.assertEqual(error.code, "inactive")

    def test_key_login_ignores_the_comment(self) -> None:
        """A registered key logs in; the manager compares type and key, not the comment."""
        account = self.result(self.accounts.check_key("alice", KEY))
        self.assertEqual(account.username, "alice")
        self.assertEqual(self.fake.calls, [("login", {"username": "alice", "public_key": KEY})])

    def test_session_token_is_accepted_by_the_orchestrator(self) -> None:
        """A session grant carries a real token for that site and the bridge URL."""
        grant = self.result(self.accounts.open_session("alice", "zeta"))
        self.assertEqual((grant.site_id, grant.site_name), (3, "zeta"))
        self.assertEqual(
            grant.websocket_url, "ws://orchestrator.test:8100/ws/shell-server/3/ssh-shell"
        )
        verifier = TokenVerifier(self.fake.token_public_key, self.clock)
        token = verifier.verify(grant.token, 3)
        self.assertEqual(token.user, "alice")

    def test_session_refusals(self) -> None:
        """Unknown sites and other users' sites are the same refusal; disabled ones differ."""
        for site in ("nosuch", "other"):
            error = self.failure(self.accounts.open_session("alice", site), SessionRefused)
            self.assertEqual(error.code, "unknown_site")
            self.assertEqual(error.message, f"You have no site called {site}.")
        error = self.failure(self.accounts.open_session("alice", "off"), SessionRefused)
        self.assertEqual(
            (error.code, error.message), ("site_disabled", "The site off is disabled.")
        )

    def test_administrators_enter_disabled_sites(self) -> None:
        """For an administrator a disabled site is not locked, and the token says why."""
        self.fake.add_user("root", "pw", sites=("off",), admin=True)
        account = self.result(self.accounts.check_password("root", "pw"))
        self.assertEqual(account.sites, (SiteSummary(2, "off", "static", "disabled", False),))
        self.assertFalse(account.sites[0].closed)
        grant = self.result(self.accounts.open_session("root", "off"))
        verifier = TokenVerifier(self.fake.token_public_key, self.clock)
        self.assertTrue(verifier.verify(grant.token, 2).admin)

    def test_manager_errors_are_unavailable(self) -> None:
        """A failing manager is reported as unavailable, not as a refusal."""
        self.fake.failing = 500
        self.failure(self.accounts.check_password("alice", "s3cret"), ManagerUnavailable)
        self.failure(self.accounts.open_session("alice", "zeta"), ManagerUnavailable)

    def test_unsigned_caller_is_refused_by_the_guard(self) -> None:
        """The guard in front of the fake refuses a shell signing with an unknown key."""
        from treq.testing import StubTreq

        from director.common.client import ComponentClient
        from director.testing.keys import Keyring

        other = Keyring()
        http = StubTreq(self.fake.resource(Keyring().verifier("manager", self.clock)))
        client = ComponentClient(
            self.clock, other.signer("shell", self.clock), "manager", "http://m.test", http
        )
        accounts = ShellAccounts(client)
        self.failure(accounts.check_password("alice", "s3cret"), ManagerUnavailable)
        self.assertEqual(self.fake.calls, [])

    def test_timeout_is_unavailable(self) -> None:
        """A manager that never answers is given up on after the timeout."""
        from director.common.client import ComponentClient
        from director.testing.keys import Keyring

        class Silent:
            def request(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
                return Deferred()

        client = ComponentClient(
            self.clock, Keyring().signer("shell", self.clock), "manager", "http://m", Silent()
        )
        d = Deferred.fromCoroutine(ShellAccounts(client).check_password("alice", "x"))
        self.assertNoResult(d)
        self.clock.advance(15)
        self.failureResultOf(d, ManagerUnavailable)

    def test_malformed_answers(self) -> None:
        """Answers that do not follow the contract are errors, not logins or grants."""
        good: dict[str, Any] = {
            "site_id": 3,
            "site_name": "zeta",
            "token": "t",
            "websocket_url": "ws://o:1/ws/shell-server/3/ssh-shell",
        }
        self.assertEqual(_grant(good).site_id, 3)
        bad_answers: list[Any] = [
            dict(good, websocket_url="ws://o:1/v1/sites/3"),
            dict(good, websocket_url="http://o:1/ws/shell-server/3/ssh-shell"),
            dict(good, websocket_url="ws://o:1/ws/shell-server/4/ssh-shell"),
            dict(good, token=""),
            dict(good, site_id="3"),
            [],
        ]
        for bad in bad_answers:
            with self.assertRaises(ManagerUnavailable):
                _grant(bad)
