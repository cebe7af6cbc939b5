"""
The orchestrator's routes for health, identity, sites, their tasks and websockets, and images.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from director.common.guard import caller_of, render_error
from director.common.metrics import CONTENT_TYPE
from director.common.nginx import NginxError
from director.common.web import healthz, render_json
from director.common.websocket import WhoAmIProtocol, websocket_resource
from director.contract.errors import ValidationError
from director.contract.terminals import NoDatabase, parse_shell, shell_command
from director.orchestrator.docker_gateway import BuildError
from director.orchestrator.images import CUSTOM_TAG, ImageError, ImageRequest, build_failure
from director.orchestrator.sites import IMAGE_NAME, parse_site
from director.orchestrator.streams import (
    FileMonitorProtocol,
    LogsProtocol,
    ShellBridgeProtocol,
    StatusProtocol,
    TerminalProtocol,
)
from director.orchestrator.web_base import (
    BadRequest,
    OrchestratorAPIBase,
    _arg,
    _flag,
    _json_body,
    app,
)


class SiteRoutes(OrchestratorAPIBase):
    """Health and identity, the sites and their websockets, and the site images."""

    # -- health and identity --------------------------------------------------------------------

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return healthz(request, "orchestrator")

    @app.route("/v1/whoami", methods=["GET"])
    def whoami(self, request: IRequest) -> bytes:
        return render_json(request, {"component": "orchestrator", "caller": caller_of(request)})

    @app.route("/v1/health", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        """
        Whether this orchestrator can run sites now: its Docker engine answers and its swarm
        node is ready (the manager's pool checks this, not only that the process answers).
        """
        if self._engine_health is None:
            return render_error(
                request, 503, "unavailable", "no Docker engine on this orchestrator"
            )
        return render_json(request, await self._engine_health.check())

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """Prometheus metrics (for the manager, like every route here but /healthz)."""
        if self._metrics is None:
            return render_error(request, 503, "unavailable", "no metrics on this orchestrator")
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        request.setHeader(b"cache-control", b"no-store")
        return self._metrics.render().encode("utf-8")

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

    # -- sites ---------------------------------------------------------------------------------

    @app.route("/v1/sites", methods=["GET"])
    async def list_sites(self, request: IRequest) -> bytes:
        return render_json(request, {"sites": await self._rt().report()})

    @app.route("/v1/sites/<int:site_id>", methods=["PUT"])
    async def put_site(self, request: IRequest, site_id: int) -> bytes:
        site = parse_site(site_id, _json_body(request))
        applied = await self._rt().apply(site)
        if self._disk is not None and self._disk.used(site_id) is None:
            self._disk.changed(site_id)  # a new site: measured now, not at the next round
        return render_json(request, applied)

    @app.route("/v1/sites/<int:site_id>/nginx-check", methods=["POST"])
    async def check_site_nginx(self, request: IRequest, site_id: int) -> bytes:
        """
        Whether nginx would take the site's server block for this spec (an administrator's
        snippet, before the manager keeps it): 400 bad_nginx_snippet with nginx's message if
        not. Nothing changes either way.
        """
        site = parse_site(site_id, _json_body(request))
        try:
            await self._rt().check_nginx(site)
        except NginxError as e:
            raise BadRequest("bad_nginx_snippet", e.output) from None
        return render_json(request, {"ok": True})

    @app.route("/v1/sites/<int:site_id>", methods=["GET"])
    async def get_site(self, request: IRequest, site_id: int) -> bytes:
        return render_json(request, await self._rt().status(site_id))

    @app.route("/v1/sites/<int:site_id>", methods=["DELETE"])
    async def delete_site(self, request: IRequest, site_id: int) -> bytes:
        existed = await self._rt().remove(site_id, purge=_flag(request, "purge"))
        return render_json(request, {"removed": existed})

    @app.route("/v1/sites/<int:site_id>/restart", methods=["POST"])
    async def restart_site(self, request: IRequest, site_id: int) -> bytes:
        return render_json(request, await self._rt().restart(site_id))

    @app.route("/v1/sites/<int:site_id>/tasks/run", methods=["POST"])
    async def run_task(self, request: IRequest, site_id: int) -> bytes:
        """
        Run a scheduled task's command in the site's container and answer when it ended (or
        was stopped at its time limit): exit code, whether it timed out, bounded output.
        """
        body = _json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("bad_request", 'expected {"command", "timeout", "max_output"}')
        command, timeout = body.get("command"), body.get("timeout", 300)
        max_output = body.get("max_output", 64 * 1024)
        if not isinstance(command, str) or not command.strip() or "\x00" in command:
            raise BadRequest("bad_request", "command must be a shell command")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= 86400
        ):
            raise BadRequest("bad_request", "timeout must be a number of seconds up to 86400")
        if (
            isinstance(max_output, bool)
            or not isinstance(max_output, int)
            or not 1 <= max_output <= 16 * 1024 * 1024
        ):
            raise BadRequest("bad_request", "max_output must be a number of bytes up to 16 MiB")
        result = await self._rt().run_task(site_id, command, float(timeout), max_output)
        return render_json(request, result)

    # -- websockets --------------------------------------------------------------------------

    def _exec_ws(self, protocol: Any, site_id: int, **extra: Any) -> Any:
        self._rt().get(site_id)
        return websocket_resource(
            protocol,
            runtime=self._rt(),
            site_id=site_id,
            reactor=self._reactor,
            idle_timeout=self._idle,
            max_lifetime=self._lifetime,
            **extra,
        )

    @app.route("/ws/sites/<int:site_id>/terminal")
    def ws_terminal(self, request: IRequest, site_id: int) -> Any:
        """
        C{?shell=database} runs the site's database client instead of the login shell: 400
        C{bad_shell} for another value, 409 C{no_database} for a site without a database.
        """
        try:
            shell = parse_shell(_arg(request, "shell"))
            shell_command(shell, self._rt().get(site_id).env)
        except NoDatabase as e:
            raise BadRequest(e.code, e.message, 409) from None
        except ValidationError as e:
            raise BadRequest(e.code, e.message) from None
        return self._exec_ws(TerminalProtocol, site_id, shell=shell)

    @app.route("/ws/shell-server/<int:site_id>/ssh-shell")
    def ws_shell(self, request: IRequest, site_id: int) -> Any:
        if self._tokens is None:
            raise BadRequest("unavailable", "shell tokens are not configured", 503)
        return self._exec_ws(ShellBridgeProtocol, site_id, tokens=self._tokens, disk=self._disk)

    @app.route("/ws/sites/<int:site_id>/logs")
    def ws_logs(self, request: Any, site_id: int) -> Any:
        tail = _arg(request, "tail") or "100"
        if not tail.isdigit() or int(tail) > 10000:
            raise BadRequest("bad_tail", "tail must be a number of lines up to 10000")
        self._rt().get(site_id)
        return websocket_resource(
            LogsProtocol,
            runtime=self._rt(),
            site_id=site_id,
            reactor=self._reactor,
            tail=int(tail),
        )

    @app.route("/ws/sites/<int:site_id>/status")
    def ws_status(self, request: IRequest, site_id: int) -> Any:
        self._rt().get(site_id)
        return websocket_resource(
            StatusProtocol, runtime=self._rt(), site_id=site_id, reactor=self._reactor, interval=2
        )

    @app.route("/ws/sites/status")
    def ws_multi_status(self, request: IRequest) -> Any:
        return websocket_resource(
            StatusProtocol, runtime=self._rt(), site_id=None, reactor=self._reactor, interval=5
        )

    @app.route("/ws/sites/<int:site_id>/files/monitor")
    def ws_file_monitor(self, request: IRequest, site_id: int) -> Any:
        self._rt().get(site_id)
        if self._monitor is None or self._files is None:
            raise BadRequest("unavailable", "this orchestrator has no file monitor", 503)
        return websocket_resource(
            FileMonitorProtocol,
            runtime=self._rt(),
            site_id=site_id,
            monitor=self._monitor,
            files=self._files,
            max_watches=self._max_watches,
        )

    # -- images --------------------------------------------------------------------------------

    @app.route("/v1/images/build", methods=["POST"])
    async def build_image(self, request: IRequest) -> bytes:
        """
        Build a site image from a catalogue parent plus Debian packages. Answers with the
        build log; a failed build is a 422 with the log, and nothing that used the previous
        image changes.
        """
        body = _json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("bad_request", 'expected {"tag", "parent", "packages"}')
        tag, parent = body.get("tag"), body.get("parent")
        packages = body.get("packages", [])
        if not isinstance(tag, str) or not CUSTOM_TAG.fullmatch(tag):
            raise BadRequest("bad_tag", "tag must look like director/site-<id>:<n>")
        if not isinstance(parent, str) or not IMAGE_NAME.fullmatch(parent):
            raise BadRequest("bad_parent", "parent must be an image from the catalogue")
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise BadRequest("bad_packages", "packages must be a list of Debian package names")
        setup = body.get("setup_commands")
        if setup is None and isinstance(body.get("setup_command"), str):
            setup = [line for line in body["setup_command"].split("\n") if line.strip()]
        if setup is not None and not (
            isinstance(setup, list) and all(isinstance(c, str) for c in setup)
        ):
            raise BadRequest("bad_request", "setup_commands must be a list of strings")
        try:
            dockerfile = ImageRequest(parent, tuple(packages), tuple(setup or ())).dockerfile()
        except ImageError as e:
            raise BadRequest("bad_packages", str(e)) from None
        docker = self._rt().docker
        if not await docker.image_exists(parent):
            raise BadRequest("bad_parent", f"image {parent} does not exist", 404)
        lines: list[str] = []
        try:
            await docker.build_image(dockerfile, tag, lines.append)
        except BuildError as e:
            message = build_failure(str(e), e.log, self._build_memory_mb)
            return render_json(
                request, {"error": "build_failed", "message": message, "log": e.log[-20000:]}, 422
            )
        site_id = int(tag.split("-", 1)[1].split(":", 1)[0])
        self._rt().image_built(site_id, tag)
        return render_json(request, {"tag": tag, "log": "\n".join(lines)[-20000:]})

    @app.route("/v1/images/delete", methods=["POST"])
    async def delete_image(self, request: IRequest) -> bytes:
        body = _json_body(request)
        tag = body.get("tag") if isinstance(body, dict) else None
        if not isinstance(tag, str) or not CUSTOM_TAG.fullmatch(tag):
            raise BadRequest("bad_tag", "only site images (director/site-<id>:<n>) are removed")
        in_use = [s.id for s in self._rt().sites.values() if s.image == tag]
        if in_use:
            raise BadRequest("in_use", f"image {tag} is used by site {in_use[0]}", 409)
        return render_json(request, {"removed": await self._rt().docker.remove_image(tag)})
