"""
The router's HTTP API, for the manager only (behind the component guard).

    GET    /v1/sites                    -> {"sites": [site, ...]}
    PUT    /v1/sites/<name>             {"domains": [...], "max_body_size": "10m"}
                                        -> {"site": site, "certificates": {domain: state}}
    GET    /v1/sites/<name>             -> the same, or 404
    DELETE /v1/sites/<name>             -> {"site": name, "removed": true|false}
    GET    /v1/certificates             -> {"acme": bool, "certificates": {domain: state}}
    GET    /v1/certificates/<domain>    -> state, or 404

Errors are C{{"error": code, "message": text}} with a 4xx status (500 when nginx refuses a
configuration the checks accepted); a refused request changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from director.common.guard import caller_of, render_error
from director.common.metrics import CONTENT_TYPE
from director.common.web import healthz, render_json
from director.router.domains import RequestError
from director.router.metrics import RouterMetrics
from director.router.routing import Router

MAX_BODY = 256 * 1024


class RouterAPI:
    app = Klein()

    def __init__(self, router: Router | None = None, metrics: RouterMetrics | None = None) -> None:
        self._router = router
        self._metrics = metrics

    def _require(self) -> Router:
        if self._router is None:
            raise RequestError(503, "unavailable", "this router has no site table")
        return self._router

    @app.handle_errors(RequestError)
    def request_error(self, request: IRequest, failure: Any) -> bytes:
        error: RequestError = failure.value
        return render_error(request, error.status, error.code, error.message)

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return healthz(request, "router")

    @app.route("/v1/whoami", methods=["GET"])
    def whoami(self, request: IRequest) -> bytes:
        return render_json(request, {"component": "router", "caller": caller_of(request)})

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """Prometheus metrics (for the manager, like every route here but /healthz)."""
        if self._metrics is None:
            raise RequestError(503, "unavailable", "no metrics on this router")
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        request.setHeader(b"cache-control", b"no-store")
        return self._metrics.render().encode("utf-8")

    @app.route("/v1/sites", methods=["GET"])
    def list_sites(self, request: IRequest) -> bytes:
        return render_json(request, self._require().sites_json())

    @app.route("/v1/sites/<name>", methods=["GET"])
    def get_site(self, request: IRequest, name: str) -> bytes:
        site = self._require().site_json(name)
        if site is None:
            raise RequestError(404, "unknown_site", f"the router has no site {name!r}")
        return render_json(request, site)

    @app.route("/v1/sites/<name>", methods=["PUT"])
    async def put_site(self, request: IRequest, name: str) -> bytes:
        router = self._require()
        body = _json_body(request)
        return render_json(request, await router.put_site(name, body))

    @app.route("/v1/sites/<name>", methods=["DELETE"])
    async def delete_site(self, request: IRequest, name: str) -> bytes:
        removed = await self._require().remove_site(name)
        return render_json(request, {"site": name, "removed": removed})

    @app.route("/v1/certificates", methods=["GET"])
    def list_certificates(self, request: IRequest) -> bytes:
        return render_json(request, self._require().certificates_json())

    @app.route("/v1/certificates/<domain>", methods=["GET"])
    def get_certificate(self, request: IRequest, domain: str) -> bytes:
        state = self._require().certificate_json(domain.lower())
        if state is None:
            raise RequestError(404, "unknown_domain", f"no site has the domain {domain!r}")
        return render_json(request, state)


def _json_body(request: IRequest) -> Any:
    content = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(content) > MAX_BODY:
        raise RequestError(413, "body_too_large", f"the body is larger than {MAX_BODY} bytes")
    if not content.strip():
        return {}
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, "invalid_json", f"the body is not JSON: {e}") from None
