"""
The manager's REST API v1 (JSON), authenticated by `Authorization: Bearer <token>` or the
dashboard session (with a CSRF token on writes). Members act on their sites, admins on all;
a non-member gets 404 for another user's site, and nothing changes.
"""

from __future__ import annotations

import io
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from director.clients import OrchestratorClient, RouterClient
from director.common.client import (
    ComponentCallError,
    connect_websocket,
    file_digest,
    stream_body,
)
from director.common.guard import render_error
from director.common.signing import RequestSigner
from director.common.web import path_after, render_json
from director.contract.databases import DATABASE_HOST_FIELDS, DatabaseHost, DatabaseSpec
from director.contract.domains import is_within, normalize_domain
from director.manager import models, notices, schedules
from director.manager.access import Access, AccessDenied, admin_only, authenticated, locked
from director.manager.backups import SNAPSHOT_ID, BackupScheduler, restore_choice, run_view
from director.manager.creation import unfinished_creation
from director.manager.disk import DiskPoller
from director.manager.events import IEventBus
from director.manager.mail import Mailer, NullMailer
from director.manager.models import (
    USER_ERROR_CODES,
    Site,
    User,
    UserLimits,
    ValidationError,
    public_error,
)
from director.manager.openapi import QUERY_PARAMETERS, REQUIRED_QUERY, is_set
from director.manager.operations import OPERATIONS, OperationEngine
from director.manager.passwords import MAX_LENGTH as MAX_PASSWORD_LENGTH
from director.manager.passwords import Passwords, validate_password
from director.manager.proxies import Proxies
from director.manager.query_args import read_query
from director.manager.ratelimit import RateLimiter
from director.manager.store import KEEP, Conflict, Keep, NotFound, Store
from director.manager.tasks import TaskScheduler, first_run

MAX_JSON = 1024 * 1024
MAX_UPLOAD = 100 * 1024 * 1024
FALLBACK_IMAGE = "director/python:3"


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


def _token_request(body: dict[str, Any]) -> tuple[str, int | None]:
    """(name, days until it expires or None) of a new API token."""
    name = body.get("name", "api")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise ValidationError("name", "1 to 100 characters")
    days = _whole(body.get("expires_in_days"))
    if body.get("expires_in_days") is not None and (days is None or not 1 <= days <= 3650):
        raise ValidationError("expires_in_days", "a whole number of days from 1 to 3650")
    return name, days


def _check_usernames(usernames: list[str]) -> None:
    """Members may be people who have not signed in yet, but their names must be names."""
    for name in usernames:
        if not models.USERNAME.fullmatch(name):
            raise ValidationError("users", f"{name[:40]!r} is not a username")


