"""
The web dashboard: server-rendered pages (Jinja2 with autoescaping) whose structure comes
from the store, and small scripts that act through the REST API with the session cookie and
the CSRF token the page carries. Sign-in, sign-out and accepting the guidelines are plain
forms handled here, because they create or change the session itself.

Pages only read; every change a page offers goes through /api/v1, so the API's checks
(validation, membership, rate limits, one operation at a time) are the only ones there are.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from director.clients import RouterClient
from director.contract.sites import MAX_SITE_NAME_LENGTH, SITE_NAME_PATTERN
from director.manager.access import Access, SignedIn
from director.manager.dashboard.assets import StaticFiles
from director.manager.dashboard.guide import Guide
from director.manager.dashboard.metrics import Metrics
from director.manager.dashboard.oidc import Attempt, OIDCError, OIDCProvider
from director.manager.dashboard.queries import DashboardQueries
from director.manager.dashboard.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    Origin,
    Proxies,
    get_cookie,
    new_nonce,
    safe_next,
    set_cookie,
    set_security_headers,
    tokens_match,
)
from director.manager.models import (
    SITE_NAME,
    Operation,
    Orchestrator,
    Site,
    User,
    parse_query,
    ssh_access,
)
from director.manager.passwords import Passwords
from director.manager.placement_store import PlacementStore
from director.manager.router_pool import RouterPool
from director.manager.store import Conflict, Store

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SITES_PER_PAGE = 30  # as the original Director
# Operation types a member may retry after a failure they can fix themselves.
USER_RECOVERABLE = ("set_image", "create_database", "restart", "set_domains")
# run.sh templates offered on the settings page, by image name prefix.
RUN_SH_TEMPLATES = {
    "director/python": (
        "#!/bin/sh\n"
        "# Serves public/ with Python's built-in server; replace with your app's command.\n"
        'exec python3 -m http.server "$PORT" --bind "$HOST" --directory public\n'
    ),
    "": (
        "#!/bin/sh\n"
        "# Start your server here. It must listen on $PORT and bind to $HOST.\n"
        'echo "run.sh: nothing to run yet (edit run.sh)"\n'
        "exec sleep infinity\n"
    ),
}


# People-readable names of operations and their steps (the scripts use the same words).
STEP_NAMES = {
    "apply_orchestrator": "Set up files, web server and container",
    "apply_router": "Publish the site's addresses",
    "remove_old_router_name": "Retire the old address",
    "restart_process": "Restart the process",
    "build_image": "Build the image",
    "create_database": "Create the database",
    "drop_database": "Delete the database",
    "set_database_password": "Set a new database password",
    "remove_router": "Unpublish the addresses",
    "remove_orchestrator": "Remove container, files and configuration",
    "delete_records": "Forget the site",
    "prepare_target": "Prepare the site on the new server",
    "copy_files": "Copy the files",
    "final_sync": "Copy what changed meanwhile",
    "start_on_target": "Start the site on the new server",
    "switch_orchestrator": "Record the new server",
    "remove_from_source": "Remove the site from the old server",
}
OPERATION_NAMES = {
    "create_site": "Creating the site",
    "update_site": "Applying changes",
    "rename_site": "Renaming the site",
    "set_domains": "Updating custom domains",
    "restart": "Restarting",
    "deploy": "Deploying (git push)",
    "set_image": "Changing the image",
    "create_database": "Adding a database",
    "delete_database": "Deleting the database",
    "regenerate_secrets": "Regenerating secrets",
    "delete_site": "Deleting the site",
    "repair": "Rewriting the configuration",
    "move_site": "Moving to another server",
}


OIDC_COOKIE = b"director_oidc"


class Redirect(Exception):
    """Send the browser elsewhere (303, so a POST becomes a GET)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class PageError(Exception):
    """A page that cannot be shown: rendered as an error page with C{status}."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def not_found() -> PageError:
    return PageError(404, "Not found", "There is no such page, or you may not see it.")


#: The signed-in user of a request, with the session's CSRF token.
Viewer = SignedIn


def personal_site_name(username: str) -> str | None:
    """The personal site's name for C{username} (dots and underscores become dashes)."""
    name = re.sub(r"[^a-z0-9-]", "-", username.lower()).strip("-")[:32].strip("-")
    return name if SITE_NAME.fullmatch(name) else None


