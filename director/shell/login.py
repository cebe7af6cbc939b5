"""
Who may log in to the shell server, and how hard guessing is made.

Passwords and public keys are both checked by the manager (L{ShellAccounts}); the checkers
here only parse, verify what can be verified locally (a key signature) and ask. Around
them, L{LoginGate} gives each connection a portal that knows the client's address, so
that failed attempts can be delayed, counted per user name and per address
(L{LoginThrottle}), refused early when over the limit, and logged, without passwords.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from director.shell.accounts import Account, LoginRefused, ManagerUnavailable, ShellAccounts
from director.shell.throttle import LoginThrottle, Refusal

#: The longest SSH user name accepted, in bytes ("user/site" included).
MAX_LOGIN_NAME = 128
MAX_USERNAME = 64
MAX_SITE_NAME = 64
#: Longer passwords are refused without asking the manager.
MAX_PASSWORD = 1024
#: Signature algorithms accepted for public key logins (no SHA-1 "ssh-rsa", no DSA).
KEY_SIGNATURE_ALGORITHMS = frozenset(
    {
        b"ssh-ed25519",
        b"rsa-sha2-512",
        b"rsa-sha2-256",
        b"ecdsa-sha2-nistp256",
        b"ecdsa-sha2-nistp384",
        b"ecdsa-sha2-nistp521",
        b"sk-ssh-ed25519@openssh.com",
        b"sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
MIN_RSA_BITS = 2048

log = Logger(namespace="director.shell.login")


class InvalidLoginName(UnauthorizedLogin):
    """The SSH user name cannot be a Director user (name): refused without asking anyone."""


class TooManyFailures(UnauthorizedLogin):
    """The user name or the address has failed too often lately."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message())
        self.refusal = refusal


class LoginUnavailable(Exception):
    """Logins cannot be checked now (the manager is unreachable); not the client's fault."""


@dataclass(frozen=True)
class LoginName:
    """An SSH user name: C{user}, or C{user/site} to skip the site menu."""

    user: str
    site: str | None

    def __str__(self) -> str:
        return self.user if self.site is None else f"{self.user}/{self.site}"


def parse_login_name(raw: bytes) -> LoginName:
    """
    Split an SSH user name into the Director user and the site after the slash. Raise
    L{InvalidLoginName} (with a message for the client) for what no user could be called:
    too long, not UTF-8, control characters or spaces, or an empty or overlong part.
    """
    if len(raw) > MAX_LOGIN_NAME:
        raise InvalidLoginName(f"user name too long (at most {MAX_LOGIN_NAME} characters)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidLoginName("invalid user name") from None
    if any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in text):
        raise InvalidLoginName("invalid user name")
    user, slash, site = text.partition("/")
    if not user or len(user) > MAX_USERNAME or len(site) > MAX_SITE_NAME or "/" in site:
        raise InvalidLoginName("invalid user name (use NAME or NAME/SITE)")
    return LoginName(user, site.lower() if slash and site else None)


@dataclass(frozen=True)
class ShellLogin:
    """The avatar id a checker returns: who logged in, how, and the site they asked for."""

    account: Account
    site: str | None
    method: str
    key_fingerprint: str | None = None

    @property
    def username(self) -> str:
        return self.account.username


def _name(credentials: Any) -> LoginName:
    return parse_login_name(credentials.username)


class _ManagerChecker:
    """A checker that asks the manager; its avatar id is a L{ShellLogin}, not a name."""

    def __init__(self, accounts: ShellAccounts) -> None:
        self._accounts = accounts

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        # The realm needs the account's sites, which the manager's answer carries.
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: Any) -> ShellLogin:
        raise NotImplementedError


@implementer(ICredentialsChecker)
class ManagerPasswordChecker(_ManagerChecker):
    """Passwords, checked by the manager (the shell server stores none)."""

    credentialInterfaces = (IUsernamePassword,)

    async def _check(self, credentials: Any) -> ShellLogin:
        name = _name(credentials)
        try:
            password = credentials.password.decode("utf-8")
        except UnicodeDecodeError:
            raise LoginRefused("bad_credentials") from None
        if not password or len(password) > MAX_PASSWORD:
            raise LoginRefused("bad_credentials")
        account = await self._accounts.check_password(name.user, password)
        return ShellLogin(account, name.site, "password")


def key_fingerprint(key: Key) -> str:
    """The fingerprint OpenSSH shows (SHA256:...), for logs."""
    from twisted.conch.ssh.keys import FingerprintFormats

    return "SHA256:" + key.fingerprint(FingerprintFormats.SHA256_BASE64).rstrip("=")


