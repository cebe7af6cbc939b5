"""
Shell logins: user names, the password and key checkers against the fake manager, and the
per-connection gate that delays, throttles and logs attempts (all on a fake clock).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.error import ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import SSHPrivateKey, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from director.shell.accounts import LoginRefused
from director.shell.avatar import SessionContext, ShellRealm, ShellUser
from director.shell.login import (
    MAX_LOGIN_NAME,
    InvalidLoginName,
    LoginGate,
    LoginName,
    LoginUnavailable,
    ManagerKeyChecker,
    ManagerPasswordChecker,
    ShellLogin,
    TooManyFailures,
    parse_login_name,
)
from director.shell.throttle import LoginThrottle
from director.testing.fake_shell_manager import FakeBridges, in_memory_manager

SIG_DATA = b"session id and request, as the client signs them"


def observe_logs(test: SynchronousTestCase) -> EventLoggingObserver:
    """Every log event emitted during C{test}."""
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def conch_key(private: Any) -> Key:
    return Key(private)


def key_credentials(
    user: bytes, key: Key, alg: bytes, signed: bool = True, sig_alg: bytes | None = None
) -> SSHPrivateKey:
    blob = key.public().blob()
    if not signed:
        return SSHPrivateKey(user, alg, blob, None, None)
    signature = key.sign(SIG_DATA, signatureType=sig_alg or alg)
    return SSHPrivateKey(user, alg, blob, SIG_DATA, signature)


class LoginNameTests(SynchronousTestCase):
    def test_user_and_site(self) -> None:
        """NAME logs in to the menu; NAME/SITE names the site (in lower case)."""
        self.assertEqual(parse_login_name(b"alice"), LoginName("alice", None))
        self.assertEqual(parse_login_name(b"alice/Blog"), LoginName("alice", "blog"))
        self.assertEqual(parse_login_name(b"alice/"), LoginName("alice", None))
        self.assertEqual(parse_login_name("zoë".encode()), LoginName("zoë", None))

    def test_refused_early(self) -> None:
        """Overlong, non-UTF-8, spaced, control-character or oddly slashed names are refused."""
        for raw in (
            b"a" * (MAX_LOGIN_NAME + 1),
            b"\xff\xfe",
            b"al ice",
            b"alice\x00",
            b"alice\x1b[31m",
            b"/site",
            b"alice/a/b",
            b"a" * 65,
            b"alice/" + b"s" * 65,
        ):
            with self.assertRaises(InvalidLoginName, msg=raw):
                parse_login_name(raw)
        with self.assertRaises(InvalidLoginName) as cm:
            parse_login_name(b"x" * 5000)
        self.assertIn("too long", str(cm.exception))


class CheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fake, self.accounts = in_memory_manager(self.clock)
        self.fake.add_site(1, "blog")
        self.ed = conch_key(ed25519.Ed25519PrivateKey.generate())
        self.rsa = conch_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.fake.add_user(
            "alice",
            "pw",
            keys=(self.ed.public().toString("OPENSSH").decode() + " laptop",),
            sites=("blog",),
        )
        self.fake.add_user("bob", keys=(self.rsa.public().toString("OPENSSH").decode(),))

    def check(self, checker: Any, credentials: Any) -> Deferred[Any]:
        return checker.requestAvatarId(credentials)

    def test_password_tells_the_manager_only_the_user_name(self) -> None:
        """The site after the slash stays in the shell server; the manager gets the user."""
        login = self.successResultOf(
            self.check(
                ManagerPasswordChecker(self.accounts), UsernamePassword(b"alice/blog", b"pw")
            )
        )
        self.assertIsInstance(login, ShellLogin)
        self.assertEqual((login.username, login.site, login.method), ("alice", "blog", "password"))
        self.assertEqual(self.fake.calls, [("login", {"username": "alice", "password": "pw"})])

    def test_passwords_refused_without_asking(self) -> None:
        """Empty, overlong and non-UTF-8 passwords are refused without a manager call."""
        checker = ManagerPasswordChecker(self.accounts)
        for password in (b"", b"x" * 2000, b"\xff"):
            self.failureResultOf(
                self.check(checker, UsernamePassword(b"alice", password)), LoginRefused
            )
        self.assertEqual(self.fake.calls, [])

    def test_key_query_is_answered_without_the_manager(self) -> None:
        """
        A key offered without a signature is always "go ahead": nobody learns from that
        whether a public key is registered, and the manager is not asked.
        """
        checker = ManagerKeyChecker(self.accounts)
        stranger = conch_key(ed25519.Ed25519PrivateKey.generate())
        for key in (self.ed, stranger):
            credentials = key_credentials(b"alice", key, b"ssh-ed25519", signed=False)
            self.failureResultOf(self.check(checker, credentials), ValidPublicKey)
        self.assertEqual(self.fake.calls, [])

    def test_signed_key_logs_in(self) -> None:
        """A registered key whose signature verifies logs in; the manager sees the key line."""
        checker = ManagerKeyChecker(self.accounts)
        login = self.successResultOf(
            self.check(checker, key_credentials(b"alice/blog", self.ed, b"ssh-ed25519"))
        )
        self.assertEqual((login.username, login.site, login.method), ("alice", "blog", "publickey"))
        self.assertTrue(login.key_fingerprint.startswith("SHA256:"))
        line = self.ed.public().toString("OPENSSH").decode()
        self.assertEqual(self.fake.calls, [("login", {"username": "alice", "public_key": line})])

    def test_rsa_sha2_accepted_sha1_refused(self) -> None:
        """RSA keys sign with SHA-2; an ssh-rsa (SHA-1) signature is refused before asking."""
        checker = ManagerKeyChecker(self.accounts)
        self.successResultOf(
            self.check(checker, key_credentials(b"bob", self.rsa, b"rsa-sha2-256"))
        )
        self.failureResultOf(
            self.check(checker, key_credentials(b"bob", self.rsa, b"ssh-rsa")), UnauthorizedLogin
        )
        # A SHA-1 signature smuggled under a SHA-2 algorithm name is refused too.
        self.failureResultOf(
            self.check(
                checker, key_credentials(b"bob", self.rsa, b"rsa-sha2-256", sig_alg=b"ssh-rsa")
            ),
            UnauthorizedLogin,
        )
        self.assertEqual(len(self.fake.calls), 1)

    def test_bad_signature_never_reaches_the_manager(self) -> None:
        """A signature that does not verify is refused locally."""
        checker = ManagerKeyChecker(self.accounts)
        good = key_credentials(b"alice", self.ed, b"ssh-ed25519")
        forged = SSHPrivateKey(
            good.username, good.algName, good.blob, b"other data", good.signature
        )
        self.failureResultOf(self.check(checker, forged), UnauthorizedLogin)
        self.assertEqual(self.fake.calls, [])

    def test_short_rsa_key_refused(self) -> None:
        """RSA keys under 2048 bits are refused."""
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        small = conch_key(weak)
        credentials = key_credentials(b"bob", small, b"rsa-sha2-256")
        self.failureResultOf(
            self.check(ManagerKeyChecker(self.accounts), credentials), UnauthorizedLogin
        )


class GateTests(SynchronousTestCase):
    """The per-connection portal: delays, limits and logs."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.fake, self.accounts = in_memory_manager(self.clock)
        self.fake.add_site(1, "blog")
        self.fake.add_user("alice", "right", sites=("blog",))
        context = SessionContext(self.clock, self.accounts, FakeBridges(self.clock), 3600)
        portal = Portal(
            ShellRealm(context),
            [ManagerPasswordChecker(self.accounts), ManagerKeyChecker(self.accounts)],
        )
        self.gate = LoginGate(portal, LoginThrottle(self.clock, 3, 5, 600), self.clock, 2.0)
        self.events = observe_logs(self)

    def login(self, user: bytes, password: bytes, source: str = "10.0.0.1") -> Deferred[Any]:
        return self.gate.for_connection(source).login(
            UsernamePassword(user, password), None, IConchUser
        )

    def test_success_gives_an_avatar_that_knows_the_source(self) -> None:
        """A good password gives an SSH user for the account, with the client's address."""
        interface, user, logout = self.successResultOf(self.login(b"alice/blog", b"right"))
        self.assertIs(interface, IConchUser)
        self.assertIsInstance(user, ShellUser)
        self.assertEqual(
            (user.login.username, user.login.site, user.source), ("alice", "blog", "10.0.0.1")
        )
        logout()

    def test_failure_is_delayed(self) -> None:
        """A wrong password is answered only after the failure delay."""
        d = self.login(b"alice", b"wrong")
        self.assertNoResult(d)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, LoginRefused)

    def failed(self, user: bytes, source: str = "10.0.0.1") -> Any:
        d = self.login(user, b"wrong", source)
        self.clock.advance(2)
        return self.failureResultOf(d).value

    def test_user_limit(self) -> None:
        """
        After 3 failures for a user name (any case) from one address, it is refused unasked
        from that address; the user still logs in from elsewhere.
        """
        for user in (b"alice", b"ALICE", b"alice/x"):
            self.assertIsInstance(self.failed(user, "10.0.0.1"), LoginRefused)
        calls = len(self.fake.calls)
        d = self.login(b"alice", b"right", "10.0.0.1")
        self.clock.advance(2)
        error = self.failureResultOf(d, TooManyFailures).value
        self.assertEqual(str(error), "too many failed logins; try again in 10 minutes")
        self.assertEqual(len(self.fake.calls), calls)
        self.successResultOf(self.login(b"alice", b"right", "10.0.0.4"))
        self.clock.advance(600)
        self.successResultOf(self.login(b"alice", b"right"))

    def test_one_address_cannot_lock_a_user_out_everywhere(self) -> None:
        """
        Guessing from one address stops at its address limit, below the account-wide one;
        guessing from many addresses together reaches the account-wide one.
        """
        for _ in range(10):
            self.failed(b"alice", "10.0.0.66")
        self.successResultOf(self.login(b"alice", b"right", "10.0.0.9"))
        throttle = LoginThrottle(self.clock, 3, 5, 600, max_per_account=8)
        for n in range(8):
            throttle.begin("bob", f"10.0.2.{n}")
        refusal = throttle.refusal("bob", "10.0.3.1")
        assert refusal is not None
        self.assertEqual(refusal.what, "account")
        # The account-wide limit is never below what one address may fail.
        low = LoginThrottle(self.clock, 3, 5, 600, max_per_account=2)
        for _ in range(5):
            low.begin("carol", "10.0.4.1")
        self.assertIsNone(low.refusal("carol", "10.0.4.2"))

    def test_address_limit(self) -> None:
        """After 5 failures from one address every user is refused from there, not elsewhere."""
        for n in range(5):
            self.failed(f"user{n}".encode())
        d = self.login(b"alice", b"right")
        self.clock.advance(2)
        self.failureResultOf(d, TooManyFailures)
        self.successResultOf(self.login(b"alice", b"right", "10.0.0.9"))

    def test_concurrent_guesses_count_at_once(self) -> None:
        """Guesses sent together cannot get past the limit before the first answers arrive."""
        pending = [self.login(b"alice", b"wrong", "10.0.1.1") for n in range(5)]
        self.clock.advance(2)
        outcomes = [type(self.failureResultOf(d).value) for d in pending]
        self.assertEqual(outcomes, [LoginRefused] * 3 + [TooManyFailures] * 2)

    def test_manager_down_is_not_counted(self) -> None:
        """When the manager cannot answer, the attempt fails as unavailable, uncounted."""
        self.fake.failing = 503
        for _ in range(5):
            self.failureResultOf(self.login(b"alice", b"right"), LoginUnavailable)
        self.fake.failing = None
        self.successResultOf(self.login(b"alice", b"right"))

    def test_logs_every_attempt_without_passwords(self) -> None:
        """Each attempt is logged with user, site, source and result; no password appears."""
        self.successResultOf(self.login(b"alice/blog", b"right"))
        self.failed(b"alice")
        messages = [formatEvent(e) for e in self.events if e.get("shell_event") == "login"]
        self.assertEqual(
            messages,
            [
                "shell login accepted: user=alice site=blog source=10.0.0.1 method=password",
                "shell login refused: user=alice site=- source=10.0.0.1 method=password"
                " (bad_credentials)",
            ],
        )
        for event in self.events:
            self.assertNotIn("right", formatEvent(event) + repr(event))
            self.assertNotIn("wrong", formatEvent(event) + repr(event))


