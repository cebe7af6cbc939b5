"""
What every dashboard page stands on (L{DashboardBase}): the one Klein app that every layer
of pages adds its routes to, the viewer and rendering, the error pages, static files, and the
small helpers and names the templates use.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from director.clients import RouterClient
from director.contract.sites import MAX_SITE_NAME_LENGTH, SITE_NAME_PATTERN
from director.contract.urls import PURPOSES, UrlFormats
from director.manager.access import Access, SignedIn
from director.manager.dashboard.assets import StaticFiles
from director.manager.dashboard.guide import Guide
from director.manager.dashboard.metrics import Metrics
from director.manager.dashboard.oidc import OIDCProvider
from director.manager.dashboard.queries import DashboardQueries
from director.manager.dashboard.security import (
    LoginThrottle,
    Origin,
    Proxies,
    SignInThrottle,
    new_nonce,
    set_security_headers,
)
from director.manager.models import (
    SITE_NAME,
    Site,
    User,
)
from director.manager.passwords import Passwords
from director.manager.placement_store import PlacementStore
from director.manager.router_pool import RouterPool
from director.manager.store import Store
from director.manager.store.rows import Banner

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SITES_PER_PAGE = 30  # as the original Director
# Operation types a member may retry after a failure they can fix themselves.
USER_RECOVERABLE = ("set_image", "create_database", "restart", "set_domains")

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


#: The dashboard's one Klein app: every layer of pages (L{SignInPages}, L{AdminPages},
#: L{Dashboard}) adds its routes to it.
app = Klein()


class DashboardBase:
    """
    What every page stands on: the collaborators, the signed-in viewer, rendering, the error
    pages and the static files. The pages are in layers above it (L{Dashboard}).
    """

    app = app
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
        login_throttle: SignInThrottle | None = None,
        oidc: OIDCProvider | None = None,
        proxies: Proxies | None = None,
        reauth: timedelta = timedelta(minutes=10),
        shell_address: tuple[str, int] = ("director.localhost", 2322),
        student_agreement: str = "",
        placements: PlacementStore | None = None,
        public_origins: Sequence[Origin] = (),
        url_formats: UrlFormats | None = None,
    ) -> None:
        self._reactor = reactor
        #: the dashboard host's origins (through the routers), besides manager_url's
        self.public_origins = tuple(public_origins)
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
        #: each purpose's URL format (director.url_formats)
        self.url_formats = url_formats or UrlFormats(sites_domain)
        self.session_lifetime = session_lifetime
        self.sites_port = sites_port
        self.router = router
        self._authenticate = authenticate
        self.static = StaticFiles(static_dir)
        self.login_throttle: SignInThrottle = login_throttle or LoginThrottle(reactor)
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
        self.env.globals["url_example"] = self.url_example
        self.env.globals["url_previews"] = self.url_previews
        # The site-name rule of the contract, for the forms' pattern and maxlength.
        self.env.globals["site_name_pattern"] = SITE_NAME_PATTERN
        self.env.globals["site_name_length"] = MAX_SITE_NAME_LENGTH
        self.env.globals["oidc_name"] = oidc.settings.name if oidc else ""

    # -- plumbing ----------------------------------------------------------------------------------

    def asset(self, name: str) -> str:
        """The URL of a built asset with a content hash, so browsers may cache it for long."""
        return f"/static/build/{name}?v={self.static.version('build/' + name)}"

    def site_url(self, site: Site) -> str:
        """The site's URL by its purpose's format, on the routers' HTTP port."""
        return site.url(self.url_formats, port=self.sites_port)

    def url_example(self, purpose: str, name: str = "NAME") -> str:
        """What a site of C{purpose} named C{name} is reached at, for forms' help."""
        return self.url_formats.url(name, purpose, port=self.sites_port)

    def url_previews(self) -> dict[str, list[str]]:
        """Each purpose's URL around the name (before, after), for the new-site preview."""
        return {p: self.url_example(p, "\0").split("\0") for p in PURPOSES}

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
        set_security_headers(request, self.origin, nonce, self.public_origins)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        badge = 0
        if viewer is not None and (viewer.user.is_teacher):
            try:
                badge = await self.queries.pending_requests(viewer.user.id, viewer.user.is_admin)
            except Exception:
                self.log.failure("counting pending requests")
        banners: list[Banner] = []
        if viewer is not None:
            try:
                banners = await self.store.banners(self.store.now())
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
        set_security_headers(request, self.origin, None, self.public_origins)
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
        set_security_headers(request, self.origin, None, self.public_origins)
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


def _arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        text = str(values[0].decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text  # PostgreSQL's text cannot hold a NUL
