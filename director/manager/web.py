"""The manager's web app: the public API and dashboard, and /shell-server/ for the shell."""

from __future__ import annotations

from klein import Klein
from twisted.web.iweb import IRequest

from director.common.guard import caller_of
from director.common.web import healthz, render_json


class ManagerWeb:
    app = Klein()

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return healthz(request, "manager")

    @app.route("/shell-server/whoami", methods=["GET"])
    def shell_whoami(self, request: IRequest) -> bytes:
        return render_json(request, {"component": "manager", "caller": caller_of(request)})
