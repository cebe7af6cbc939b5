"""The router's HTTP API, for the manager only (behind the component guard)."""

from __future__ import annotations

from klein import Klein
from twisted.web.iweb import IRequest

from director.common.guard import caller_of
from director.common.web import healthz, render_json


class RouterAPI:
    app = Klein()

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return healthz(request, "router")

    @app.route("/v1/whoami", methods=["GET"])
    def whoami(self, request: IRequest) -> bytes:
        return render_json(request, {"component": "router", "caller": caller_of(request)})
