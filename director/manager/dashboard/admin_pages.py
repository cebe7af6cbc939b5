"""
The administrators' pages (L{AdminPages}): users, operations, backups, images, limits, disk
use, database hosts, custom domains, notices and the audit log. They only read; changes go
through the API.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, gatherResults

from director.manager import catalogue
from director.manager.dashboard.page_base import (
    Redirect,
    app,
)
from director.manager.dashboard.sign_in_pages import SignInPages
from director.manager.models import Site


class AdminPages(SignInPages):
    """Every page under /admin, for administrators only."""

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
            images=[catalogue.entry_json(i) for i in await self.store.list_images()],
            logos=[logo for logo in catalogue.LOGOS if logo],
            visibility=catalogue.VISIBILITY,
        )

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

    @app.route("/admin/domains", methods=["GET"])
    async def admin_domains(self, request: Any) -> bytes:
        """Every custom domain, with its site and (when a router answers) its certificate."""
        self.require_admin(await self.require(request))
        sites = [s for s in await self.store.list_sites(None, [], 5000, 0) if s.domains]
        # The routers are asked about every site at once (each call times out after 5 s).
        states = await gatherResults(
            [Deferred.fromCoroutine(self._certificates(site)) for site in sites]
        )
        rows = []
        for site, certificates in zip(sites, states, strict=True):
            for domain in site.domains:
                rows.append(
                    {"domain": domain, "site": site, "certificate": certificates.get(domain)}
                )
        return await self.render(
            request,
            "admin/domains.html",
            title="Custom domains",
            section="admin",
            tab="domains",
            domains=sorted(rows, key=lambda r: r["domain"]),
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
            hosts=[h.to_json(show_password=False) for h in hosts],
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
            # The template compares and shows the ISO forms.
            all_banners=[b.to_json() for b in await self.store.banners()],
            now=self.store.now().isoformat(),
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
