"""
What the shell server asks the manager, through its `/shell-server/` endpoints.

The shell server holds no user data of its own: it asks the manager whether a password or a
key is good (getting back the user's sites), and, once a site is chosen, for a short-lived
single-use token that the orchestrator's shell bridge accepts. It tells the manager only what
each answer needs: the user name (never the site typed after the slash) and the password or
public key at login; the user name and the site name when a session opens. No source
addresses, no signatures, no key that has not been proven to belong to the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.cred.error import UnauthorizedLogin

from director.clients import OrchestratorClient
from director.common.client import ComponentCallError, ComponentClient
from director.common.errors import CodedError

#: Seconds allowed for each call to the manager.
#: The manager answers a deploy once its operation has finished (a restart of the site).
DEPLOY_TIMEOUT = 300.0
MANAGER_TIMEOUT = 15.0

_AVAILABILITIES = ("enabled", "not-served", "disabled")


class LoginRefused(UnauthorizedLogin):
    """The manager refused the credentials; C{code} is C{bad_credentials} or C{inactive}."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class ManagerUnavailable(Exception):
    """The manager could not be asked, or gave an answer that makes no sense."""


class SessionRefused(CodedError):
    """
    No session for that site: C{code} is C{unknown_site} (no such site, or not a member:
    deliberately the same) or C{site_disabled}; C{message} is for the user.
    """


@dataclass(frozen=True)
class SiteSummary:
    """One of the user's sites, as the login answer lists it."""

    id: int
    name: str
    type: str
    availability: str
    #: Closed to this user: an administrator disabled the site (admins may still enter).
    #: The manager decides; an answer without the field treats every disabled site so.
    locked: bool | None = None

    @property
    def disabled(self) -> bool:
        return self.availability == "disabled"

    @property
    def closed(self) -> bool:
        return self.disabled if self.locked is None else self.locked


@dataclass(frozen=True)
class Account:
    """A user the manager has just vouched for, with the sites they are a member of."""

    username: str
    sites: tuple[SiteSummary, ...]

    def site(self, name: str) -> SiteSummary | None:
        """The member site called C{name} (exactly), if any."""
        for site in self.sites:
            if site.name == name:
                return site
        return None


@dataclass(frozen=True)
class SessionGrant:
    """Where and with what token to open the orchestrator's shell bridge for one site."""

    site_id: int
    site_name: str
    token: str
    websocket_url: str


def _site(raw: Any) -> SiteSummary:
    if not isinstance(raw, dict):
        raise ValueError("site is not an object")
    site_id, name = raw.get("id"), raw.get("name")
    kind, availability = raw.get("type"), raw.get("availability")
    if not isinstance(site_id, int) or isinstance(site_id, bool) or site_id < 0:
        raise ValueError("bad site id")
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ValueError("bad site name")
    if not isinstance(kind, str) or availability not in _AVAILABILITIES:
        raise ValueError("bad site type or availability")
    locked = raw.get("locked")
    if locked is not None and not isinstance(locked, bool):
        raise ValueError("bad site lock")
    return SiteSummary(site_id, name, kind, availability, locked)


def _account(username: str, raw: Any) -> Account:
    try:
        # The manager may spell the name its own way (case); it must be the same name.
        canonical = raw.get("username") if isinstance(raw, dict) else None
        if not isinstance(canonical, str) or canonical.casefold() != username.casefold():
            raise ValueError("the answer is for another user")
        sites = raw.get("sites")
        if not isinstance(sites, list):
            raise ValueError("no site list")
        return Account(canonical, tuple(sorted((_site(s) for s in sites), key=lambda s: s.name)))
    except ValueError as e:
        raise ManagerUnavailable(f"unexpected login answer from the manager: {e}") from None