@implementer(ICredentialsChecker)
class ManagerKeyChecker(_ManagerChecker):
    """
    Public keys registered in the manager. The signature is verified here first, and the
    manager is asked only about keys the client has proven it holds: a key offered
    without a signature is always answered "go ahead and sign", so nobody can ask, with
    only someone's public key, whether it is registered to them.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    async def _check(self, credentials: Any) -> ShellLogin:
        name = _name(credentials)
        if credentials.algName not in KEY_SIGNATURE_ALGORITHMS:
            raise UnauthorizedLogin("key algorithm not accepted")
        try:
            key = Key.fromString(credentials.blob)
        except (BadKeyError, ValueError):
            raise UnauthorizedLogin("unreadable public key") from None
        if key.type() == "RSA" and key.size() < MIN_RSA_BITS:
            raise UnauthorizedLogin("RSA key too short")
        if credentials.signature is None:
            raise ValidPublicKey()
        try:
            signed_with = getNS(credentials.signature)[0]
            good = signed_with == credentials.algName and key.verify(
                credentials.signature, credentials.sigData
            )
        except Exception:
            good = False
        if not good:
            raise UnauthorizedLogin("bad signature")
        line = key.public().toString("OPENSSH").decode("ascii")
        account = await self._accounts.check_key(name.user, line)
        return ShellLogin(account, name.site, "publickey", key_fingerprint(key))


class LoginGate:
    """
    Shared by every connection: the real portal, the throttle and the failure delay.
    L{for_connection} gives the portal one connection's user-auth service uses.
    """

    def __init__(
        self, portal: Portal, throttle: LoginThrottle, clock: IReactorTime, failure_delay: float
    ) -> None:
        self.portal = portal
        self.throttle = throttle
        self.clock = clock
        self.failure_delay = failure_delay

    def for_connection(self, source: str) -> ConnectionPortal:
        return ConnectionPortal(self, source)


class ConnectionPortal:
    """A portal for one connection from C{source} (an address): throttled and logged."""

    def __init__(self, gate: LoginGate, source: str) -> None:
        self._gate = gate
        self._source = source

    def listCredentialsInterfaces(self) -> list[Any]:
        return self._gate.portal.listCredentialsInterfaces()

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> Deferred[Any]:
        """Like L{Portal.login}; the realm gets the client's address as the mind."""
        return Deferred.fromCoroutine(self._login(credentials, interfaces))

    async def _delay(self) -> None:
        await deferLater(self._gate.clock, self._gate.failure_delay, lambda: None)

    async def _login(self, credentials: Any, interfaces: tuple[Any, ...]) -> Any:
        gate = self._gate
        is_key = ISSHPrivateKey.providedBy(credentials)
        method = "publickey" if is_key else "password"
        if is_key and credentials.signature is None:
            # Only "may I use this key?": answered without asking the manager or counting.
            return await gate.portal.login(credentials, self._source, *interfaces)
        try:
            name = _name(credentials)
        except InvalidLoginName:
            self._logged("refused", "-", None, method, "invalid user name")
            raise
        # Keys cannot be guessed, so only passwords count against the user name.
        user_key = None if is_key else name.user.casefold()
        refusal = gate.throttle.refusal(user_key, self._source)
        if refusal is not None:
            self._logged(
                "refused", name.user, name.site, method, f"too many failures ({refusal.what})"
            )
            if not is_key:
                await self._delay()
            raise TooManyFailures(refusal)
        attempt = gate.throttle.begin(user_key, self._source)
        try:
            result = await gate.portal.login(credentials, self._source, *interfaces)
        except ManagerUnavailable as e:
            attempt.succeeded()  # not the client's failure
            log.error(
                "shell login from {source} for {user}: cannot ask the manager: {error}",
                source=self._source,
                user=name.user,
                error=str(e),
            )
            raise LoginUnavailable(str(e)) from None
        except UnauthorizedLogin as e:
            reason = e.code if isinstance(e, LoginRefused) else str(e) or "refused"
            self._logged("refused", name.user, name.site, method, reason)
            if not is_key:
                await self._delay()
            raise
        attempt.succeeded()
        login = getattr(result[1], "login", None)
        if isinstance(login, ShellLogin):
            self._logged("accepted", login.username, login.site, method, login.key_fingerprint)
        return result

    def _logged(
        self, result: str, user: str, site: str | None, method: str, detail: str | None
    ) -> None:
        log.info(
            "shell login {result}: user={user} site={site} source={source} method={method}{detail}",
            result=result,
            user=user,
            site=site or "-",
            source=self._source,
            method=method,
            detail=f" ({detail})" if detail else "",
            shell_event="login",
            shell_result=result,
        )