class ThrottleTests(SynchronousTestCase):
    def test_window_slides(self) -> None:
        """A refusal lasts until the oldest counted failure leaves the window."""
        clock = Clock()
        throttle = LoginThrottle(clock, 2, 100, 60)
        throttle.begin("u", "a")
        clock.advance(30)
        throttle.begin("u", "a")
        refusal = throttle.refusal("u", "a")
        assert refusal is not None
        self.assertEqual((refusal.what, refusal.retry_after), ("user", 30))
        self.assertIsNone(throttle.refusal("u", "b"))
        clock.advance(30)
        self.assertIsNone(throttle.refusal("u", "a"))

    def test_keys_count_only_per_address(self) -> None:
        """Key attempts (no user name) never lock a user out."""
        clock = Clock()
        throttle = LoginThrottle(clock, 1, 100, 60)
        for _ in range(10):
            throttle.begin(None, "a")
        self.assertIsNone(throttle.refusal("u", "b"))

    def test_memory_is_bounded_by_the_window(self) -> None:
        """Names tried once are forgotten once their failures are older than the window."""
        clock = Clock()
        throttle = LoginThrottle(clock, 5, 5, 60)
        for n in range(1000):
            throttle.begin(f"user{n}", f"10.0.{n // 256}.{n % 256}")
        self.assertEqual(throttle.tracked(), 3000)
        clock.advance(61)
        throttle.refusal("x", "y")
        self.assertEqual(throttle.tracked(), 0)

    def test_success_is_not_counted(self) -> None:
        """An attempt that succeeds no longer counts."""
        clock = Clock()
        throttle = LoginThrottle(clock, 1, 1, 60)
        throttle.begin("u", "a").succeeded()
        self.assertIsNone(throttle.refusal("u", "a"))
