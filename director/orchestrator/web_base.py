"""
What every layer of the orchestrator's API stands on (L{OrchestratorAPIBase}): the one Klein
app the route classes share, the collaborators, the error pages, and the request helpers.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from director.common.guard import render_error
from director.common.nginx import NginxError
from director.common.threads import Runner
from director.common.tokens import TokenVerifier
from director.common.web import path_after
from director.contract.errors import ValidationError
from director.orchestrator.backups import SiteBackups
from director.orchestrator.disk import DiskUsage
from director.orchestrator.docker_gateway import DockerError, ImageInUse
from director.orchestrator.engine_health import PROBE_TIMEOUT, EngineHealth
from director.orchestrator.files import FileError
from director.orchestrator.firewall import FirewallError
from director.orchestrator.metrics import OrchestratorMetrics
from director.orchestrator.monitor import DirectoryMonitor
from director.orchestrator.runtime import NotReady, SiteRuntime, UnknownSite
from director.orchestrator.tasks import NotServed
from director.orchestrator.thread_stream import Streams


class BadRequest(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _json_body(request: Any) -> Any:
    try:
        return json.loads(request.content.read() or b"null")
    except ValueError:
        raise BadRequest("bad_json", "the request body is not valid JSON") from None


def _arg(request: Any, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _flag(request: Any, name: str) -> bool:
    return _arg(request, name) in ("1", "true", "yes")


def _file_path(request: Any, site_id: int) -> str:
    """The site-relative path after /v1/sites/<id>/files/, exactly as sent (percent-decoded)."""
    try:
        return path_after(request, f"/v1/sites/{site_id}/files")
    except UnicodeDecodeError:
        raise BadRequest("bad_path", "paths must be UTF-8") from None


#: The orchestrator API's one Klein app: every layer of routes (L{SiteRoutes},
#: L{DatabaseRoutes}, L{FileRoutes}) adds to it, and L{OrchestratorAPI} serves them all.
app = Klein()


class OrchestratorAPIBase:
    """The collaborators every route uses, and the errors every route may raise."""

    app = app
    #: named for the class of the instance (director.orchestrator.web.OrchestratorAPI)
    log = Logger()

    def __init__(
        self,
        runtime: SiteRuntime | None = None,
        files: Runner | None = None,
        tokens: TokenVerifier | None = None,
        databases: Runner | None = None,
        reactor: Any = None,
        idle_timeout: float = 6 * 3600,
        max_lifetime: float = 12 * 3600,
        monitor: DirectoryMonitor | None = None,
        max_watches: int = 256,
        build_memory_mb: int = 1024,
        disk: DiskUsage | None = None,
        backups: SiteBackups | None = None,
        metrics: OrchestratorMetrics | None = None,
        archives: Runner | None = None,
        streams: Streams | None = None,
        engine_health: EngineHealth | None = None,
    ) -> None:
        self.runtime = runtime
        if engine_health is None and runtime is not None and reactor is not None:
            engine_health = EngineHealth(reactor, runtime.docker.engine_state, PROBE_TIMEOUT)
        self._engine_health = engine_health
        #: where whole-site archives are made and unpacked (long: threads of their own)
        self._archives = archives if archives is not None else files
        #: archives being sent (stopped before their pool when the daemon stops)
        self._streams = streams if streams is not None else Streams()
        self._metrics = metrics
        self._build_memory_mb = build_memory_mb
        self._disk = disk
        self._files = files
        self._tokens = tokens
        self._databases = databases
        self._reactor = reactor
        self._idle = idle_timeout
        self._lifetime = max_lifetime
        self._monitor = monitor
        self._max_watches = max_watches
        self._backups = backups

    # -- errors --------------------------------------------------------------------------------

    @app.handle_errors(BadRequest)
    def _bad_request(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        return render_error(request, e.status, e.code, e.message)

    @app.handle_errors(ValidationError)
    def _site_error(self, request: IRequest, failure: Any) -> bytes:
        return render_error(request, 400, "invalid", str(failure.value))

    @app.handle_errors(UnknownSite)
    def _unknown_site(self, request: IRequest, failure: Any) -> bytes:
        return render_error(
            request,
            404,
            "unknown_site",
            f"site {failure.value.args[0]} is not on this orchestrator",
        )

    @app.handle_errors(NotReady)
    def _not_ready(self, request: IRequest, failure: Any) -> bytes:
        return render_error(request, 422, "not_ready", str(failure.value))

    @app.handle_errors(NotServed)
    def _not_served(self, request: IRequest, failure: Any) -> bytes:
        return render_error(request, 409, "not_served", str(failure.value))

    @app.handle_errors(FileError)
    def _file_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        return render_error(request, e.status, e.code, e.message)

    @app.handle_errors(ImageInUse)
    def _image_in_use(self, request: IRequest, failure: Any) -> bytes:
        return render_error(request, 409, "in_use", str(failure.value))

    @app.handle_errors(DockerError)
    def _docker_error(self, request: IRequest, failure: Any) -> bytes:
        self.log.warn("docker: {e}", e=failure.value)
        return render_error(request, 502, "docker", f"Docker failed: {failure.value}")

    @app.handle_errors(FirewallError)
    def _firewall_error(self, request: IRequest, failure: Any) -> bytes:
        self.log.failure("the sites firewall", failure)
        return render_error(
            request,
            503,
            "firewall",
            "sites cannot be started now: the sites firewall is not in place (the logs say why)",
        )

    @app.handle_errors(NginxError)
    def _nginx_error(self, request: IRequest, failure: Any) -> bytes:
        return render_error(request, 500, "nginx", str(failure.value))

    def _rt(self) -> SiteRuntime:
        if self.runtime is None:
            raise BadRequest("unavailable", "this orchestrator runs no sites", 503)
        return self.runtime
