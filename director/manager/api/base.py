"""
The manager API's shared part: its Klein app, error answers, request parsing, and the rules
every route module uses (authentication, a user's sites, starting operations).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from director.clients import OrchestratorClient, RouterClient
from director.common.client import ComponentCallError
from director.common.guard import render_error
from director.common.signing import RequestSigner
from director.common.web import render_json
from director.contract.databases import DatabaseSpec
from director.contract.urls import UrlFormats
from director.manager import models
from director.manager.access import Access, AccessDenied, locked
from director.manager.backups import BackupScheduler
from director.manager.creation import unfinished_creation
from director.manager.disk import DiskPoller
from director.manager.domain_services import ManagerServices
from director.manager.events import IEventBus
from director.manager.mail import Mailer
from director.manager.models import (
    USER_ERROR_CODES,
    Site,
    User,
    UserLimits,
    ValidationError,
    public_error,
)
from director.manager.openapi import QUERY_PARAMETERS, REQUIRED_QUERY
from director.manager.operations import OPERATIONS, OperationEngine
from director.manager.orchestrator_pool import NodeUnavailable, OrchestratorPool, PlacementError
from director.manager.passwords import Passwords
from director.manager.proxies import Proxies
from director.manager.query_args import read_query
from director.manager.ratelimit import Limiter, RateLimiter
from director.manager.router_pool import RouterPool
from director.manager.site_service import FALLBACK_IMAGE as FALLBACK_IMAGE
from director.manager.site_service import check_name_and_agreement
from director.manager.store import KEEP, Conflict, Keep, NotFound, Store
from director.manager.store.rows import DatabaseHostRecord
from director.manager.tasks import TaskScheduler

MAX_JSON = 1024 * 1024
MAX_UPLOAD = 100 * 1024 * 1024


class APIError(Exception):
    def __init__(
        self, status: int, code: str, message: str, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.extra = extra or {}


def not_found(what: str = "no such site") -> APIError:
    return APIError(404, "not_found", what)


def query(request: Any, method: str, route: str) -> dict[str, Any]:
    """The query parameters C{route} takes, read against the OpenAPI document's schemas."""
    required = {name for (m, r, name) in REQUIRED_QUERY if (m, r) == (method, route)}
    return read_query(request.args, QUERY_PARAMETERS[method, route], required)


def read_json(request: Any) -> Any:
    body = request.content.read(MAX_JSON + 1) if request.content is not None else b""
    if len(body) > MAX_JSON:
        raise APIError(413, "too_large", f"JSON bodies are limited to {MAX_JSON} bytes")
    if not body:
        return {}  # no body: the routes whose body is optional
    try:
        value = json.loads(body)  # (only whitespace is not JSON: 400, as the document says)
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "bad_json", "the request body is not valid JSON") from None
    if _lone_surrogate(value):
        # JSON lets "\ud800" through; no database, file or header can hold it.
        raise APIError(400, "bad_json", "the request body holds text that is not Unicode")
    return value


def _lone_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a string with a lone surrogate anywhere."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= c <= "\udfff" for c in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def read_object(request: Any, allowed: set[str]) -> dict[str, Any]:
    body = read_json(request)
    if not isinstance(body, dict):
        raise APIError(400, "bad_json", "expected a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise APIError(
            400,
            "unknown_field",
            f"unknown field {unknown[0]!r}; allowed: " + ", ".join(sorted(allowed)),
        )
    return body


def _check_usernames(usernames: list[str]) -> None:
    """Members may be people who have not signed in yet, but their names must be names."""
    for name in usernames:
        if not models.USERNAME.fullmatch(name):
            raise ValidationError("users", f"{name[:40]!r} is not a username")


app = Klein()


