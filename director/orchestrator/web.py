"""The orchestrator's HTTP API and websocket routes (behind the component guard)."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from director.common.guard import caller_of
from director.common.web import healthz, render_json
from director.common.websocket import WhoAmIProtocol, websocket_resource


class OrchestratorAPI:
    """Routes for the manager (everything) and the shell server (/ws/shell-server/ only)."""

    app = Klein()

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return healthz(request, "orchestrator")

    @app.route("/v1/whoami", methods=["GET"])
    def whoami(self, request: IRequest) -> bytes:
        return render_json(request, {"component": "orchestrator", "caller": caller_of(request)})

    @app.route("/ws/whoami")
    def ws_whoami(self, request: IRequest) -> Any:
        return websocket_resource(
            WhoAmIProtocol, component="orchestrator", caller=caller_of(request)
        )

    @app.route("/ws/shell-server/whoami")
    def ws_shell_whoami(self, request: IRequest) -> Any:
        return websocket_resource(
            WhoAmIProtocol, component="orchestrator", caller=caller_of(request)
        )
