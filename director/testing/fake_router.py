"""
A router in memory, at the wire: a L{Caller} that answers the API's paths the way
L{director.router.web.RouterAPI} does (the same validation, L{director.router.domains}), and
keeps its site table. The contract suite (L{director.testing.router_contract}) runs the same
calls against it and against the real app.

Calls are recorded as C{(method, path, kwargs)} in C{calls}; C{answers} answers them (C{serve}
unless a test puts a function of its own in its place).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from director.router.domains import RequestError, SiteTable, parse_site_request, validate_site_name
from director.router.path_hosts import PATH_HOST_OWNER
from director.testing.fake_orchestrator import refusal

DEFAULT_BODY_SIZE = "2m"


class FakeRouter:
    """See the module's docstring."""

    def __init__(self, sites_domain: str = "sites.test", max_body_size: str = DEFAULT_BODY_SIZE):
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.answers: Callable[[str, str, dict[str, Any]], Any] = self.serve
        self.sites_domain = sites_domain
        self.max_body_size = max_body_size
        self.table = SiteTable()

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        return self.answers(method, path, kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError("the router has no streamed calls")

    def domains(self, name: str) -> list[str] | None:
        """The custom domains site C{name} is served with (None: not served)."""
        entry = self.table.get(name)
        return list(entry.domains) if entry is not None else None

    # -- the API ---------------------------------------------------------------------------------

    def serve(self, method: str, path: str, kwargs: dict[str, Any]) -> Any:
        try:
            return self._serve(method, path, kwargs.get("json"))
        except RequestError as e:
            raise refusal(path, e.status, e.code, e.message) from None

    def _serve(self, method: str, path: str, body: Any) -> Any:
        parts = path.split("/")  # "", "v1", collection, [name]
        if len(parts) < 3 or parts[1] != "v1":
            raise RequestError(404, "not_found", f"no route {method} {path}")
        collection, name = parts[2], unquote("/".join(parts[3:])) if len(parts) > 3 else None
        if (method, collection, name) == ("GET", "whoami", None):
            return {"component": "router", "caller": "manager"}
        if (method, collection, name) == ("GET", "sites", None):
            sites = sorted(self.table.sites.items())
            return {"sites": [e.to_json(self.sites_domain) for _, e in sites]}
        if collection == "sites" and name is not None:
            if method == "GET":
                found = self._site_json(name)
                if found is None:
                    raise RequestError(404, "unknown_site", f"the router has no site {name!r}")
                return found
            if method == "PUT":
                entry = parse_site_request(
                    name, {} if body is None else body, self.sites_domain, self.max_body_size
                )
                self.table = self.table.with_site(entry)  # 409 if a domain is taken
                return self._site_json(entry.name)
            if method == "DELETE":
                site = validate_site_name(name, self.sites_domain)
                removed = self.table.get(site) is not None
                self.table = self.table.without(site)
                return {"site": name, "removed": removed}
        if (method, collection) == ("GET", "certificates"):
            if name is None:
                domains = sorted(self.table.hosts | self.table.path_hosts)
                return {"acme": False, "certificates": {d: self._certificate(d) for d in domains}}
            state = self._certificate(name.lower())
            if state is None:
                raise RequestError(404, "unknown_domain", f"no site has the domain {name!r}")
            return state
        raise RequestError(404, "not_found", f"no route {method} {path}")

    def _site_json(self, name: str) -> dict[str, Any] | None:
        entry = self.table.get(name)
        if entry is None:
            return None
        return {
            "site": entry.to_json(self.sites_domain),
            "certificates": {
                d: self._certificate(d) for d in (*entry.hosts, *filter(None, [entry.path_host]))
            },
        }

    def _certificate(self, domain: str) -> dict[str, Any] | None:
        owner = self.table.owner(domain)
        if owner is None and domain in self.table.path_hosts:
            owner = PATH_HOST_OWNER
        if owner is None:
            return None
        return {
            "domain": domain,
            "site": owner,
            "state": "disabled",
            "detail": "ACME is not configured (router.acme_directory_url); served over HTTP",
        }