def _grant(raw: Any) -> SessionGrant:
    try:
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        site_id, name = raw.get("site_id"), raw.get("site_name")
        token, url = raw.get("token"), raw.get("websocket_url")
        if not isinstance(site_id, int) or isinstance(site_id, bool):
            raise ValueError("bad site_id")
        if not isinstance(name, str) or not isinstance(token, str) or not token:
            raise ValueError("bad site_name or token")
        # The bridge is opened with the shell's signature: make sure it goes to a shell
        # bridge for this very site, wherever the orchestrator is.
        parts = urlsplit(url) if isinstance(url, str) else None
        bridge = OrchestratorClient.shell_path(site_id)
        if (
            parts is None
            or parts.scheme not in ("ws", "wss")
            or not parts.hostname
            or parts.path not in (bridge, bridge + "/")
        ):
            raise ValueError(f"bad websocket_url {url!r}")
        return SessionGrant(site_id, name, token, str(url))
    except ValueError as e:
        raise ManagerUnavailable(f"unexpected session answer from the manager: {e}") from None


class ShellAccounts:
    """The manager's `/shell-server/` endpoints, called as the shell component."""

    def __init__(self, manager: ComponentClient) -> None:
        self._manager = manager

    async def _call(self, path: str, body: dict[str, str], timeout: float = MANAGER_TIMEOUT) -> Any:
        try:
            return await self._manager.json("POST", path, json=body, timeout=timeout)
        except ComponentCallError:
            raise
        except Exception as e:
            raise ManagerUnavailable(f"cannot reach the manager: {e!r}") from None

    async def _login(self, username: str, body: dict[str, str]) -> Account:
        try:
            answer = await self._call("/shell-server/login", body)
        except ComponentCallError as e:
            # A 401 from the manager's guard (our own signature refused) is a broken setup,
            # not a wrong password: only the route's own answer counts as a refusal.
            if e.status == 401 and e.code == "bad_credentials":
                raise LoginRefused("bad_credentials") from None
            if e.status == 403 and e.code == "inactive":
                raise LoginRefused("inactive") from None
            raise ManagerUnavailable(str(e)) from None
        return _account(username, answer)

    async def check_password(self, username: str, password: str) -> Account:
        """The user's account if C{password} is theirs; L{LoginRefused} if not."""
        return await self._login(username, {"username": username, "password": password})

    async def check_key(self, username: str, public_key: str) -> Account:
        """
        The user's account if C{public_key} (an OpenSSH public key line) is registered to
        them. Call this only once the client has proven it holds the private key.
        """
        return await self._login(username, {"username": username, "public_key": public_key})

    async def open_session(self, username: str, site: str) -> SessionGrant:
        """A token for C{username} on C{site}; L{SessionRefused} when that is not allowed."""
        try:
            answer = await self._call("/shell-server/session", {"username": username, "site": site})
        except ComponentCallError as e:
            if e.status == 404 and e.code == "unknown_site":
                raise SessionRefused("unknown_site", f"You have no site called {site}.") from None
            if e.status == 403 and e.code == "site_disabled":
                raise SessionRefused("site_disabled", f"The site {site} is disabled.") from None
            if e.status == 403:
                raise SessionRefused("forbidden", f"You may not use the site {site}.") from None
            raise ManagerUnavailable(str(e)) from None
        return _grant(answer)

    async def deploy(self, username: str, site: str, commit: str) -> DeployResult:
        """
        Record the deploy of C{commit} that a git push by C{username} just made in C{site}
        (the manager restarts a dynamic site) and wait for it; L{SessionRefused} when the
        manager does not allow it, L{ManagerUnavailable} when it cannot be asked.
        """
        body = {"username": username, "site": site, "commit": commit}
        try:
            answer = await self._call("/shell-server/deploy", body, timeout=DEPLOY_TIMEOUT)
        except ComponentCallError as e:
            if e.status in (403, 404):
                raise SessionRefused(e.code or "forbidden", "The deploy was refused.") from None
            raise ManagerUnavailable(str(e)) from None
        op = answer.get("operation") if isinstance(answer, dict) else None
        if not isinstance(op, dict) or not isinstance(op.get("status"), str):
            raise ManagerUnavailable("the manager's deploy answer has no operation")
        error = op.get("error")
        return DeployResult(op["status"], error if isinstance(error, str) else None)


@dataclass(frozen=True)
class DeployResult:
    """How the deploy operation ended: succeeded, failed, or still running (it was slow)."""

    status: str
    error: str | None