def _size(value: Any) -> str:
    """Bytes for a person: 512 kB, 3.4 MB, 1.2 GB ("not measured yet" for None)."""
    if not isinstance(value, int):
        return "not measured yet"
    if value >= 1024**3:
        return f"{value / 1024**3:.1f} GB"
    if value >= 1024**2:
        return f"{value / 1024**2:.1f} MB"
    return f"{value / 1024:.0f} kB"


def _when(value: Any) -> str:
    """A datetime (or ISO string) as a short UTC time for people."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return str(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"))


class Dashboard:
    """Every dashboard page; mounted by the manager for paths no other part claims."""

    app = Klein()
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        passwords: Passwords,
        queries: DashboardQueries,
        guide: Guide,
        metrics: Metrics,
        *,
        manager_url: str,
        sites_domain: str,
        session_lifetime: timedelta,
        sites_port: int = 80,
        router: RouterClient | RouterPool | None = None,
        authenticate: Callable[[Any], Awaitable[User]] | None = None,
        static_dir: Path = STATIC,
        login_throttle: LoginThrottle | None = None,
        oidc: OIDCProvider | None = None,
        proxies: Proxies | None = None,
        reauth: timedelta = timedelta(minutes=10),
        shell_address: tuple[str, int] = ("director.localhost", 2322),
        student_agreement: str = "",
        placements: PlacementStore | None = None,
    ) -> None:
        self._reactor = reactor
        #: the orchestrators, for the admins' "move" form (None: not offered)
        self.placements = placements
        self.shell_address = shell_address
        self.student_agreement = student_agreement
        self.store = store
        self.passwords = passwords
        self.queries = queries
        self.guide = guide
        self.metrics = metrics
        self.origin = Origin.from_url(manager_url)
        self.proxies = proxies or Proxies(https_url=self.origin.secure)
        self.access = Access(store, self.proxies)
        self.reauth = reauth
        self.sites_domain = sites_domain
        self.session_lifetime = session_lifetime
        self.sites_port = sites_port
        self.router = router
        self._authenticate = authenticate
        self.static = StaticFiles(static_dir)
        self.login_throttle = login_throttle or LoginThrottle(reactor)
        self.oidc = oidc
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["size"] = _size
        self.env.filters["step"] = lambda n: STEP_NAMES.get(n, n.replace("_", " "))
        self.env.filters["optype"] = lambda n: OPERATION_NAMES.get(n, n.replace("_", " "))
        self.env.globals["asset"] = self.asset
        # The site-name rule of the contract, for the forms' pattern and maxlength.
        self.env.globals["site_name_pattern"] = SITE_NAME_PATTERN
        self.env.globals["site_name_length"] = MAX_SITE_NAME_LENGTH
        self.env.globals["oidc_name"] = oidc.settings.name if oidc else ""

    # -- plumbing ----------------------------------------------------------------------------------

    def asset(self, name: str) -> str:
        """The URL of a built asset with a content hash, so browsers may cache it for long."""
        return f"/static/build/{name}?v={self.static.version('build/' + name)}"

    def site_url(self, site: Site) -> str:
        port = "" if self.sites_port == 80 else f":{self.sites_port}"
        return f"http://{site.name}.{self.sites_domain}{port}/"

    async def viewer(self, request: Any) -> Viewer | None:
        """The signed-in user of C{request}, if its session cookie is valid."""
        cached = getattr(request, "dashboard_viewer", None)
        if cached is not None:
            return cached
        viewer = await self.access.signed_in(request)
        if viewer is None:
            return None
        request.dashboard_viewer = viewer
        return viewer

    async def require(self, request: Any, guidelines: bool = True) -> Viewer:
        """The viewer, or a redirect to sign in (or to accept the guidelines first)."""
        viewer = await self.viewer(request)
        if viewer is None:
            raise Redirect("/login?" + urlencode({"next": request.uri.decode("latin-1")}))
        if guidelines and not viewer.user.accepted_guidelines:
            raise Redirect("/guidelines?" + urlencode({"next": request.uri.decode("latin-1")}))
        return viewer

    def require_admin(self, viewer: Viewer) -> None:
        if not viewer.user.is_admin:
            raise not_found()

    async def site_for(self, viewer: Viewer, name: str) -> Site:
        """The site if the viewer is a member or an admin; 404 otherwise (never 403)."""
        site = await self.access.site(viewer.user, name)
        if site is None:
            raise not_found()
        return site

    async def render(self, request: Any, template: str, status: int = 200, **context: Any) -> bytes:
        viewer: Viewer | None = getattr(request, "dashboard_viewer", None)
        nonce = new_nonce()
        set_security_headers(request, self.origin, nonce)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        badge = 0
        if viewer is not None and (viewer.user.is_teacher):
            try:
                badge = await self.queries.pending_requests(viewer.user.id, viewer.user.is_admin)
            except Exception:
                self.log.failure("counting pending requests")
        banners: list[dict[str, Any]] = []
        if viewer is not None:
            try:
                banners = await self.store.banners(datetime.now(UTC))
            except Exception:
                self.log.failure("reading banners")
        context.setdefault("section", "")
        html = self.env.get_template(template).render(
            banners=banners,
            viewer=viewer,
            user=viewer.user if viewer else None,
            csrf=viewer.csrf if viewer else "",
            nonce=nonce,
            pending_requests=badge,
            sites_domain=self.sites_domain,
            student_agreement=self.student_agreement,
            **context,
        )
        return html.encode("utf-8")

    # -- errors ------------------------------------------------------------------------------------

    @app.handle_errors(Redirect)
    def _redirect(self, request: Any, failure: Any) -> bytes:
        set_security_headers(request, self.origin, None)
        request.setResponseCode(303)
        request.setHeader(b"location", failure.value.location.encode("utf-8"))
        request.setHeader(b"cache-control", b"no-store")
        return b""

    @app.handle_errors(PageError)
    async def _page_error(self, request: Any, failure: Any) -> bytes:
        e = failure.value
        return await self.render(request, "error.html", e.status, title=e.title, message=e.message)

    # -- static files ------------------------------------------------------------------------------

    @app.route("/static/<path:relative>", methods=["GET", "HEAD"])
    def static_file(self, request: Any, relative: str) -> bytes:
        asset = self.static.get(relative)
        if asset is None:
            raise not_found()
        set_security_headers(request, self.origin, None)
        etag = f'"{asset.etag}"'.encode()
        request.setHeader(b"etag", etag)
        request.setHeader(b"content-type", asset.content_type.encode())
        # Versioned URLs (?v=hash) never change; chunks have a hash in their names.
        versioned = bool(request.args.get(b"v")) or relative.startswith("build/chunks/")
        request.setHeader(
            b"cache-control",
            b"public, max-age=31536000, immutable" if versioned else b"public, max-age=300",
        )
        if request.getHeader(b"if-none-match") == etag:
            request.setResponseCode(304)
            return b""
        return asset.body

    @app.route("/favicon.ico", methods=["GET"])
    def favicon(self, request: Any) -> None:
        raise Redirect("/static/favicon.svg")

    # -- sign-in -----------------------------------------------------------------------------------

    def _cookie(
        self, request: Any, name: bytes, value: str, max_age: int, same_site: str = "Lax"
    ) -> None:
        set_cookie(request, name, value, self.origin, max_age, same_site, self.proxies)

    def _login_token(self, request: Any) -> str:
        token = new_nonce()
        self._cookie(request, LOGIN_CSRF_COOKIE, token, 3600, same_site="Strict")
        return token

    @app.route("/login", methods=["GET"])
    async def login_form(self, request: Any) -> bytes:
        if await self.viewer(request) is not None:
            raise Redirect("/")
        next_url = safe_next(_arg(request, "next"))
        return await self.render(
            request,
            "login.html",
            title="Sign in",
            login_csrf=self._login_token(request),
            next=next_url,
            username="",
            error="",
        )

    @app.route("/login", methods=["POST"])
    async def login(self, request: Any) -> bytes:
        username = (_arg(request, "username") or "").strip().lower()[:64]
        password = _arg(request, "password") or ""
        next_url = safe_next(_arg(request, "next"))
        sent = _arg(request, "csrf")
        expected = get_cookie(request, LOGIN_CSRF_COOKIE, self.proxies)

        async def again(status: int, error: str) -> bytes:
            return await self.render(
                request,
                "login.html",
                status,
                title="Sign in",
                login_csrf=self._login_token(request),
                next=next_url,
                username=username,
                error=error,
            )

        if not tokens_match(sent, expected.decode("latin-1") if expected else None):
            return await again(
                400, "Your sign-in form expired (or cookies are off). Please try again."
            )
        if not username or not password:
            return await again(400, "Enter your username and password.")
        address = self.proxies.client(request)
        if self.login_throttle.blocked(username, address):
            return await again(429, "Too many failed attempts. Wait a few minutes and try again.")
        found = await self.store.password_hash(username)
        # A missing account is checked against a dummy hash: it takes as long as a real one.
        ok = await self.passwords.check(password, found[1] if found else None)
        if not ok or found is None:
            self.login_throttle.failed(username, address)
            return await again(401, "Wrong username or password.")
        user = found[0]
        self.login_throttle.succeeded(username, address)
        if not user.is_active:
            return await again(403, "This account is deactivated. Ask an administrator.")
        self._cookie(request, LOGIN_CSRF_COOKIE, "", 0, same_site="Strict")
        return await self._sign_in(request, user, next_url, "password")

    async def _sign_in(self, request: Any, user: User, next_url: str, how: str) -> bytes:
        """Start a session for C{user} and send the browser on."""
        session_id, _ = await self.store.create_session(user.id, self.session_lifetime)
        self._cookie(
            request, SESSION_COOKIE, session_id, int(self.session_lifetime.total_seconds())
        )
        address = self.proxies.client(request)
        await self.store.audit(user, "sign_in", user.username, {"address": address, "via": how})
        if not user.accepted_guidelines:
            raise Redirect("/guidelines?" + urlencode({"next": next_url}))
        raise Redirect(next_url)

    @app.route("/login/oidc", methods=["GET"])
    async def login_oidc(self, request: Any) -> bytes:
        """
        Send the browser to the school's sign-in service: to sign in, or (C{?link=1}, from
        the account page, signed in recently) to link that identity to this account.
        """
        if self.oidc is None:
            raise not_found()
        link = _arg(request, "link") == "1"
        if link:
            viewer = await self.require(request, guidelines=False)
            if not await self._recently_signed_in(viewer):
                raise PageError(
                    403,
                    "Sign in again",
                    "Linking a sign-in needs a recent sign-in: sign out, sign in, and try again.",
                )
        attempt = Attempt.new(link)
        self._cookie(request, OIDC_COOKIE, attempt.cookie(), 600, same_site="Lax")
        raise Redirect(self.oidc.authorization_url(attempt))

    async def _recently_signed_in(self, viewer: Viewer) -> bool:
        started = await self.store.session_started(viewer.session_id)
        return started is not None and datetime.now(UTC) - started <= self.reauth

    @app.route("/login/oidc/callback", methods=["GET"])
    async def login_oidc_callback(self, request: Any) -> bytes:
        """
        The sign-in service sent the browser back: sign into the account linked to the
        identity, link it (when asked from the account page), or create a new account.
        """
        if self.oidc is None:
            raise not_found()
        cookie = get_cookie(request, OIDC_COOKIE, self.proxies)
        attempt = Attempt.from_cookie(cookie.decode("latin-1") if cookie else None)
        self._cookie(request, OIDC_COOKIE, "", 0, same_site="Lax")
        if attempt is None:
            raise PageError(400, "Sign-in expired", "Start signing in again.")
        try:
            identity = await self.oidc.identify(
                attempt, _arg(request, "state"), _arg(request, "code")
            )
        except OIDCError as e:
            raise PageError(400, "Could not sign in", str(e)) from None
        except Exception:
            self.log.failure("signing in through the provider")
            raise PageError(
                502, "Could not sign in", "The school's sign-in service did not answer; try again."
            ) from None
        if attempt.link:
            return await self._link_identity(request, identity)
        user = await self.store.oidc_user(identity.issuer, identity.subject)
        if user is None:
            settings = self.oidc.settings
            if not settings.new_user_role:
                raise PageError(
                    403,
                    "No account",
                    "No Director account is linked to this sign-in. Sign in with your "
                    "password and link it on your account page, or ask an administrator.",
                )
            refusal = identity.may_get_account(settings.allowed_domains)
            if refusal is not None:
                raise PageError(403, "No account", f"Cannot create an account: {refusal}.")
            user = await self.store.create_oidc_user(
                list(identity.names),
                settings.new_user_role,
                identity.email,
                identity.full_name,
                identity.issuer,
                identity.subject,
            )
            await self.store.audit(
                user, "create_user", user.username, {"role": user.role, "via": "oidc"}
            )
        if not user.is_active:
            raise PageError(403, "Account deactivated", "Ask an administrator.")
        return await self._sign_in(request, user, "/", "oidc")

    async def _link_identity(self, request: Any, identity: Any) -> bytes:
        viewer = await self.require(request, guidelines=False)
        if not await self._recently_signed_in(viewer):
            raise PageError(403, "Sign in again", "Linking a sign-in needs a recent sign-in.")
        try:
            await self.store.link_oidc(viewer.user.id, identity.issuer, identity.subject)
        except Conflict:
            raise PageError(
                409, "Already linked", "This sign-in is already linked to another account."
            ) from None
        await self.store.audit(
            viewer.user, "link_oidc", viewer.user.username, {"issuer": identity.issuer}
        )
        raise Redirect("/account")

    @app.route("/logout", methods=["POST"])
    async def logout(self, request: Any) -> bytes:
        viewer = await self.viewer(request)
        if viewer is not None:
            if not tokens_match(_arg(request, "csrf"), viewer.csrf):
                raise PageError(403, "Expired form", "Reload the page and sign out again.")
            await self.store.delete_session(viewer.session_id)
        self._cookie(request, SESSION_COOKIE, "", 0)
        raise Redirect("/login")

    @app.route("/guidelines", methods=["GET"])
    async def guidelines(self, request: Any) -> bytes:
        viewer = await self.require(request, guidelines=False)
        page = self.guide.page("guidelines")
        return await self.render(
            request,
            "guidelines.html",
            title="Guidelines",
            page=page,
            accepted=viewer.user.accepted_guidelines,
            next=safe_next(_arg(request, "next")),
            error="",
        )

    @app.route("/guidelines", methods=["POST"])
    async def accept_guidelines(self, request: Any) -> bytes:
        viewer = await self.require(request, guidelines=False)
        if not tokens_match(_arg(request, "csrf"), viewer.csrf):
            raise PageError(403, "Expired form", "Reload the page and try again.")
        next_url = safe_next(_arg(request, "next"))
        if _arg(request, "accept") != "yes":
            return await self.render(
                request,
                "guidelines.html",
                400,
                title="Guidelines",
                page=self.guide.page("guidelines"),
                accepted=False,
                next=next_url,
                error="Tick the box to accept the guidelines.",
            )
        await self.store.update_user(viewer.user.username, accepted_guidelines=True)
        await self.store.audit(viewer.user, "accept_guidelines", viewer.user.username, {})
        raise Redirect(next_url)

    # -- sites -------------------------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    async def index(self, request: Any) -> bytes:
        viewer = await self.require(request)
        user = viewer.user
        q = (_arg(request, "q") or "").strip()[:200]
        search = parse_query(q)
        show_all = user.is_admin and _arg(request, "all") == "1"
        raw_page = _arg(request, "page") or "1"
        page = int(raw_page) if raw_page.isdigit() and 0 < int(raw_page) < 100_000 else 1
        offset = (page - 1) * SITES_PER_PAGE
        # One more than a page tells whether there is a next one.
        member = None if show_all else user.username
        sites = await self.store.list_sites(member, search, SITES_PER_PAGE + 1, offset)
        everyone = show_all
        if not sites and page == 1 and q and user.is_admin and not show_all:
            # An admin's search that matches none of their own sites looks at every site.
            sites = await self.store.list_sites(None, search, SITES_PER_PAGE + 1, offset)
            everyone = True
        has_next, sites = len(sites) > SITES_PER_PAGE, sites[:SITES_PER_PAGE]
        personal = personal_site_name(user.username)
        mine = sites if not everyone and page == 1 and not q and not has_next else None
        if mine is None:
            mine = await self.store.list_sites(user.username, None, 1000)
        has_personal = any(s.purpose == "personal" or s.name == personal for s in mine)
        return await self.render(
            request,
            "sites.html",
            title="Sites",
            section="sites",
            q=q,
            sites=sites,
            everyone=everyone,
            show_all=show_all,
            page=page,
            has_next=has_next,
            page_url=lambda n: (
                "/?"
                + urlencode(
                    {
                        k: v
                        for k, v in (("q", q), ("all", "1" if show_all else ""), ("page", n))
                        if v
                    }
                )
            ),
            personal_name=personal if not has_personal else None,
            site_url=self.site_url,
        )

    @app.route("/sites/new", methods=["GET"])
    async def new_site(self, request: Any) -> bytes:
        viewer = await self.require(request)
        return await self.render(
            request,
            "site_new.html",
            title="New site",
            section="sites",
            personal_name=personal_site_name(viewer.user.username),
            want_personal=_arg(request, "personal") == "1",
        )

    async def _operations(self, site: Site, limit: int = 5) -> list[Operation]:
        return await self.store.list_operations(site.id, limit=limit)

    @app.route("/sites/<name>", methods=["GET"])
    async def site_page(self, request: Any, name: str) -> bytes:
        viewer = await self.require(request)
        site = await self.site_for(viewer, name)
        operations = await self._operations(site)
        active = next((o for o in operations if o.status in ("pending", "running")), None)
        failed = operations[0] if operations and operations[0].status == "failed" else None
        return await self.render(
            request,
            "site.html",
            title=site.name,
            section="sites",
            site=site,
            url=self.site_url(site),
            ssh_host=self.shell_address[0],
            ssh_port=self.shell_address[1],
            ssh_user=f"{viewer.user.username}/{site.name}",
            ssh=ssh_access(site.name, viewer.user.username, *self.shell_address),
            active=active,
            failed=failed,
            recoverable=failed is not None
            and (viewer.user.is_admin or failed.type in USER_RECOVERABLE),
            operations=operations,
        )

    @app.route("/sites/<name>/settings", methods=["GET"])
    async def site_settings(self, request: Any, name: str) -> bytes:
        viewer = await self.require(request)
        site = await self.site_for(viewer, name)
        images = await self.store.list_images()
        operations = await self._operations(site, 3)
        failed_image = next(
            (o for o in operations[:1] if o.status == "failed" and o.type == "set_image"), None
        )
        certificates = await self._certificates(site)
        orchestrators: list[Orchestrator] = []
        if viewer.user.is_admin and self.placements is not None:
            orchestrators = await self.placements.list()
        return await self.render(
            request,
            "site_settings.html",
            orchestrators=orchestrators,
            title=f"{site.name}: settings",
            section="sites",
            site=site,
            images=images,
            run_sh=self._run_sh_templates(images),
            failed_image=failed_image,
            certificates=certificates,
        )

    def _run_sh_templates(self, images: list[dict[str, Any]]) -> dict[str, str]:
        out = {}
        for image in images:
            prefix = next((p for p in RUN_SH_TEMPLATES if p and image["name"].startswith(p)), "")
            out[image["name"]] = RUN_SH_TEMPLATES[prefix]
        return out

    async def _certificates(self, site: Site) -> dict[str, dict[str, Any]]:
        """The router's view of the site's custom domains' certificates (empty if unknown)."""
        if not site.domains or self.router is None:
            return {}
        try:
            found = await self.router.get_site(site.name, timeout=5)
        except Exception as e:
            self.log.info("certificate state of {site} unknown: {e}", site=site.name, e=e)
            return {}
        certificates = found.get("certificates") if isinstance(found, dict) else None
        return {k: v for k, v in (certificates or {}).items() if isinstance(v, dict)}

    @app.route("/sites/<name>/files", methods=["GET"])
    async def editor(self, request: Any, name: str) -> bytes:
        viewer = await self.require(request)
        site = await self.site_for(viewer, name)
        return await self.render(
            request,
            "editor.html",
            title=f"{site.name}: editor",
            section="sites",
            site=site,
            url=self.site_url(site),
            wide=True,
        )

    @app.route("/sites/<name>/terminal", methods=["GET"])
    async def terminal(self, request: Any, name: str) -> bytes:
        viewer = await self.require(request)
        site = await self.site_for(viewer, name)
        return await self.render(
            request,
            "terminal.html",
            title=f"{site.name}: terminal",
            section="sites",
            site=site,
        )

    @app.route("/sites/<name>/tasks", methods=["GET"])
    async def tasks(self, request: Any, name: str) -> bytes:
        viewer = await self.require(request)
        site = await self.site_for(viewer, name)
        return await self.render(
            request,
            "tasks.html",
            title=f"{site.name}: scheduled tasks",
            section="sites",
            site=site,
        )

    @app.route("/sites/<name>/database", methods=["GET"])
    async def database(self, request: Any, name: str) -> bytes:
        viewer = await self.require(request)
        site = await self.site_for(viewer, name)
        hosts = await self.store.list_database_hosts()
        kinds = sorted({h["kind"] for h in hosts})
        operations = await self._operations(site, 1)
        return await self.render(
            request,
            "database.html",
            title=f"{site.name}: database",
            section="sites",
            site=site,
            kinds=kinds,
            active=next((o for o in operations if o.status in ("pending", "running")), None),
        )

    # -- requests ----------------------------------------------------------------------------------

    @app.route("/requests", methods=["GET"])
    async def requests_page(self, request: Any) -> bytes:
        viewer = await self.require(request, guidelines=False)
        user = viewer.user
        everything = await self.store.list_requests(None if user.is_admin else user.id)
        mine = [r for r in everything if r["requester"] == user.username]
        to_approve = [
            r
            for r in everything
            if r["teacher"] == user.username and r["status"] == "pending-teacher"
        ]
        to_create = (
            [r for r in everything if r["status"] == "pending-admin"] if user.is_admin else []
        )
        return await self.render(
            request,
            "requests.html",
            title="Site requests",
            section="requests",
            mine=mine,
            to_approve=to_approve,
            to_create=to_create,
            history=everything if user.is_admin else [],
            teachers=await self.queries.teachers(),
        )

    # -- account -----------------------------------------------------------------------------------

    @app.route("/account", methods=["GET"])
    async def account(self, request: Any) -> bytes:
        viewer = await self.require(request)
        keys = await self.store.ssh_keys(viewer.user.id)
        tokens = await self.store.list_tokens(viewer.user.id)
        return await self.render(request, "account.html", title="Account", keys=keys, tokens=tokens)

    # -- admin -------------------------------------------------------------------------------------

    @app.route("/admin", methods=["GET"])
    async def admin_index(self, request: Any) -> bytes:
        self.require_admin(await self.require(request))
        raise Redirect("/admin/operations")

    @app.route("/admin/users", methods=["GET"])
    async def admin_users(self, request: Any) -> bytes:
        self.require_admin(await self.require(request))
        return await self.render(
            request,
            "admin/users.html",
            title="Users",
            section="admin",
            tab="users",
            users=await self.store.list_users(),
        )

    @app.route("/admin/operations", methods=["GET"])
    async def admin_operations(self, request: Any) -> bytes:
        self.require_admin(await self.require(request))
        operations = await self.store.list_operations(failed_first=True, limit=200)
        return await self.render(
            request,
            "admin/operations.html",
            title="Operations",
            section="admin",
            tab="operations",
            operations=operations,
        )

    @app.route("/admin/backups", methods=["GET"])
    async def admin_backups(self, request: Any) -> bytes:
        """The latest backup runs, with why the failed ones failed."""
        self.require_admin(await self.require(request))
        records = getattr(self, "backups", None)
        summary = await records.summary() if records is not None else None
        runs = await records.recent(limit=200) if records is not None else []
        return await self.render(
            request,
            "admin/backups.html",
            title="Backups",
            section="admin",
            tab="backups",
            summary=summary,
            runs=runs,
        )

    @app.route("/admin/images", methods=["GET"])
    async def admin_images(self, request: Any) -> bytes:
        self.require_admin(await self.require(request))
        return await self.render(
            request,
            "admin/images.html",
            title="Images",
            section="admin",
            tab="images",
            images=await self.store.list_images(),
        )

    @app.route("/admin/limits", methods=["GET"])
    async def admin_limits(self, request: Any) -> bytes:
        self.require_admin(await self.require(request))
        return await self.render(
            request,
            "admin/limits.html",
            title="Limits and availability",
            section="admin",
            tab="limits",
            sites=await self.queries.custom_limit_sites(),
        )

    @app.route("/admin/disk", methods=["GET"])
    async def admin_disk(self, request: Any) -> bytes:
        self.require_admin(await self.require(request))
        return await self.render(
            request,
            "admin/disk.html",
            title="Disk usage",
            section="admin",
            tab="disk",
            sites=await self.store.largest_sites(50),
        )

    @app.route("/admin/database-hosts", methods=["GET"])
    async def admin_database_hosts(self, request: Any) -> bytes:
        self.require_admin(await self.require(request))
        hosts = await self.store.list_database_hosts()
        return await self.render(
            request,
            "admin/database_hosts.html",
            title="Database hosts",
            section="admin",
            tab="database-hosts",
            hosts=[{k: v for k, v in h.items() if k != "admin_password"} for h in hosts],
        )

    @app.route("/admin/notices", methods=["GET"])
    async def admin_notices(self, request: Any) -> bytes:
        self.require_admin(await self.require(request))
        return await self.render(
            request,
            "admin/notices.html",
            title="Notices and mail",
            section="admin",
            tab="notices",
            all_banners=await self.store.banners(),
            now=datetime.now(UTC).isoformat(),
        )

    @app.route("/admin/audit", methods=["GET"])
    async def admin_audit(self, request: Any) -> bytes:
        self.require_admin(await self.require(request))
        return await self.render(
            request,
            "admin/audit.html",
            title="Audit log",
            section="admin",
            tab="audit",
            entries=await self.store.list_audit(300),
        )

    # -- docs --------------------------------------------------------------------------------------

    @app.route("/docs", methods=["GET"])
    def docs_slash(self, request: Any) -> None:
        raise Redirect("/docs/")

    @app.route("/docs/", methods=["GET"])
    async def docs_index(self, request: Any) -> bytes:
        return await self._docs_page(request, "index")

    @app.route("/docs/search", methods=["GET"])
    async def docs_search(self, request: Any) -> bytes:
        await self.require(request, guidelines=False)
        q = (_arg(request, "q") or "").strip()[:200]
        return await self.render(
            request,
            "docs_search.html",
            title="Search the guide",
            section="docs",
            q=q,
            hits=self.guide.search(q) if q else [],
            contents=self.guide.contents(),
        )

    @app.route("/docs/<name>", methods=["GET"])
    async def docs_page(self, request: Any, name: str) -> bytes:
        if name.endswith(".md"):
            raise Redirect("/docs/" + quote(name[:-3]))
        return await self._docs_page(request, name)

    async def _docs_page(self, request: Any, name: str) -> bytes:
        await self.require(request, guidelines=False)
        page = self.guide.page(name)
        if page is None:
            raise not_found()
        return await self.render(
            request,
            "docs.html",
            title=page.title,
            section="docs",
            page=page,
            contents=self.guide.contents(),
            q="",
        )

    # -- metrics -----------------------------------------------------------------------------------

    @app.route("/metrics", methods=["GET"])
    async def prometheus(self, request: Any) -> bytes:
        """For administrators: their session, or an administrator's API token (Prometheus)."""
        allowed = False
        viewer = await self.viewer(request)
        if viewer is not None:
            allowed = viewer.user.is_admin
        elif self._authenticate is not None and request.getHeader(b"authorization"):
            try:
                allowed = (await self._authenticate(request)).is_admin
            except Exception:
                allowed = False
        if not allowed:
            raise not_found()
        set_security_headers(request, self.origin, None)
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return (await self.metrics.render()).encode("utf-8")

    # -- anything else -----------------------------------------------------------------------------

    @app.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
    async def unknown(self, request: Any, rest: str) -> bytes:
        await self.viewer(request)
        raise not_found()


def _arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        text = str(values[0].decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text  # PostgreSQL's text cannot hold a NUL
