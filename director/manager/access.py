"""
Who a request's user is, and what they may reach: the one copy of the manager's access rules,
used by the JSON API, the dashboard's pages, the browser websockets and the shell-server API.

- A request's user comes from `Authorization: Bearer <token>` (the API only) or the dashboard
  session cookie; a session's writes carry its CSRF token; a deactivated account is refused.
- Members act on their sites, admins on all (L{may_act}); anyone else is told "not found", so
  a site's existence is never revealed.
- A site an administrator disabled is locked to its members (L{locked}); admins still enter.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from director.manager.models import SITE_NAME, Site, User
from director.manager.proxies import Proxies, get_cookie
from director.manager.ratelimit import Limiter
from director.manager.store import Store

SESSION_COOKIE = b"director_session"


class AccessDenied(Exception):
    """A request that may not go on: C{status}, error C{code} and the user's C{message}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def may_act(user: User, members: Collection[str]) -> bool:
    """Whether C{user} may act on a site with C{members}: an admin, or one of them."""
    return user.is_admin or user.username in members


def locked(user: User, site: Site) -> bool:
    """Whether C{site} is closed to C{user}: an administrator disabled it and they are not one."""
    return site.availability == "disabled" and not user.is_admin


def is_write(request: Any) -> bool:
    """Whether C{request} changes something (anything but GET and HEAD)."""
    return request.method not in (b"GET", b"HEAD")


@dataclass(frozen=True)
class SignedIn:
    """A dashboard session: its user (perhaps deactivated since), CSRF token and id."""

    user: User
    csrf: str
    session_id: str


class Access:
    """The access rules over C{store}: a request's user, and the sites they may reach."""

    def __init__(self, store: Store, proxies: Proxies, limiter: Limiter | None = None) -> None:
        self.store = store
        self.proxies = proxies
        self.limiter = limiter

    def session_id(self, request: Any) -> str | None:
        """The session id the request's cookie holds, if it holds a readable one."""
        cookie = get_cookie(request, SESSION_COOKIE, self.proxies)
        try:
            return cookie.decode("ascii") if cookie else None
        except UnicodeDecodeError:
            return None

    async def session(self, session_id: str | None) -> SignedIn | None:
        """The live session C{session_id}, whatever the state of its user's account."""
        if not session_id:
            return None
        found = await self.store.session(session_id)
        if found is None:
            return None
        return SignedIn(found[0], found[1], session_id)

    async def signed_in(self, request_or_session: Any) -> SignedIn | None:
        """
        The session of a request (or a session id) if it is live and its user active: the
        dashboard's pages and the browser websockets, which answer anyone else as a stranger.
        """
        if isinstance(request_or_session, str) or request_or_session is None:
            session_id = request_or_session
        else:
            session_id = self.session_id(request_or_session)
        found = await self.session(session_id)
        if found is None or not found.user.is_active:
            return None
        return found

    async def api_user(self, request: Any, write: bool | None = None) -> User:
        """
        The authenticated, active user making the API request C{request}; L{AccessDenied}
        (401, 403 or 429) otherwise. C{write} (by default: the method is not GET or HEAD)
        counts the request against the user's rate limit.
        """
        auth = request.getHeader(b"authorization")
        user: User | None = None
        found: SignedIn | None = None
        if auth:
            scheme, _, token = auth.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AccessDenied(401, "unauthenticated", "use Authorization: Bearer <token>")
            user = await self.store.user_for_token(token.strip())
        else:
            found = await self.session(self.session_id(request))
            if found is not None:
                user = found.user
                request.director_session_id = found.session_id
                unsafe = request.method not in (b"GET", b"HEAD", b"OPTIONS")
                sent = (request.getHeader(b"x-csrf-token") or b"").decode("latin-1")
                if unsafe and not secrets.compare_digest(sent, found.csrf):
                    raise AccessDenied(403, "csrf", "missing or wrong CSRF token")
        if user is None:
            raise AccessDenied(401, "unauthenticated", "sign in, or send a valid API token")
        if not user.is_active:
            raise AccessDenied(403, "inactive", "this account is deactivated")
        writes = write if write is not None else is_write(request)
        if writes and self.limiter is not None and not await self.limiter.allow(user.username):
            raise AccessDenied(429, "rate_limited", "too many changes at once; try again shortly")
        request.director_user = user
        request.director_session = found is not None
        return user

    async def site(self, user: User, name: object) -> Site | None:
        """The site called C{name} if C{user} may act on it; None otherwise (or no such site)."""
        if not isinstance(name, str) or not SITE_NAME.fullmatch(name):
            return None
        site = await self.store.get_site(name)
        if site is None or not may_act(user, site.members):
            return None
        return site

    async def site_by_id(self, user: User, site_id: int | None) -> Site | None:
        """The site with id C{site_id} if C{user} may act on it; None otherwise."""
        site = await self.store.get_site_by_id(site_id) if site_id else None
        if site is None or not may_act(user, site.members):
            return None
        return site


Route = Callable[..., Awaitable[Any]]


def authenticated(write: bool | None = None, admin: bool = False) -> Callable[[Route], Route]:
    """
    Declare a route's authentication: the route runs only for the request's authenticated,
    active user (L{Access.api_user}, with C{write} as it takes it), passed in after the
    request; with C{admin}, only for administrators (403 C{forbidden} to anyone else).
    The route's object holds the rules as C{access}.
    """

    def declare(route: Route) -> Route:
        @functools.wraps(route)
        async def run(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            user = await self.access.api_user(request, write)
            if admin and not user.is_admin:
                raise AccessDenied(403, "forbidden", "only administrators may do this")
            return await route(self, request, user, *args, **kwargs)

        return run

    return declare


#: A route for administrators only (L{authenticated} with C{admin}).
admin_only = authenticated(admin=True)