class ManagerAPI:
    """Routes under /api/v1/ and /shell-server/; mounted by L{director.manager.web}."""

    app = Klein()
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        engine: OperationEngine,
        passwords: Passwords,
        orchestrator: OrchestratorClient,
        bus: IEventBus,
        sites_domain: str,
        signer: RequestSigner,
        orchestrator_url: str,
        router: RouterClient | None = None,
        limiter: RateLimiter | None = None,
        mailer: Mailer | None = None,
        limits: UserLimits | None = None,
        *,
        proxies: Proxies | None = None,
        reauth: timedelta = timedelta(minutes=10),
        reserved_hosts: tuple[str, ...] = ("director.localhost",),
        shell_address: tuple[str, int] = ("director.localhost", 2322),
        disk: DiskPoller | None = None,
        tasks: TaskScheduler | None = None,
        backups: BackupScheduler | None = None,
    ) -> None:
        self._reactor = reactor
        # Reads the sites' disk use again soon after a write through the files API.
        self._disk = disk
        self.limits = limits or UserLimits()
        self.store = store
        self.engine = engine
        self.passwords = passwords
        self.orchestrator = orchestrator
        self.bus = bus
        self.sites_domain = sites_domain
        self.signer = signer
        self.orchestrator_url = orchestrator_url.rstrip("/")
        self.limiter = limiter or RateLimiter(reactor)
        self._router = router
        self.mailer: Mailer = mailer or NullMailer()
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
        refusal = self.limits.names.refusal(user, name, purpose)
        if refusal:
            raise ValidationError("name", refusal)
        if agreed is not None and not isinstance(agreed, bool):
            raise ValidationError("agreement", "true when the agreement is ticked")
        refusal = self.limits.agreement_refusal(user, agreed)
        if refusal:
            raise ValidationError("agreement", refusal)

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
                f"({site.url(self.sites_domain)}). Open it on the Sites page of Director.",
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
                    "site": models.site_record(site, self.sites_domain),
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
        data = models.site_view(models.site_record(site, self.sites_domain), user.is_admin)
        data.update(models.ssh_access(site.name, user.username, *self.shell_address))
        return data

    @app.route("/api/v1/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        from director.manager.openapi import document

        if self.tasks is None:
            return render_json(request, document())
        return render_json(request, document(task_max_timeout=self.tasks.settings.max_timeout))

    # -- me, tokens, keys -----------------------------------------------------------------------

    @app.route("/api/v1/me", methods=["GET"])
    @authenticated()
    async def me(self, request: IRequest, user: User) -> bytes:
        return render_json(request, user.to_json())

    @app.route("/api/v1/me", methods=["PATCH"])
    @authenticated()
    async def patch_me(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"accepted_guidelines", "password", "current_password"})
        values: dict[str, Any] = {}
        if "accepted_guidelines" in body:
            if body["accepted_guidelines"] is not True:
                raise ValidationError("accepted_guidelines", "can only be set to true")
            values["accepted_guidelines"] = True
        current = body.get("current_password")
        if current is not None and (
            not isinstance(current, str) or len(current) > MAX_PASSWORD_LENGTH
        ):
            raise ValidationError("current_password", "your current password, as text")
        if "password" in body and user.is_service:
            raise APIError(
                409, "service_account", "service accounts have no password: they use API tokens"
            )
        if "password" in body:
            found = await self.store.password_hash(user.username)
            has_password = found is not None and found[1] is not None
            if found is None or (
                has_password
                and not (isinstance(current, str) and await self.passwords.check(current, found[1]))
            ):
                raise APIError(403, "wrong_password", "the current password is wrong")
            if not has_password and not await self._recently_authenticated(request, user, None):
                # An account that signs in through the school has no password to confirm:
                # giving it one needs a fresh sign-in instead.
                raise APIError(
                    403, "reauthenticate", "setting a first password needs a recent sign-in"
                )
            values["password_hash"] = await self.passwords.hash(validate_password(body["password"]))
        updated = await self.store.update_user(user.username, **values) if values else user
        if "password_hash" in values:
            # Whoever else was signed in as this user (with the old password) is signed out.
            ended = await self.store.delete_sessions(
                user.id, keep=getattr(request, "director_session_id", None)
            )
            await self.store.audit(
                user, "change_password", user.username, {"sessions_ended": ended}
            )
        return render_json(request, updated.to_json())

    async def _recently_authenticated(self, request: Any, user: User, password: object) -> bool:
        """A dashboard session signed in within C{reauth}, or the account's password."""
        session_id = getattr(request, "director_session_id", None)
        if session_id is not None:
            started = await self.store.session_started(session_id)
            if started is not None and datetime.now(UTC) - started <= self.reauth:
                return True
        if password is None:
            return False
        found = await self.store.password_hash(user.username)
        return (
            isinstance(password, str)
            and len(password) <= 256
            and found is not None
            and found[1] is not None
            and await self.passwords.check(password, found[1])
        )

    @app.route("/api/v1/tokens", methods=["GET"])
    @authenticated()
    async def list_tokens(self, request: IRequest, user: User) -> bytes:
        return render_json(request, {"tokens": await self.store.list_tokens(user.id)})

    @app.route("/api/v1/tokens", methods=["POST"])
    @authenticated()
    async def create_token(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"name", "expires_in_days", "password"})
        name, days = _token_request(body)
        if not await self._recently_authenticated(request, user, body.get("password")):
            raise APIError(
                403,
                "reauthenticate",
                "creating a token needs a recent sign-in: sign in again, or send your "
                "current password as password",
            )
        expires = datetime.now(UTC) + timedelta(days=days) if days is not None else None
        token = await self.store.create_token(user.id, name, expires)
        await self.store.audit(
            user, "create_token", user.username, {"name": name, "expires_in_days": days}
        )
        return render_json(
            request,
            {"token": token, "name": name, "expires_at": expires.isoformat() if expires else None},
            201,
        )

    @app.route("/api/v1/tokens/<int(max=2147483647):token_id>", methods=["DELETE"])
    @authenticated()
    async def delete_token(self, request: IRequest, user: User, token_id: int) -> bytes:
        if not await self.store.delete_token(user.id, token_id):
            raise not_found("no such token")
        await self.store.audit(user, "revoke_token", user.username, {"id": token_id})
        return render_json(request, {"deleted": token_id})

    @app.route("/api/v1/me/keys", methods=["GET"])
    @authenticated()
    async def list_keys(self, request: IRequest, user: User) -> bytes:
        return render_json(request, {"keys": await self.store.ssh_keys(user.id)})

    @app.route("/api/v1/me/keys", methods=["POST"])
    @authenticated()
    async def add_key(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"public_key"})
        line = body.get("public_key")
        fingerprint, comment, normalized = parse_public_key(line)
        await self.store.add_ssh_key(user.id, normalized, fingerprint, comment)
        await self.store.audit(user, "add_ssh_key", user.username, {"fingerprint": fingerprint})
        return render_json(request, {"fingerprint": fingerprint, "comment": comment}, 201)

    @app.route("/api/v1/me/keys/<int(max=2147483647):key_id>", methods=["DELETE"])
    @authenticated()
    async def delete_key(self, request: IRequest, user: User, key_id: int) -> bytes:
        if not await self.store.delete_ssh_key(user.id, key_id):
            raise not_found("no such key")
        return render_json(request, {"deleted": key_id})

    # -- sites ---------------------------------------------------------------------------------

    @app.route("/api/v1/sites", methods=["GET"])
    @authenticated()
    async def list_sites(self, request: Any, user: User) -> bytes:
        args = query(request, "get", "/api/v1/sites")
        everyone = user.is_admin and is_set(args["all"])
        sites = await self.store.list_sites(
            None if everyone else user.username,
            models.parse_query(args["q"] or ""),
            args["limit"] or 500,
            args["offset"] or 0,
        )
        return render_json(request, {"sites": [self.site_json(s, user) for s in sites]})

    @app.route("/api/v1/sites", methods=["POST"])
    @authenticated()
    async def create_site(self, request: IRequest, user: User) -> bytes:
        if not user.accepted_guidelines and not user.is_admin:
            raise APIError(403, "guidelines", "accept the guidelines before creating sites")
        body = read_object(
            request, {"name", "type", "description", "users", "purpose", "agreement"}
        )
        name = models.validate_site_name(body.get("name"))
        kind = models.validate_choice("type", body.get("type", "static"), models.SITE_TYPES)
        purpose = models.validate_choice("purpose", body.get("purpose", "project"), models.PURPOSES)
        self._check_name_and_agreement(user, name, purpose, body.get("agreement"))
        description = models.validate_description(body.get("description", ""))
        users = body.get("users", [])
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise ValidationError("users", "a list of usernames")
        if len(users) > 50:
            raise ValidationError("users", "at most 50 members")
        _check_usernames(users)
        if purpose == "activity" and not user.is_teacher:
            raise APIError(403, "forbidden", "students request activity sites (see /requests)")
        members = (
            sorted({*users, user.username})
            if not user.is_admin or not users
            else sorted(set(users))
        )
        await self.check_members(user, members, purpose, kind, "enabled")
        image = await self.store.default_image() or FALLBACK_IMAGE
        site, op = await self.store.create_site(
            {
                "name": name,
                "type": kind,
                "purpose": purpose,
                "availability": "enabled",
                "description": description,
                "image": image,
                "packages": [],
                "limits": dict(models.DEFAULT_LIMITS),
            },
            members,
            ("create_site", OPERATIONS["create_site"]),
            user.id,
        )
        await self.store.audit(user, "create_site", name, {"type": kind, "members": members})
        self.engine.wake()
        await self._tell_added(user, site, members)
        return render_json(
            request, {"site": self.site_json(site, user), "operation": op.to_json()}, 202
        )

    @app.route("/api/v1/sites/<name>", methods=["GET"])
    @authenticated()
    async def get_site(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        data = self.site_json(site, user)
        active = await self.store.active_operation(site.id)
        data["operation"] = active.to_json() if active else None
        return render_json(request, data)

    @app.route("/api/v1/sites/<name>", methods=["PATCH"])
    @authenticated()
    async def patch_site(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        admin_fields = {"availability", "limits", "admin_comments", "public_comment"}
        body = read_object(
            request,
            {"name", "description", "type", "users", "image", "packages", "purpose"} | admin_fields,
        )
        if set(body) & admin_fields and not user.is_admin:
            raise APIError(
                403, "forbidden", "only administrators change availability, limits and comments"
            )
        values: dict[str, Any] = {}
        params: dict[str, Any] = {}
        kind = "update_site"
        if "name" in body and body["name"] != site.name:
            if site.purpose == "personal" and not user.is_admin:
                raise APIError(403, "forbidden", "personal sites keep their owner's name")
            values["name"] = models.validate_site_name(body["name"])
            refusal = self.limits.names.refusal(user, values["name"], site.purpose)
            if refusal:
                raise ValidationError("name", refusal)
            params["old_name"] = site.name
            kind = "rename_site"
        if "description" in body:
            values["description"] = models.validate_description(body["description"])
        if "type" in body:
            values["type"] = models.validate_choice("type", body["type"], models.SITE_TYPES)
        if "purpose" in body:
            values["purpose"] = models.validate_choice("purpose", body["purpose"], models.PURPOSES)
            refusal = models.purpose_refusal(user, site.purpose, values["purpose"])
            if refusal:
                raise APIError(403, "forbidden", refusal)
        if "availability" in body:
            values["availability"] = models.validate_choice(
                "availability", body["availability"], models.AVAILABILITY
            )
        if "limits" in body:
            values["limits"] = models.validate_limits(body["limits"])
        if "admin_comments" in body:
            values["admin_comments"] = models.validate_description(body["admin_comments"])
        if "public_comment" in body:
            values["public_comment"] = models.validate_description(body["public_comment"])
        if "image" in body or "packages" in body:
            if kind == "rename_site":
                raise APIError(400, "one_change", "rename the site and change its image separately")
            images = {i["name"] for i in await self.store.list_images()} | {FALLBACK_IMAGE}
            image = body.get("image", site.image)
            if image not in images:
                raise Conflict("unknown_image", "choose an image from the catalogue")
            # The record keeps the image it runs until the build succeeds: the request
            # travels in the operation's params (and stays there if the build fails).
            params["image"] = image
            params["packages"] = models.validate_packages(body.get("packages", list(site.packages)))
            kind = "set_image"
        members = None
        if "users" in body:
            users = body["users"]
            if (
                not isinstance(users, list)
                or not users
                or not all(isinstance(u, str) for u in users)
            ):
                raise ValidationError("users", "a non-empty list of usernames")
            _check_usernames(users)
            members = sorted(set(users))
        added = [m for m in members or () if m not in site.members]
        # Every member is counted again when the site becomes dynamic or personal.
        changed = (values.get("type") == "dynamic" != site.type) or (
            values.get("purpose") == "personal" != site.purpose
        )
        await self.check_members(
            user,
            list(members or site.members) if changed else added,
            values.get("purpose", site.purpose),
            values.get("type", site.type),
            values.get("availability", site.availability),
            site.id,
        )
        only_records = kind != "set_image" and set(values) <= {
            "description",
            "purpose",
            "admin_comments",
            "public_comment",
        }
        if only_records:
            updated, _ = await self.store.update_site(site.id, values, members=members)
            await self.store.audit(user, "edit_site", site.name, {"values": _plain(values)})
            await self._site_changed(updated, user)
            await self._tell_added(user, updated, added)
            return render_json(request, {"site": self.site_json(updated, user), "operation": None})
        updated, op = await self.start(site, kind, values, user, params, members=members)
        await self._tell_added(user, updated, added)
        return render_json(
            request,
            {"site": self.site_json(updated, user), "operation": op.to_json() if op else None},
            202,
        )

    @app.route("/api/v1/sites/<name>", methods=["DELETE"])
    @authenticated()
    async def delete_site(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        if site.purpose in models.ADMIN_PURPOSES and not user.is_admin:
            raise APIError(
                403, "forbidden", f"only administrators delete {site.purpose} sites; ask them"
            )
        params: dict[str, Any] = {"name": site.name, "purge_files": True}
        if site.database is not None:
            db = site.database
            params["database"] = {"host_id": db.host_id, "name": db.name, "username": db.username}
        _, op = await self.start(site, "delete_site", {}, user, params)
        return render_json(request, {"operation": op.to_json()}, 202)

    async def _site_operation(self, request: IRequest, user: User, name: str, kind: str) -> bytes:
        """An operation that changes nothing in the record, only applies it (202)."""
        site = await self.site_ready(user, name)
        _, op = await self.start(site, kind, {}, user)
        return render_json(request, {"operation": op.to_json()}, 202)

    @app.route("/api/v1/sites/<name>/restart", methods=["POST"])
    @authenticated()
    async def restart_site(self, request: IRequest, user: User, name: str) -> bytes:
        return await self._site_operation(request, user, name, "restart")

    @app.route("/api/v1/sites/<name>/repair", methods=["POST"])
    @authenticated()
    async def repair_site(self, request: IRequest, user: User, name: str) -> bytes:
        return await self._site_operation(request, user, name, "repair")

    @app.route("/api/v1/sites/<name>/regenerate-secrets", methods=["POST"])
    @authenticated()
    async def regenerate_secrets(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        if site.database is None:
            raise APIError(409, "no_database", "the site has no database secrets to regenerate")
        database = {
            "host_id": site.database.host_id,
            "name": site.database.name,
            "username": site.database.username,
            "password": secrets.token_urlsafe(24),
        }
        _, op = await self.start(site, "regenerate_secrets", {}, user, database=database)
        return render_json(request, {"operation": op.to_json()}, 202)

    @app.route("/api/v1/sites/<name>/status", methods=["GET"])
    @authenticated()
    async def site_status(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        try:
            status = await self.orchestrator.site_status(site.id, timeout=10)
        except ComponentCallError as e:
            if e.status == 404:
                status = {"running": False, "starting": False, "error": "not deployed yet"}
            else:
                raise
        return render_json(request, status)

    # -- domains -------------------------------------------------------------------------------

    @app.route("/api/v1/sites/<name>/domains", methods=["POST"])
    @authenticated()
    async def add_domain(self, request: IRequest, user: User, name: str) -> bytes:
        await self.site_for(user, name)  # 404 before anything is said about the input
        body = read_object(request, {"domain"})
        domain = body.get("domain")
        if not isinstance(domain, str):
            raise ValidationError("domain", "a domain name like www.example.org")
        domain = normalize_domain(domain.strip())
        if is_within(domain, self.sites_domain):
            raise Conflict(
                "domain_reserved", f"{self.sites_domain} names are sites' own, not custom domains"
            )
        if any(is_within(domain, h) for h in self.reserved_hosts):
            raise Conflict(
                "domain_reserved",
                f"{domain} is Director's own dashboard address; it cannot be a site's domain",
            )
        site = await self.site_ready(user, name)  # bad input is refused without waiting
        if domain in site.domains:
            raise Conflict("domain_exists", f"{domain} is already on this site")
        if len(site.domains) >= self.limits.domains_per_site and not user.is_admin:
            raise APIError(
                409,
                "limit_reached",
                f"a site may have at most {self.limits.domains_per_site} custom domains",
            )
        updated, op = await self.start(
            site, "set_domains", {}, user, domains=[*site.domains, domain]
        )
        return self.accepted(request, updated, op, user)

    @app.route("/api/v1/sites/<name>/domains", methods=["GET"])
    @authenticated()
    async def list_domains(self, request: IRequest, user: User, name: str) -> bytes:
        """The site's custom domains with their certificate state from the router."""
        site = await self.site_for(user, name)
        result = []
        for domain in site.domains:
            try:
                if self._router is None:
                    raise ComponentCallError("router", 503, b"{}")
                state = await self._router.certificate(domain, timeout=10)
            except ComponentCallError as e:
                state = {"state": "unknown", "last_error": e.detail}
            result.append({"domain": domain, "certificate": state})
        return render_json(request, {"domains": result})

    @app.route("/api/v1/sites/<name>/domains/<domain>", methods=["DELETE"])
    @authenticated()
    async def delete_domain(self, request: IRequest, user: User, name: str, domain: str) -> bytes:
        site = await self.site_ready(user, name)
        if domain not in site.domains:
            raise not_found("the site has no such domain")
        updated, op = await self.start(
            site, "set_domains", {}, user, domains=[d for d in site.domains if d != domain]
        )
        return self.accepted(request, updated, op, user)

    # -- scheduled tasks -----------------------------------------------------------------------

    def _scheduler(self) -> TaskScheduler:
        if self.tasks is None:
            raise APIError(503, "unavailable", "scheduled tasks are not available here")
        return self.tasks

    def _task_values(self, body: dict[str, Any], partial: bool) -> dict[str, Any]:
        """The task's columns from C{body} (all of them unless C{partial}), validated."""
        settings = self._scheduler().settings
        values: dict[str, Any] = {}
        if not partial:
            for required in ("schedule", "command"):
                if required not in body:
                    raise ValidationError(required, "required")
        if "schedule" in body:
            values["schedule"] = schedules.validate_schedule(body["schedule"])
        if "command" in body:
            values["command"] = schedules.validate_command(body["command"])
        if "name" in body:
            values["name"] = schedules.validate_name(body["name"])
        if "timeout" in body:
            values["timeout"] = schedules.validate_timeout(body["timeout"], settings)
        if "enabled" in body:
            values["enabled"] = schedules.validate_enabled(body["enabled"])
        if not partial:
            values.setdefault("name", "")
            values.setdefault("enabled", True)
            values.setdefault("timeout", min(settings.default_timeout, settings.max_timeout))
        return values

    async def _task_for(self, user: User, name: str, task_id: int) -> tuple[Site, Any]:
        # (the route takes any whole number: a bound there makes werkzeug answer 405 for
        # the methods of a path it matched with another method)
        site = await self.site_for(user, name)
        task = await self.store.get_task(site.id, task_id) if task_id <= 2**31 - 1 else None
        if task is None:
            raise not_found("the site has no such task")
        return site, task

    @app.route("/api/v1/sites/<name>/tasks", methods=["GET"])
    @authenticated()
    async def list_tasks(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        tasks = await self.store.list_tasks(site.id)
        return render_json(request, {"tasks": [t.to_json() for t in tasks]})

    @app.route("/api/v1/sites/<name>/tasks", methods=["POST"])
    @authenticated()
    async def create_task(self, request: IRequest, user: User, name: str) -> bytes:
        await self.site_for(user, name)  # 404 before anything is said about the input
        body = read_object(request, {"name", "schedule", "command", "timeout", "enabled"})
        values = self._task_values(body, partial=False)
        site = await self.site_ready(user, name)
        scheduler = self._scheduler()
        values["next_run_at"] = first_run(values["schedule"], self._reactor.seconds())
        most = None if user.is_admin else scheduler.settings.max_per_site
        task = await self.store.create_task(site.id, values, most, user.id)
        await self.store.audit(user, "create_task", site.name, {"task": task.id, **values})
        return render_json(request, {"task": task.to_json()}, 201)

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>", methods=["GET"])
    @authenticated()
    async def get_task(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        _, task = await self._task_for(user, name, task_id)
        return render_json(request, {"task": task.to_json()})

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>", methods=["PATCH"])
    @authenticated()
    async def patch_task(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        await self._task_for(user, name, task_id)
        body = read_object(request, {"name", "schedule", "command", "timeout", "enabled"})
        if not body:
            raise APIError(400, "bad_request", "send at least one field to change")
        values = self._task_values(body, partial=True)
        site = await self.site_ready(user, name)
        _, task = await self._task_for(user, name, task_id)
        if "schedule" in values or (values.get("enabled") and not task.enabled):
            # the next run counts from now: a re-enabled task does not catch up
            values["next_run_at"] = first_run(
                values.get("schedule", task.schedule), self._reactor.seconds()
            )
        updated = await self.store.update_task(task.id, values)
        await self.store.audit(user, "edit_task", site.name, {"task": task.id, **values})
        return render_json(request, {"task": updated.to_json()})

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>", methods=["DELETE"])
    @authenticated()
    async def delete_task(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        await self._task_for(user, name, task_id)
        site = await self.site_ready(user, name)
        await self.store.delete_task(task_id)
        await self.store.audit(user, "delete_task", site.name, {"task": task_id})
        return render_json(request, {"deleted": task_id})

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>/runs", methods=["GET"])
    @authenticated()
    async def list_task_runs(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        _, task = await self._task_for(user, name, task_id)
        runs = await self.store.list_runs(task.id)
        return render_json(request, {"runs": [r.to_json() for r in runs]})

    @app.route("/api/v1/sites/<name>/tasks/<int:task_id>/run", methods=["POST"])
    @authenticated()
    async def run_task(self, request: IRequest, user: User, name: str, task_id: int) -> bytes:
        """Run the task now (in the background): 202 with the run to follow."""
        await self._task_for(user, name, task_id)
        read_object(request, set())
        site = await self.site_ready(user, name)
        _, task = await self._task_for(user, name, task_id)
        if site.availability != "enabled":
            raise Conflict(
                "site_not_served",
                f"the site is {site.availability}: its tasks do not run until it is enabled",
            )
        run, started = await self._scheduler().launch(task, "manual")
        if not started:
            raise Conflict(
                "task_running", "the task's previous run is still going; wait for it to end"
            )
        await self.store.audit(user, "run_task", site.name, {"task": task.id, "run": run.id})
        return render_json(request, {"run": run.to_json()}, 202)

    # -- database ------------------------------------------------------------------------------

    @app.route("/api/v1/sites/<name>/database", methods=["POST"])
    @authenticated()
    async def create_database(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        body = read_object(request, {"type", "host_id"})
        kind = models.validate_choice("type", body.get("type"), ("postgres", "mysql"))
        chosen = _whole(body.get("host_id"))
        if body.get("host_id") is not None:
            # Administrators may pick the server among the registered ones of that type;
            # everyone else gets the first one registered.
            self.require_admin(user)
            if chosen is None:
                raise ValidationError("host_id", "the id of a database host (an integer)")
        if site.database is not None:
            raise Conflict("database_exists", "the site already has a database; delete it first")
        if self.limits.databases_per_site < 1 and not user.is_admin:
            raise APIError(
                403, "limit_reached", "only administrators add databases; ask them for one"
            )
        if chosen is not None:
            host = await self.store.database_host(kind=kind, host_id=chosen)
            if host is None:
                raise Conflict("unknown_database_host", f"no {kind} database host has this id")
        else:
            host = await self.store.database_host(kind=kind)
        if host is None:
            raise APIError(
                409, "no_database_host", f"no {kind} server is configured; ask an administrator"
            )
        identifier = f"site_{site.id}"
        database = {
            "host_id": host["id"],
            "name": identifier,
            "username": identifier,
            "password": secrets.token_urlsafe(24),
        }
        updated, op = await self.start(site, "create_database", {}, user, database=database)
        return self.accepted(request, updated, op, user)

    @app.route("/api/v1/sites/<name>/database", methods=["GET"])
    @authenticated()
    async def get_database(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        if site.database is None:
            raise not_found("the site has no database")
        return render_json(request, site.database.to_json(show_password=True))

    @app.route("/api/v1/sites/<name>/database", methods=["DELETE"])
    @authenticated()
    async def delete_database(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        db = site.database
        if db is None:
            raise not_found("the site has no database")
        if site.purpose in models.ADMIN_PURPOSES and not user.is_admin:
            raise APIError(
                403,
                "forbidden",
                f"only administrators delete the database of a {site.purpose} site; ask them",
            )
        params = {"database": {"host_id": db.host_id, "name": db.name, "username": db.username}}
        updated, op = await self.start(site, "delete_database", {}, user, params, database=None)
        return self.accepted(request, updated, op, user)

    @app.route("/api/v1/sites/<name>/database/query", methods=["POST"])
    @authenticated(write=True)
    async def query_database(self, request: IRequest, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        db = site.database
        if db is None:
            raise not_found("the site has no database")
        body = read_object(request, {"sql"})
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip() or len(sql) > 100_000:
            raise ValidationError("sql", "one SQL statement")
        host = await self.store.database_host(host_id=db.host_id)
        assert host is not None
        try:
            result = await self.orchestrator.query_database(
                _database_login(db, host), sql, query_timeout=10, max_rows=1000, timeout=30
            )
        except ComponentCallError as e:
            if e.code == "access_denied":
                # The record's password is not (yet) the database's: a change of it is still
                # being applied, or someone changed it inside the database.
                raise APIError(
                    409,
                    "database_login_failed",
                    "the site's database refused the site's login: wait for the site's "
                    "operation to finish, or regenerate the database password",
                ) from None
            if e.code in ("unavailable", "server_error"):
                # The server the administrators configured is down or refuses: not a fault
                # of Director's, and nothing the site's owner can fix by retrying at once.
                raise APIError(
                    409,
                    "database_unavailable",
                    f"the database server cannot be reached: {e.detail}",
                ) from None
            raise
        return render_json(request, result)

    # -- backups -----------------------------------------------------------------------------

    def _backups(self) -> BackupScheduler:
        if self.backups is None:
            raise APIError(503, "unavailable", "backups are not set up on this manager")
        return self.backups

    async def _snapshots(self, site: Site) -> list[dict[str, Any]]:
        try:
            snapshots = await self.orchestrator.list_backups(site.id, timeout=120)
        except ComponentCallError as e:
            self.log.warn("listing backups failed: {e}", e=e)
            raise APIError(
                503, "backups_unavailable", "the backups cannot be listed now; try again later"
            ) from None
        return snapshots

    @app.route("/api/v1/sites/<name>/backups", methods=["GET"])
    @authenticated()
    async def list_backups(self, request: IRequest, user: User, name: str) -> bytes:
        """The site's snapshots (newest first, with time and size) and its latest backups."""
        site = await self.site_for(user, name)
        scheduler = self._backups()
        snapshots = await self._snapshots(site)
        runs = await scheduler.records.recent(site_id=site.id, kind="site", limit=10)
        return render_json(
            request,
            {
                "snapshots": snapshots,
                "runs": [run_view(r, user.is_admin) for r in runs],
            },
        )

    @app.route("/api/v1/sites/<name>/backups", methods=["POST"])
    @authenticated()
    async def backup_now(self, request: IRequest, user: User, name: str) -> bytes:
        """Back the site up now (202 with the run; its progress is in the list of backups)."""
        site = await self.site_ready(user, name)
        read_object(request, set())
        scheduler = self._backups()
        if scheduler.site_running(site.id):
            raise Conflict("backup_running", "a backup of this site is already running")
        row = await scheduler.backup_site_soon(site)
        await self.store.audit(user, "backup_site", site.name, {})
        return render_json(request, {"backup": run_view(row, user.is_admin)}, 202)

    @app.route("/api/v1/sites/<name>/backups/<snapshot>/restore", methods=["POST"])
    @authenticated()
    async def restore_backup(
        self, request: IRequest, user: User, name: str, snapshot: str
    ) -> bytes:
        """Restore the site's files (all, or one path) and/or database from a snapshot."""
        site = await self.site_ready(user, name)
        body = read_object(request, {"files", "path", "database"})
        choice = restore_choice(body, site.database is not None)
        self._backups()
        if not SNAPSHOT_ID.fullmatch(snapshot):
            raise not_found("no such backup of this site")
        found = next(
            (s for s in await self._snapshots(site) if snapshot in (s["id"], s["short_id"])),
            None,
        )
        if found is None:
            raise not_found("no such backup of this site")
        if choice.database and found.get("database") is None:
            raise Conflict("no_database_backup", "this backup has no database; restore the files")
        if choice.database and found.get("database") != site.database.kind:  # type: ignore[union-attr]
            raise Conflict(
                "wrong_database_type",
                f"this backup holds a {found['database']} database, the site's is another type",
            )
        _, op = await self.start(site, "restore_backup", {}, user, choice.params(found["id"]))
        return render_json(request, {"operation": op.to_json()}, 202)

    @app.route("/api/v1/backups", methods=["GET"])
    @admin_only
    async def backup_status(self, request: IRequest, user: User) -> bytes:
        """(admins) The latest backup runs, failures first to see, and the last success."""
        scheduler = self._backups()
        summary = await scheduler.records.summary()
        runs = await scheduler.records.recent(limit=100)
        last = summary["last_success_at"]
        return render_json(
            request,
            {
                "running": scheduler.running is not None,
                "last_success_at": last.isoformat() if last is not None else None,
                "last_success_duration": summary["last_success_duration"],
                "failing": summary["failing"],
                "runs": [run_view(r, True) for r in runs],
            },
        )

    @app.route("/api/v1/backups", methods=["POST"])
    @admin_only
    async def backup_everything(self, request: IRequest, user: User) -> bytes:
        """(admins) Back up the manager and every site now."""
        read_object(request, set())
        if not self._backups().run_now():
            raise Conflict("backup_running", "a backup of everything is already running")
        await self.store.audit(user, "backup_all", "", {})
        return render_json(request, {"started": True}, 202)

    # -- files (relayed to the orchestrator) -----------------------------------------------------

    @staticmethod
    def _path_after(request: Any, name: str) -> str:
        try:
            return path_after(request, f"/api/v1/sites/{name}/files")
        except UnicodeDecodeError:
            raise APIError(400, "bad_path", "paths must be UTF-8") from None

    async def _relay(
        self,
        request: Any,
        method: str,
        site: Site,
        path: str,
        directory: bool = False,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        body_file: Any = None,
        body_digest: str | None = None,
    ) -> bytes:
        """
        The orchestrator's answer to a file call, streamed to the client as it arrives (a
        download is never held whole; a slow client slows the orchestrator's side down).
        """
        response: Any = await self.orchestrator.files_request(
            method,
            site.id,
            path,
            directory=directory,
            json=json_body,
            params=params,
            body_file=body_file,
            body_digest=body_digest,
        )
        if response.code >= 400:
            # Refusals are small JSON: read whole, and told in words for the user.
            body: bytes = await response.content()
            try:
                found = json.loads(body)
                code, detail = str(found["error"]), str(found.get("message", ""))
            except (ValueError, KeyError, TypeError):
                code, detail = "error", ""
            status, public_code, message = public_error(response.code, code, detail)
            if (status, public_code, message) != (response.code, code, detail):
                self.log.warn(
                    "relayed call answered {status}: {body!r}", status=response.code, body=body
                )
            return render_error(request, status, public_code, message)
        request.setResponseCode(response.code)
        for header in (b"content-type", b"content-disposition"):
            values = response.headers.getRawHeaders(header)
            if values:
                request.setHeader(header, values[0])
        if isinstance(response.length, int):
            request.setHeader(b"content-length", str(response.length).encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-store")
        try:
            await stream_body(response, request, self._reactor)
        except Exception as e:
            # The status line has gone out: all that is left is to cut the transfer short.
            self.log.warn("a file transfer broke off: {e}", e=e)
            transport = getattr(request.channel, "transport", None)
            if transport is not None:
                transport.abortConnection()
        return b""

    @app.route("/api/v1/sites/<name>/files/", methods=["GET"], branch=True)
    @authenticated()
    async def get_file(self, request: Any, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name, change=False)
        path = self._path_after(request, name)
        args = query(request, "get", "/api/v1/sites/{name}/files/{path}")
        params = {"zip": "1"} if is_set(args["zip"]) else None
        return await self._relay(request, "GET", site, path, params=params)

    @app.route("/api/v1/sites/<name>/files/", methods=["PUT"], branch=True)
    @authenticated()
    async def put_file(self, request: Any, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        path = self._path_after(request, name)
        length = request.getHeader(b"content-length")
        if length and length.isdigit() and int(length) > MAX_UPLOAD:
            raise APIError(413, "too_large", f"uploads are limited to {MAX_UPLOAD} bytes")
        # twisted.web has spooled a large body to a temporary file: it is hashed and sent on
        # from there in chunks, never read into memory whole.
        content = request.content if request.content is not None else io.BytesIO()
        content.seek(0, io.SEEK_END)
        if content.tell() > MAX_UPLOAD:
            raise APIError(413, "too_large", f"uploads are limited to {MAX_UPLOAD} bytes")
        args = query(request, "put", "/api/v1/sites/{name}/files/{path}")
        params = {"mode": args["mode"]} if args["mode"] else {}
        if is_set(args["exclusive"]):
            params["exclusive"] = "1"
        digest = await file_digest(self._reactor, content)
        answer = await self._relay(
            request,
            "PUT",
            site,
            path,
            directory=request.path.endswith(b"/"),
            params=params or None,
            body_file=content,
            body_digest=digest,
        )
        if self._disk is not None:
            self._disk.soon()  # disk_usage_bytes follows the write within seconds
        return answer

    @app.route("/api/v1/sites/<name>/files/", methods=["PATCH"], branch=True)
    @authenticated()
    async def patch_file(self, request: Any, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        body = read_object(request, {"mode", "move_to"})
        return await self._relay(
            request,
            "PATCH",
            site,
            self._path_after(request, name),
            json_body=body,
        )

    @app.route("/api/v1/sites/<name>/files/", methods=["DELETE"], branch=True)
    @authenticated()
    async def delete_file(self, request: Any, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name)
        args = query(request, "delete", "/api/v1/sites/{name}/files/{path}")
        params = {"recursive": "1"} if is_set(args["recursive"]) else None
        return await self._relay(
            request,
            "DELETE",
            site,
            self._path_after(request, name),
            params=params,
        )

    # -- logs ----------------------------------------------------------------------------------

    @app.route("/api/v1/sites/<name>/logs", methods=["GET"])
    @authenticated()
    async def logs(self, request: Any, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        tail = query(request, "get", "/api/v1/sites/{name}/logs")["tail"] or 100
        if site.type != "dynamic":
            return render_json(request, {"lines": []})
        url = OrchestratorClient.websocket_url(
            self.orchestrator_url, OrchestratorClient.logs_path(site.id, tail)
        )
        proto = await connect_websocket(self._reactor, self.signer, "orchestrator", url, timeout=10)
        lines: list[str] = []
        from twisted.internet.defer import TimeoutError as Timeout

        try:
            while len(lines) < tail:
                message = await proto.next_message(0.5 if lines else 3)
                lines.append(json.loads(message)["line"])
        except Timeout:
            pass
        finally:
            proto.sendClose(1000)
        return render_json(request, {"lines": lines})

    # -- operations ------------------------------------------------------------------------------

    @app.route("/api/v1/operations/<int(max=2147483647):op_id>", methods=["GET"])
    @authenticated()
    async def get_operation(self, request: IRequest, user: User, op_id: int) -> bytes:
        op = await self._operation_for(user, op_id)
        return render_json(request, op.to_json())

    async def _operation_for(self, user: User, op_id: int) -> Any:
        """The operation if C{user} may see it (an admin, or a member of its site); else 404."""
        try:
            op = await self.store.get_operation(op_id)
        except NotFound:
            raise not_found("no such operation") from None
        if not user.is_admin and await self.access.site_by_id(user, op.site_id) is None:
            raise not_found("no such operation")
        return op

    @app.route("/api/v1/operations", methods=["GET"])
    @admin_only
    async def list_operations(self, request: IRequest, user: User) -> bytes:
        ops = await self.store.list_operations(failed_first=True)
        return render_json(request, {"operations": [o.to_json() for o in ops]})

    @app.route("/api/v1/operations/<int(max=2147483647):op_id>/retry", methods=["POST"])
    @authenticated()
    async def retry_operation(self, request: IRequest, user: User, op_id: int) -> bytes:
        op = await self._operation_for(user, op_id)
        if not user.is_admin:
            if op.type not in (
                "set_image",
                "create_database",
                "restart",
                "set_domains",
                "create_site",
            ):
                raise APIError(403, "forbidden", "ask an administrator to retry this operation")
        retried = await self.store.retry_operation(op_id)
        await self.store.audit(user, "retry_operation", op.site_name, {"operation": op_id})
        self.engine.wake()
        return render_json(request, retried.to_json(), 202)

    # -- users (admins) ------------------------------------------------------------------------

    @app.route("/api/v1/admin/disk-usage", methods=["GET"])
    @admin_only
    async def disk_usage(self, request: Any, user: User) -> bytes:
        """Administrators: the sites using the most disk, largest first."""
        limit = query(request, "get", "/api/v1/admin/disk-usage")["limit"] or 20
        sites = await self.store.largest_sites(limit)
        return render_json(
            request,
            {
                "sites": [
                    {
                        "name": s.name,
                        "type": s.type,
                        "members": list(s.members),
                        "disk_usage_bytes": s.disk_usage_bytes,
                        "disk_quota_bytes": s.disk_quota,
                    }
                    for s in sites
                ]
            },
        )

    @app.route("/api/v1/users", methods=["GET"])
    @authenticated()
    async def list_users(self, request: IRequest, user: User) -> bytes:
        if not user.is_teacher:
            raise APIError(403, "forbidden", "only teachers and administrators list users")
        return render_json(request, {"users": [u.to_json() for u in await self.store.list_users()]})

    @app.route("/api/v1/users", methods=["POST"])
    @admin_only
    async def create_user(self, request: IRequest, user: User) -> bytes:
        body = read_object(
            request, {"username", "role", "password", "full_name", "email", "is_service"}
        )
        username = models.validate_username(body.get("username"))
        role = models.validate_choice("role", body.get("role", "student"), models.ROLES)
        service = body.get("is_service", False)
        if not isinstance(service, bool):
            raise ValidationError("is_service", "true for an account that only has API tokens")
        password_hash = None
        if body.get("password") is not None:
            if service:
                raise APIError(
                    409, "service_account", "service accounts have no password: they use API tokens"
                )
            password_hash = await self.passwords.hash(validate_password(body["password"]))
        created = await self.store.create_user(
            username,
            role,
            password_hash,
            _text(body, "full_name", 200),
            _text(body, "email", 254),
            is_service=service,
        )
        await self.store.audit(user, "create_user", username, {"role": role, "is_service": service})
        return render_json(request, created.to_json(), 201)

    @app.route("/api/v1/users/<username>", methods=["PATCH"])
    @admin_only
    async def patch_user(self, request: IRequest, user: User, username: str) -> bytes:
        body = read_object(request, {"role", "is_active", "password"})
        values: dict[str, Any] = {}
        if "role" in body:
            values["role"] = models.validate_choice("role", body["role"], models.ROLES)
        if "is_active" in body:
            if not isinstance(body["is_active"], bool):
                raise ValidationError("is_active", "true or false")
            values["is_active"] = body["is_active"]
        if "password" in body:
            target = await self.store.get_user(username)
            if target is not None and target.is_service:
                raise APIError(
                    409, "service_account", "service accounts have no password: they use API tokens"
                )
            values["password_hash"] = await self.passwords.hash(validate_password(body["password"]))
        if not values:
            raise APIError(400, "nothing_to_change", "send role, is_active or password")
        updated = await self.store.update_user(username, **values)
        if "password_hash" in values or values.get("is_active") is False:
            await self.store.delete_sessions(updated.id)
        await self.store.audit(
            user, "edit_user", username, {k: v for k, v in values.items() if k != "password_hash"}
        )
        return render_json(request, updated.to_json())

    @app.route("/api/v1/users/<username>/tokens", methods=["POST"])
    @admin_only
    async def create_service_token(self, request: IRequest, user: User, username: str) -> bytes:
        """An API token for a service account (admins; people make their own tokens)."""
        body = read_object(request, {"name", "expires_in_days"})
        name, days = _token_request(body)
        known = models.USERNAME.fullmatch(username)
        target = await self.store.get_user(username) if known else None
        if target is None:
            raise not_found("no such user")
        if not target.is_service:
            raise APIError(
                409, "not_service", "only service accounts get tokens from an administrator"
            )
        expires = datetime.now(UTC) + timedelta(days=days) if days is not None else None
        token = await self.store.create_token(target.id, name, expires)
        await self.store.audit(
            user, "create_token", target.username, {"name": name, "expires_in_days": days}
        )
        return render_json(
            request,
            {"token": token, "name": name, "expires_at": expires.isoformat() if expires else None},
            201,
        )

    # -- banners and mail to many (admins) -------------------------------------------------------

    @app.route("/api/v1/banners", methods=["GET"])
    @authenticated()
    async def list_banners(self, request: IRequest, user: User) -> bytes:
        args = query(
            request, "get", "/api/v1/banners"
        )  # read for everyone: one answer to bad input
        everything = user.is_admin and is_set(args["all"])
        found = await self.store.banners(None if everything else datetime.now(UTC))
        return render_json(request, {"banners": found})

    @app.route("/api/v1/banners", methods=["POST"])
    @admin_only
    async def add_banner(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"message", "level", "expires_in_hours"})
        message, level, hours = notices.validate_banner(body)
        expires = datetime.now(UTC) + timedelta(hours=hours) if hours is not None else None
        banner = await self.store.add_banner(message, level, user.id, expires)
        await self.store.audit(user, "add_banner", str(banner["id"]), {"level": level})
        return render_json(request, banner, 201)

    @app.route("/api/v1/banners/<int(max=2147483647):banner_id>", methods=["DELETE"])
    @admin_only
    async def delete_banner(self, request: IRequest, user: User, banner_id: int) -> bytes:
        if not await self.store.delete_banner(banner_id):
            raise not_found("no such banner")
        await self.store.audit(user, "delete_banner", str(banner_id), {})
        return render_json(request, {"deleted": banner_id})

    @app.route("/api/v1/mail", methods=["POST"])
    @admin_only
    async def mail_many(self, request: IRequest, user: User) -> bytes:
        """One e-mail to everyone of a role, or to a site's members (each gets their own)."""
        body = read_object(request, {"role", "site", "subject", "body"})
        audience, subject, text = notices.validate_mail(body)
        if audience[0] == "site":
            site = await self.site_for(user, audience[1])
            people = [await self.store.get_user(name) for name in site.members]
        else:
            people = list(await self.store.list_users())
        recipients = notices.recipients(people, audience)
        for address in recipients:
            self.mailer.notify([address], subject, text)
        await self.store.audit(
            user,
            "mail",
            f"{audience[0]}:{audience[1]}",
            {"subject": subject, "recipients": len(recipients)},
        )
        return render_json(request, {"recipients": len(recipients)}, 202)

    # -- catalogue, database hosts, audit (admins) -----------------------------------------------

    @app.route("/api/v1/images", methods=["GET"])
    @authenticated()
    async def list_images(self, request: IRequest, _user: User) -> bytes:
        return render_json(request, {"images": await self.store.list_images()})

    @app.route("/api/v1/images", methods=["PUT"])
    @admin_only
    async def put_image(self, request: IRequest, user: User) -> bytes:
        body = read_object(
            request, {"name", "friendly_name", "description", "setup_command", "is_default"}
        )
        name = body.get("name")
        if not isinstance(name, str) or not models.IMAGE_REFERENCE.fullmatch(name):
            raise ValidationError("name", "a local image reference like director/python:3")
        friendly = body.get("friendly_name", name)
        if not isinstance(friendly, str) or not 1 <= len(friendly) <= 100:
            raise ValidationError("friendly_name", "text of 1 to 100 characters")
        description = models.validate_description(body.get("description", ""))
        setup = body.get("setup_command")
        if setup is not None and (not isinstance(setup, str) or len(setup) > 10_000):
            raise ValidationError("setup_command", "a shell command of at most 10000 characters")
        is_default = body.get("is_default", False)
        if not isinstance(is_default, bool):
            raise ValidationError("is_default", "true or false")
        await self.store.put_image(name, friendly, description, setup, is_default)
        await self.store.audit(user, "put_image", name, {})
        return render_json(request, {"images": await self.store.list_images()})

    @app.route("/api/v1/images", methods=["DELETE"])
    @admin_only
    async def delete_image(self, request: IRequest, user: User) -> bytes:
        """Take ?name= out of the catalogue (409 while it is the default or in use)."""
        name = query(request, "delete", "/api/v1/images")["name"]
        try:
            await self.store.delete_image(name)
        except NotFound:
            raise not_found("no such image in the catalogue") from None
        await self.store.audit(user, "delete_image", name, {})
        return render_json(request, {"images": await self.store.list_images()})

    @app.route("/api/v1/database-hosts/<int(max=2147483647):host_id>", methods=["DELETE"])
    @admin_only
    async def delete_database_host(self, request: IRequest, user: User, host_id: int) -> bytes:
        try:
            host = await self.store.delete_database_host(host_id)
        except NotFound:
            raise not_found("no such database host") from None
        await self.store.audit(
            user,
            "delete_database_host",
            f"{host['kind']}://{host['admin_host']}:{host['admin_port']}",
            {},
        )
        return render_json(request, {"deleted": host_id})

    @app.route("/api/v1/database-hosts", methods=["GET"])
    @admin_only
    async def list_database_hosts(self, request: IRequest, user: User) -> bytes:
        hosts = await self.store.list_database_hosts()
        for host in hosts:
            host["admin_password"] = None
        return render_json(request, {"hosts": hosts})

    @app.route("/api/v1/database-hosts", methods=["PUT"])
    @admin_only
    async def put_database_host(self, request: IRequest, user: User) -> bytes:
        host = DatabaseHost.from_json(
            read_object(request, set(DATABASE_HOST_FIELDS)), sockets=False
        )
        host_id = await self.store.put_database_host(
            host.kind,
            host.admin_host,
            host.admin_port,
            host.admin_user,
            host.admin_password,
            host.container_host,
            host.container_port,
        )
        await self.store.audit(user, "put_database_host", f"{host.kind}:{host.admin_host}", {})
        return render_json(request, {"id": host_id})

    @app.route("/api/v1/audit", methods=["GET"])
    @admin_only
    async def audit(self, request: IRequest, user: User) -> bytes:
        return render_json(request, {"entries": await self.store.list_audit()})

    async def _notify_request(self, req: dict[str, Any], status: str) -> None:
        name = req["name"]
        if status == "pending-admin":
            self.mailer.notify(
                await _emails(self.store, None, "admin"),
                f"Site request approved: {name}",
                f"{req['teacher']} approved {req['requester']}'s request for '{name}'. Create "
                "it with one click on the Requests page of Director.",
            )
        else:
            words = {"created": "was created", "rejected": "was not approved"}[status]
            self.mailer.notify(
                await _emails(self.store, {req["requester"]}),
                f"Your site request: {name}",
                f"Your request for the site '{name}' {words}.",
            )

    # -- site requests ---------------------------------------------------------------------------

    @app.route("/api/v1/requests", methods=["GET"])
    @authenticated()
    async def list_requests(self, request: IRequest, user: User) -> bytes:
        requests_ = await self.store.list_requests(None if user.is_admin else user.id)
        if not user.is_admin:
            for item in requests_:
                del item["admin_comment"]
        return render_json(request, {"requests": requests_})

    @app.route("/api/v1/requests/<int(max=2147483647):request_id>", methods=["PATCH"])
    @admin_only
    async def comment_request(self, request: IRequest, user: User, request_id: int) -> bytes:
        """Administrators' comments on a request: public (its student and teacher see it)."""
        body = read_object(request, {"public_comment", "admin_comment"})
        values = {k: models.validate_description(v) for k, v in body.items()}
        if not values:
            raise APIError(400, "nothing_to_change", "send public_comment or admin_comment")
        if not await self.store.set_request_comments(request_id, values):
            raise not_found("no such request")
        await self.store.audit(user, "comment_request", str(request_id), {})
        found = [r for r in await self.store.list_requests() if r["id"] == request_id]
        return render_json(request, found[0])

    @app.route("/api/v1/requests", methods=["POST"])
    @authenticated()
    async def create_request(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"name", "activity", "description", "teacher", "agreement"})
        name = models.validate_site_name(body.get("name"))
        self._check_name_and_agreement(user, name, "activity", body.get("agreement"))
        activity = body.get("activity")
        if not isinstance(activity, str) or not 1 <= len(activity) <= 200:
            raise ValidationError("activity", "the club or activity, 1 to 200 characters")
        teacher_name = body.get("teacher")
        if not isinstance(teacher_name, str) or not models.USERNAME.fullmatch(teacher_name):
            raise ValidationError("teacher", "the username of a teacher who sponsors the site")
        teacher = await self.store.get_user(teacher_name)
        if teacher is None or not teacher.is_teacher:
            raise Conflict("unknown_teacher", f"{teacher_name} is not a teacher's username")
        request_id = await self.store.create_request(
            user.id,
            teacher.id,
            name,
            activity,
            models.validate_description(body.get("description", "")),
        )
        await self.store.audit(user, "request_site", name, {"teacher": teacher.username})
        self.mailer.notify(
            [teacher.email],
            f"Site request: {name}",
            f"{user.username} asks for an activity site '{name}' for {activity}, naming you as "
            "the sponsoring teacher. Approve or reject it on the Requests page of Director.",
        )
        return render_json(request, {"id": request_id, "status": "pending-teacher"}, 201)

    @app.route("/api/v1/requests/<int(max=2147483647):request_id>/<action>", methods=["POST"])
    @authenticated()
    async def act_on_request(
        self, request: IRequest, user: User, request_id: int, action: str
    ) -> bytes:
        found = [r for r in await self.store.list_requests() if r["id"] == request_id]
        if not found:
            raise not_found("no such request")
        req = found[0]
        if action in ("approve", "reject") and req["status"] == "pending-teacher":
            if req["teacher"] != user.username and not user.is_admin:
                raise not_found("no such request")
            status = "pending-admin" if action == "approve" else "rejected"
            await self.store.set_request_status(request_id, status)
            await self.store.audit(user, f"request_{action}", req["name"], {"id": request_id})
            await self._notify_request(req, status)
            return render_json(request, {"id": request_id, "status": status})
        if action == "create" and req["status"] == "pending-admin":
            self.require_admin(user)
            site, op = await self.store.create_site(
                {
                    "name": req["name"],
                    "type": "static",
                    "purpose": "activity",
                    "availability": "enabled",
                    "description": req["description"],
                    "image": await self.store.default_image() or FALLBACK_IMAGE,
                    "packages": [],
                    "limits": dict(models.DEFAULT_LIMITS),
                },
                [req["requester"], req["teacher"]],
                ("create_site", OPERATIONS["create_site"]),
                user.id,
            )
            await self.store.set_request_status(request_id, "created", site.id)
            await self._notify_request(req, "created")
            await self.store.audit(user, "create_site_from_request", site.name, {"id": request_id})
            self.engine.wake()
            return render_json(
                request, {"site": self.site_json(site, user), "operation": op.to_json()}, 202
            )
        if action == "reject" and req["status"] == "pending-admin" and user.is_admin:
            await self.store.set_request_status(request_id, "rejected")
            await self._notify_request(req, "rejected")
            return render_json(request, {"id": request_id, "status": "rejected"})
        raise APIError(409, "bad_state", f"cannot {action} a request that is {req['status']}")


async def _emails(store: Store, usernames: set[str] | None, role: str | None = None) -> list[str]:
    return [
        u.email
        for u in await store.list_users()
        if u.email
        and u.is_active
        and (usernames is None or u.username in usernames)
        and (role is None or u.role == role)
    ]


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


def _database_login(db: Any, host: dict[str, Any]) -> DatabaseSpec:
    return DatabaseSpec(DatabaseHost.from_record(host), db.name, db.username, db.password)


_whole = models.whole_number


def _text(body: dict[str, Any], key: str, longest: int) -> str:
    """An optional text field of C{body} ("" when absent), at most C{longest} characters."""
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > longest:
        raise ValidationError(key, f"text of at most {longest} characters")
    return value


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in values.items()
        if isinstance(v, str | int | float | bool | list | dict | None)
    }
