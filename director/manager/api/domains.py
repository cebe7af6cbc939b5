"""A site's custom domains."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from director.common.client import ComponentCallError
from director.common.web import render_json
from director.contract.domains import is_within, normalize_domain
from director.manager.access import authenticated
from director.manager.api.base import APIError, ManagerBase, app, not_found, read_object
from director.manager.models import User, ValidationError
from director.manager.store import Conflict


class DomainRoutes(ManagerBase):
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
        taken = next((h for h in self.url_formats.reserved() if is_within(domain, h)), None)
        if taken is not None:
            raise Conflict(
                "domain_reserved", f"{taken} names are sites' own addresses, not custom domains"
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
