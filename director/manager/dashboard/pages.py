"""
The web dashboard: server-rendered pages (Jinja2 with autoescaping) whose structure comes
from the store, and small scripts that act through the REST API with the session cookie and
the CSRF token the page carries. Sign-in, sign-out and accepting the guidelines are plain
forms handled here, because they create or change the session itself.

Pages only read; every change a page offers goes through /api/v1, so the API's checks
(validation, membership, rate limits, one operation at a time) are the only ones there are.

The pages are built in layers: L{page_base} (plumbing, errors, static files),
L{sign_in_pages}, L{admin_pages}, and here the sites, requests, account, guide and metrics.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from director.manager import catalogue
from director.manager.dashboard.admin_pages import AdminPages
from director.manager.dashboard.page_base import (
    SITES_PER_PAGE,
    USER_RECOVERABLE,
    Redirect,
    _arg,
    app,
    not_found,
    personal_site_name,
)
from director.manager.dashboard.security import (
    set_security_headers,
)
from director.manager.models import (
    Operation,
    Orchestrator,
    Site,
    parse_query,
    ssh_access,
)


class Dashboard(AdminPages):
    """Every dashboard page; mounted by the manager for paths no other part claims."""

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
        images = [
            catalogue.entry_json(i)
            for i in await self.store.list_images()
            if catalogue.visible_to(viewer.user, i) or i.name == site.image
        ]
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
            run_sh={i["name"]: i["run_template"] for i in images},
            failed_image=failed_image,
            certificates=certificates,
        )

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
        kinds = sorted({h.kind for h in hosts})
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
        mine = [r for r in everything if r.requester == user.username]
        to_approve = [
            r for r in everything if r.teacher == user.username and r.status == "pending-teacher"
        ]
        to_create = [r for r in everything if r.status == "pending-admin"] if user.is_admin else []
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
        set_security_headers(request, self.origin, None, self.public_origins)
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return (await self.metrics.render()).encode("utf-8")

    # -- anything else -----------------------------------------------------------------------------

    @app.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
    async def unknown(self, request: Any, rest: str) -> bytes:
        await self.viewer(request)
        raise not_found()