class ManagerBase:
    """What every route module shares: collaborators, error pages, authentication, site rules."""

    app = app
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        engine: OperationEngine,
        passwords: Passwords,
        orchestrator: OrchestratorClient | OrchestratorPool,
        bus: IEventBus,
        sites_domain: str,
        signer: RequestSigner,
        orchestrator_url: str,
        router: RouterClient | RouterPool | None = None,
        limiter: Limiter | None = None,
        *,
        services: ManagerServices,
        proxies: Proxies | None = None,
        reauth: timedelta = timedelta(minutes=10),
        reserved_hosts: tuple[str, ...] = ("director.localhost",),
        shell_address: tuple[str, int] = ("director.localhost", 2322),
        disk: DiskPoller | None = None,
        tasks: TaskScheduler | None = None,
        backups: BackupScheduler | None = None,
        url_formats: UrlFormats | None = None,
    ) -> None:
        self._reactor = reactor
        # Reads the sites' disk use again soon after a write through the files API.
        self._disk = disk
        self.store = store
        self.engine = engine
        self.passwords = passwords
        # Each site's calls go to its own orchestrator (a lone client: a pool of one).
        self.pool = (
            orchestrator
            if isinstance(orchestrator, OrchestratorPool)
            else OrchestratorPool.single(orchestrator, url=orchestrator_url.rstrip("/"))
        )
        self.bus = bus
        self.sites_domain = sites_domain
        #: each purpose's URL format (director.url_formats); a site's URL and route
        self.url_formats = url_formats or UrlFormats(sites_domain)
        self.signer = signer
        self.limiter: Limiter = limiter or RateLimiter(reactor)
        self._router = router
        self.proxies = proxies or Proxies()
        self.reauth = reauth
        # The dashboard's own host names: never a site's custom domain.
        self.reserved_hosts = tuple(h.lower() for h in reserved_hosts if h)
        # Where users reach the shell server (host, port): for sftp_url and git_url.
        self.shell_address = shell_address
        # Runs scheduled tasks (and "run now"); None: no tasks here.
        self.tasks = tasks
        self.backups = backups
        self.access = Access(store, self.proxies, self.limiter)
        # The rules the routes call (built once, by the manager's builder).
        self.site_service = services.sites
        self.catalogue_service = services.catalogue
        self.user_service = services.users
        self.request_service = services.requests

    # What one user may take and where mail goes: the request service's, read by every route
    # (set here, e.g. by a test, they change for the service too).

    @property
    def limits(self) -> UserLimits:
        return self.request_service.limits

    @limits.setter
    def limits(self, limits: UserLimits) -> None:
        self.request_service.limits = limits

    @property
    def mailer(self) -> Mailer:
        return self.request_service.mailer

    @mailer.setter
    def mailer(self, mailer: Mailer) -> None:
        self.request_service.mailer = mailer

    # -- errors --------------------------------------------------------------------------------

    @app.handle_errors(APIError)
    def _api_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        if e.extra:
            body = {"error": e.code, "message": e.message, **e.extra}
            return render_json(request, body, e.status)
        return render_error(request, e.status, e.code, e.message)

    @app.handle_errors(AccessDenied)
    def _access_denied(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        return render_error(request, e.status, e.code, e.message)

    @app.handle_errors(ValidationError)
    def _validation_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        return render_json(request, {"error": e.code, "message": e.message, "field": e.field}, 400)

    @app.handle_errors(Conflict)
    def _conflict(self, request: IRequest, failure: Any) -> bytes:
        return render_error(request, 409, failure.value.code, failure.value.message)

    @app.handle_errors(NodeUnavailable)
    def _node_unavailable(self, request: IRequest, failure: Any) -> bytes:
        return render_error(
            request,
            503,
            "node_unavailable",
            "the server this site runs on is unavailable; try again soon",
        )

    @app.handle_errors(PlacementError)
    def _placement_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        return render_error(request, e.status, e.code, e.message)

    @app.handle_errors(HTTPException)
    def _routing_error(self, request: IRequest, failure: Any) -> bytes:
        """No route (or method) for the request: JSON like every other answer under /api/."""
        e = failure.value
        if e.code == 405:
            return render_error(request, 405, "method_not_allowed", "this method is not allowed")
        return render_error(request, e.code or 404, "not_found", "not found")

    @app.handle_errors(NotFound)
    def _not_found(self, request: IRequest, failure: Any) -> bytes:
        return render_error(request, 404, "not_found", "not found")

    @app.handle_errors(ComponentCallError)
    def _component_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        if not (400 <= e.status < 500 and e.code in USER_ERROR_CODES):
            self.log.warn("component call failed: {e}", e=e)
        return render_error(request, *public_error(e.status, e.code, e.detail))

    # -- authentication ----------------------------------------------------------------------

    async def user(self, request: Any, write: bool | None = None) -> User:
        """The authenticated, active user making C{request} (401/403/429 otherwise)."""
        return await self.access.api_user(request, write)

    async def site_for(self, user: User, name: str) -> Site:
        """The site C{name} if C{user} may act on it; 404 otherwise (existence not revealed)."""
        site = await self.access.site(user, name)
        if site is None:
            raise not_found()
        return site

    def _check_name_and_agreement(
        self, user: User, name: str, purpose: str, agreed: object
    ) -> None:
        """The school's name rules, and its student agreement, for a new site or request."""
        check_name_and_agreement(self.limits, user, name, purpose, agreed)

    async def site_ready(self, user: User, name: str, change: bool = True) -> Site:
        """
        The site C{name} for an action of C{user}'s (404 as L{site_for}): refused (403) to
        members when an administrator disabled it and C{change}; once its creation ended
        (waited for up to C{limits.creation_wait} seconds, then 409 with the operation).
        """
        site = await self.site_for(user, name)
        if change and locked(user, site):
            raise APIError(
                403,
                "site_disabled",
                f"an administrator disabled this site; contact {self.limits.admin_contact} "
                "to have it enabled (the site's page shows their comment)",
            )
        op = await unfinished_creation(
            self._reactor, self.store, site.id, self.limits.creation_wait
        )
        if op is None:
            return await self.site_for(user, name)  # as its creation left it
        if op.status == "failed":
            raise APIError(
                409,
                "site_not_created",
                "setting up the site failed; retry its operation (or ask an administrator)",
                {"operation": op.to_json()},
            )
        raise APIError(
            409,
            "site_creating",
            "the site is still being set up; try again when its operation has finished",
            {"operation": op.to_json()},
        )

    async def check_members(
        self,
        actor: User,
        usernames: list[str],
        purpose: str,
        kind: str,
        availability: str,
        site_id: int | None = None,
    ) -> None:
        """409 limit_reached if one of C{usernames} would hold more than the limits allow."""
        if actor.is_admin:
            return
        for username in usernames:
            member = await self.store.get_user(username)
            if member is None:
                continue  # not signed in yet: pending, counted from their first sign-in
            others = [
                s
                for s in await self.store.list_sites(member=username, limit=100_000)
                if s.id != site_id
            ]
            refusal = models.membership_refusal(
                self.limits, member, others, purpose, kind, availability
            )
            if refusal:
                raise APIError(409, "limit_reached", refusal)

    async def _tell_added(self, actor: User, site: Site, usernames: list[str]) -> None:
        """Mail the people C{actor} just made members of C{site} (those with an address)."""
        added = [u for u in usernames if u != actor.username and u in site.members]
        addresses = []
        for username in added:
            member = await self.store.get_user(username)
            if member is not None and member.email:
                addresses.append(member.email)
        if addresses:
            self.mailer.notify(
                addresses,
                f"You were added to the site {site.name}",
                f"{actor.username} added you as a member of the site {site.name} "
                f"({site.url(self.url_formats)}). Open it on the Sites page of Director.",
            )

    def require_admin(self, user: User) -> None:
        if not user.is_admin:
            raise APIError(403, "forbidden", "only administrators may do this")

    async def start(
        self,
        site: Site,
        kind: str,
        values: dict[str, Any] | None = None,
        user: User | None = None,
        params: dict[str, Any] | None = None,
        members: list[str] | None = None,
        domains: list[str] | None = None,
        database: dict[str, Any] | Keep | None = KEEP,
    ) -> tuple[Site, Any]:
        """Change the site's record and create the operation applying it, together."""
        updated, op = await self.store.update_site(
            site.id,
            values or {},
            members=members,
            domains=domains,
            operation=(kind, OPERATIONS[kind]),
            params=params,
            created_by=user.id if user else None,
            database=database,
        )
        await self.store.audit(
            user, kind, site.name, {"values": _plain(values or {}), "params": _plain(params or {})}
        )
        if user is not None:
            await self._site_changed(updated, user)
        self.engine.wake()
        return updated, op

    async def _site_changed(self, site: Site, user: User) -> None:
        """
        Tell browsers (and their membership checks) that the site's record changed. The
        raw record goes on the bus; each socket renders it for its own reader.
        """
        try:
            await self.bus.publish(
                f"site:{site.id}",
                {
                    "type": "site",
                    "site_id": site.id,
                    "members": list(site.members),
                    "site": models.site_record(site, self.url_formats),
                },
            )
        except Exception:
            self.log.failure("publishing a site change")

    def accepted(self, request: IRequest, site: Site, op: Any, user: User) -> bytes:
        """202: the site as it now stands and the operation applying the change."""
        return render_json(
            request, {"site": self.site_json(site, user), "operation": op.to_json()}, 202
        )

    def site_json(self, site: Site, user: User) -> dict[str, Any]:
        data = models.site_view(models.site_record(site, self.url_formats), user.is_admin)
        data.update(models.ssh_access(site.name, user.username, *self.shell_address))
        return data

    @app.route("/api/v1/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        from director.manager.openapi import document

        if self.tasks is None:
            return render_json(request, document())
        return render_json(request, document(task_max_timeout=self.tasks.settings.max_timeout))


def parse_public_key(line: object) -> tuple[str, str, str]:
    """(SHA256 fingerprint, comment, normalised line) of an OpenSSH public key line."""
    from twisted.conch.ssh.keys import BadKeyError, Key

    if not isinstance(line, str) or len(line) > 16384:
        raise ValidationError("public_key", "an OpenSSH public key line (ssh-ed25519 AAAA...)")
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise ValidationError("public_key", "an OpenSSH public key line (ssh-ed25519 AAAA...)")
    try:
        key = Key.fromString(" ".join(parts[:2]).encode())
    except (BadKeyError, ValueError):
        raise ValidationError("public_key", "not a valid OpenSSH public key") from None
    if not key.isPublic() or key.type() not in ("Ed25519", "RSA", "EC"):
        raise ValidationError("public_key", "use an ed25519, ECDSA or RSA public key")
    if key.type() == "RSA" and key.size() < 2048:
        raise ValidationError("public_key", "RSA keys must have at least 2048 bits")
    comment = parts[2][:200] if len(parts) > 2 else ""
    from twisted.conch.ssh.keys import FingerprintFormats

    fingerprint = key.fingerprint(format=FingerprintFormats.SHA256_BASE64)
    return f"SHA256:{fingerprint}", comment, " ".join(parts[:2])


def _database_login(db: Any, host: DatabaseHostRecord) -> DatabaseSpec:
    return DatabaseSpec(host.admin(), db.name, db.username, db.password)


_whole = models.whole_number


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in values.items()
        if isinstance(v, str | int | float | bool | list | dict | None)
    }
