"""
The router's API as methods (L{RouterClient}), over a signed L{Caller}: a site's custom
domains, body limit and upstream, and the certificates of its domains. Values are the wire's JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from director.clients.component import ComponentAPI, call_options
from director.contract.sites import RouteSpec


def _name(name: str) -> str:
    return quote(name, safe="")


class RouterClient(ComponentAPI):
    """
    Calls the router; C{caller} signs and sends (a L{ComponentClient} or a fake).
    L{whoami} names the component C{"router"}; L{list_sites} gives each site's C{{"name",
    "host", "domains", "max_body_size", "upstream"}}.
    """

    async def get_site(self, name: str, timeout: float = 5) -> dict[str, Any]:
        """C{{"site": {...}, "certificates": {domain: state}}}; 404 if the router has none."""
        found: dict[str, Any] = await self.caller.json(
            "GET", f"/v1/sites/{_name(name)}", timeout=timeout
        )
        return found

    async def put_site(
        self,
        name: str,
        domains: Sequence[str],
        max_body_size: str,
        timeout: float | None = None,
        upstream: str | None = None,
    ) -> dict[str, Any]:
        """
        Set the site's custom domains (the whole list), body limit and upstream ("host:port"
        of the orchestrator nginx that holds it; None: the router's default group); as
        L{get_site}.
        """
        body = {"domains": list(domains), "max_body_size": max_body_size, "upstream": upstream}
        answer: dict[str, Any] = await self.caller.json(
            "PUT", f"/v1/sites/{_name(name)}", **call_options(timeout, json=body)
        )
        return answer

    async def put_route(
        self, name: str, spec: RouteSpec, timeout: float | None = None
    ) -> dict[str, Any]:
        """As L{put_site}, from a whole L{RouteSpec}."""
        answer: dict[str, Any] = await self.caller.json(
            "PUT", f"/v1/sites/{_name(name)}", **call_options(timeout, json=spec.to_json())
        )
        return answer

    async def remove_site(self, name: str, timeout: float | None = None) -> bool:
        """Stop serving the site and its domains; whether it was there."""
        answer = await self.caller.json(
            "DELETE", f"/v1/sites/{_name(name)}", **call_options(timeout)
        )
        return bool(answer.get("removed")) if isinstance(answer, dict) else False

    async def certificate(self, domain: str, timeout: float = 10) -> dict[str, Any]:
        """The certificate state of a custom domain (C{state}, ...); 404 if no site has it."""
        state: dict[str, Any] = await self.caller.json(
            "GET", f"/v1/certificates/{_name(domain)}", timeout=timeout
        )
        return state
