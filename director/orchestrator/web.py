"""The orchestrator's HTTP API and websocket routes (behind the component guard)."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.web.iweb import IRequest

from director.common.guard import caller_of, render_error
from director.common.metrics import CONTENT_TYPE
from director.common.nginx import NginxError
from director.common.restic import ResticError
from director.common.threads import Runner
from director.common.tokens import TokenVerifier
from director.common.web import healthz, path_after, render_json
from director.common.websocket import WhoAmIProtocol, websocket_resource
from director.contract.databases import DatabaseSpec
from director.contract.errors import ValidationError
from director.orchestrator.backups import BackupError, DatabaseTarget, SiteBackups, restore_path
from director.orchestrator.databases import DatabaseError, DatabaseHost, make_database_admin
from director.orchestrator.disk import DiskUsage, quota_refusal
from director.orchestrator.docker_gateway import BuildError, DockerError, ImageInUse
from director.orchestrator.engine_health import PROBE_TIMEOUT, EngineHealth
from director.orchestrator.files import FileError, SiteFiles, TooLarge
from director.orchestrator.firewall import FirewallError
from director.orchestrator.images import CUSTOM_TAG, ImageError, ImageRequest, build_failure
from director.orchestrator.metrics import OrchestratorMetrics
from director.orchestrator.monitor import DirectoryMonitor
from director.orchestrator.runtime import NotReady, SiteRuntime, UnknownSite
from director.orchestrator.site_archive import import_archive, write_archive
from director.orchestrator.sites import IMAGE_NAME, parse_site
from director.orchestrator.streams import (
    FileMonitorProtocol,
    LogsProtocol,
    ShellBridgeProtocol,
    StatusProtocol,
    TerminalProtocol,
)
from director.orchestrator.tasks import NotServed
from director.orchestrator.thread_stream import RequestSink, Streams, ThreadWriter


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


class OrchestratorAPI:
    """Routes for the manager (everything) and the shell server (/ws/shell-server/ only)."""

    app = Klein()
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

    def _rt(self) -> SiteRuntime:
        if self.runtime is None:
            raise BadRequest("unavailable", "this orchestrator runs no sites", 503)
        return self.runtime

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
        return self._exec_ws(TerminalProtocol, site_id)

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

    # -- databases -----------------------------------------------------------------------------

    def _database(self, body: Any) -> tuple[Any, Any]:
        """The admin adapter for the host in C{body} and the site database it names."""
        admin, _, site_db = self._database_server(body)
        return admin, site_db

    def _database_server(self, body: Any) -> tuple[Any, DatabaseHost, Any]:
        """L{_database}'s adapter and site database, with the server they are on."""
        if not isinstance(body, dict) or not isinstance(body.get("host"), dict):
            raise BadRequest("bad_request", 'expected {"host": {...}, "name", "username", ...}')
        try:
            spec = DatabaseSpec.from_json(body)
        except ValidationError as e:
            raise BadRequest("bad_request", f"database host: {e}") from None
        if self._databases is None:
            raise BadRequest("unavailable", "this orchestrator manages no databases", 503)
        server = DatabaseHost.of(spec.host)
        admin = make_database_admin(self._databases, server)
        return admin, server, server.site_database(spec.name, spec.username, spec.password)

    @app.handle_errors(DatabaseError)
    def _database_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        status = {
            "unavailable": 503,
            "server_error": 502,
            "query_failed": 422,
            "query_timeout": 422,
            "access_denied": 422,
            "not_found": 404,
        }.get(e.code, 400)
        return render_error(request, status, e.code, e.message)

    @app.route("/v1/databases", methods=["PUT"])
    async def put_database(self, request: IRequest) -> bytes:
        """Create the site's user and database, or set its password (idempotent)."""
        admin, site_db = self._database(_json_body(request))
        await admin.create(site_db)
        if self.runtime is not None:  # sites reach the server through the firewall
            await self.runtime.allow_host_port(site_db.host, site_db.port)
        return render_json(request, {"environment": site_db.environment()})

    @app.route("/v1/databases/delete", methods=["POST"])
    async def delete_database(self, request: IRequest) -> bytes:
        admin, site_db = self._database(_json_body(request))
        await admin.drop(site_db.name, site_db.username)
        return render_json(request, {"dropped": site_db.name})

    @app.route("/v1/databases/query", methods=["POST"])
    async def query_database(self, request: IRequest) -> bytes:
        body = _json_body(request)
        admin, site_db = self._database(body)
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise BadRequest("bad_request", "sql must be one SQL statement")
        timeout = body.get("timeout", 10)
        max_rows = body.get("max_rows", 1000)
        if not isinstance(timeout, int | float) or not isinstance(max_rows, int):
            raise BadRequest("bad_request", "timeout and max_rows must be numbers")
        return render_json(request, await admin.query(site_db, sql, float(timeout), max_rows))

    # -- backups -------------------------------------------------------------------------------

    @app.handle_errors(BackupError)
    def _backup_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        return render_error(request, e.status, e.code, e.message)

    @app.handle_errors(ResticError)
    def _restic_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        self.log.warn("restic: {e}", e=e)
        status = {"not_found": 404, "locked": 503, "timeout": 504}.get(e.code, 502)
        return render_error(request, status, "backup_" + e.code, e.message)

    def _bk(self) -> SiteBackups:
        if self._backups is None:
            raise BadRequest("unavailable", "this orchestrator makes no backups", 503)
        return self._backups

    def _database_target(self, body: Any) -> tuple[Any, DatabaseTarget]:
        admin, server, site_db = self._database_server(body)
        return admin, DatabaseTarget(server, site_db)

    @app.route("/v1/sites/<int:site_id>/backups", methods=["POST"])
    async def backup_site(self, request: IRequest, site_id: int) -> bytes:
        """Back up the site's files, and its database when the body names it."""
        body = _json_body(request)
        if body is not None and not isinstance(body, dict):
            raise BadRequest("bad_request", 'expected {"database": {...}} or nothing')
        database = (body or {}).get("database")
        target = self._database_target(database)[1] if database else None
        return render_json(request, await self._bk().backup(site_id, target))

    @app.route("/v1/sites/<int:site_id>/backups", methods=["GET"])
    async def list_backups(self, request: IRequest, site_id: int) -> bytes:
        return render_json(request, {"snapshots": await self._bk().snapshots(site_id)})

    @app.route("/v1/sites/<int:site_id>/backups/<snapshot>/restore-files", methods=["POST"])
    async def restore_files(self, request: IRequest, site_id: int, snapshot: str) -> bytes:
        body = _json_body(request)
        if body is not None and not isinstance(body, dict):
            raise BadRequest("bad_request", 'expected {"path": "..."} or nothing')
        path = restore_path((body or {}).get("path"))
        return render_json(request, await self._bk().restore_files(site_id, snapshot, path))

    @app.route("/v1/sites/<int:site_id>/backups/<snapshot>/restore-database", methods=["POST"])
    async def restore_database(self, request: IRequest, site_id: int, snapshot: str) -> bytes:
        admin, target = self._database_target(_json_body(request))
        if self.runtime is not None:
            await self.runtime.allow_host_port(target.site.host, target.site.port)
        return render_json(
            request, await self._bk().restore_database(site_id, snapshot, target, admin)
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

    # -- files ---------------------------------------------------------------------------------

    def _site_files(self, site_id: int) -> SiteFiles:
        return self._rt().site_files(self._rt().get(site_id))

    async def _in_files(self, f: Any, *args: Any) -> Any:
        assert self._files is not None
        return await self._files.run(f, *args)

    @app.route("/v1/sites/<int:site_id>/files/", methods=["GET"], branch=True)
    async def get_file(self, request: Any, site_id: int) -> Any:
        files = self._site_files(site_id)
        path = _file_path(request, site_id)
        entry = await self._in_files(files.stat, path)
        if entry.type == "dir":
            if _flag(request, "zip"):
                spool = await self._in_files(_zip_to_spool, files, path)
                name = (path.rstrip("/").rsplit("/", 1)[-1] or "site") + ".zip"
                request.setHeader(b"content-type", b"application/zip")
                request.setHeader(
                    b"content-disposition", f'attachment; filename="{_safe_name(name)}"'.encode()
                )
                return await _send(request, spool)
            entries = await self._in_files(files.list_dir, path)
            return render_json(request, {"path": path, "entries": [e.to_json() for e in entries]})
        stream, size = await self._in_files(files.open_read, path)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", str(size).encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        return await _send(request, stream)

    @app.route("/v1/sites/<int:site_id>/files/", methods=["PUT"], branch=True)
    async def put_file(self, request: Any, site_id: int) -> bytes:
        files = self._site_files(site_id)
        path = _file_path(request, site_id)
        mode = _arg(request, "mode")
        length = request.getHeader(b"content-length")
        if length and length.isdigit() and int(length) > files.limits.max_write_bytes:
            raise TooLarge(f"{path}: larger than {files.limits.max_write_bytes} bytes")
        if request.path.endswith(b"/"):
            grows = await self._fits(site_id, files, path, None)
            await self._in_files(files.mkdir, path, mode)
            return render_json(request, {"created": path, **self._written(site_id, grows)}, 201)
        request.content.seek(0, 2)
        size = request.content.tell()
        grows = await self._fits(site_id, files, path, size)
        request.content.seek(0)
        if _flag(request, "exclusive"):
            await self._in_files(files.create, path, _chunks(request.content), mode)
            return render_json(request, {"created": path, **self._written(site_id, grows)}, 201)
        await self._in_files(files.write, path, _chunks(request.content), mode)
        return render_json(request, {"written": path, **self._written(site_id, grows)})

    async def _fits(self, site_id: int, files: SiteFiles, path: str, size: int | None) -> int:
        """
        How many bytes writing C{size} bytes (None: a new directory) at C{path} adds to the
        site; 413 quota_exceeded if that would take it over its disk quota.
        """
        grows = DIRECTORY_BYTES
        if size is not None:
            grows = await self._in_files(_growth, files, path, size)
        if self._disk is None:
            return grows
        quota = self._rt().disk_quota_bytes(self._rt().get(site_id))
        refusal = quota_refusal(self._disk.used(site_id), quota, grows, path or "/")
        if refusal is not None:
            raise BadRequest("quota_exceeded", refusal, 413)
        return grows

    def _written(self, site_id: int, grows: int) -> dict[str, Any]:
        if self._disk is None:
            return {}
        self._disk.changed(site_id, grows)
        return {"disk_usage_bytes": self._disk.used(site_id)}

    # -- a site's files as one archive (moving a site between orchestrators) -------------------

    @app.route("/v1/sites/<int:site_id>/archive", methods=["GET"])
    async def get_archive(self, request: Any, site_id: int) -> bytes:
        """The whole site directory as an uncompressed tar, streamed as it is made."""
        files = self._site_files(site_id)
        await self._in_files(files.stat, "")  # 404 before anything is sent
        assert self._archives is not None
        request.setHeader(b"content-type", b"application/x-tar")
        request.setHeader(
            b"content-disposition", f'attachment; filename="site-{site_id}.tar"'.encode()
        )
        sink = RequestSink(request, self._streams)
        writer = ThreadWriter(self._reactor, sink)
        try:
            await self._archives.run(_write_all, files, writer)
        except Exception:
            if sink.written == 0 and not sink.stopped:
                raise  # nothing sent yet: a proper error answer
            if not sink.stopped:
                self.log.failure("the archive of site {id} broke off", id=site_id)
                # the tar is incomplete: the client must see a broken transfer, not an end
                transport = getattr(request.channel, "transport", None)
                if transport is not None:
                    transport.abortConnection()
        finally:
            sink.close()
        return b""

    @app.route("/v1/sites/<int:site_id>/archive", methods=["PUT"])
    async def put_archive(self, request: Any, site_id: int) -> bytes:
        """
        Replace the whole site directory with the tar (plain or gzip) in the body: unpacked
        beside it, checked member by member, swapped in only once complete.
        """
        runtime = self._rt()
        site = runtime.get(site_id)
        owner = (site.uid, site.uid)
        quota = runtime.disk_quota_bytes(site)
        files = runtime.site_files(site)

        def layout(fresh: Any) -> None:
            SiteFiles(fresh, owner=owner).ensure_layout()

        request.content.seek(0)
        assert self._archives is not None
        result = await self._archives.run(
            import_archive, files.root, request.content, owner, quota, layout
        )
        if self._disk is not None:
            self._disk.changed(site_id)  # measured again shortly
        return render_json(request, {"imported": site_id, **result})

    @app.route("/v1/disk", methods=["GET"])
    def disk_usage(self, request: IRequest) -> bytes:
        """Every site's last measured disk use and its quota (bytes; null: unknown / none)."""
        runtime = self._rt()
        sites = []
        for site in runtime.sites.values():
            usage = self._disk.usage.get(site.id) if self._disk is not None else None
            sites.append(
                {
                    "id": site.id,
                    "disk_usage_bytes": usage.used if usage else None,
                    "disk_quota_bytes": runtime.disk_quota_bytes(site),
                }
            )
        return render_json(request, {"sites": sites})

    @app.route("/v1/sites/<int:site_id>/files/", methods=["PATCH"], branch=True)
    async def patch_file(self, request: Any, site_id: int) -> bytes:
        files = self._site_files(site_id)
        path = _file_path(request, site_id)
        body = _json_body(request)
        if not isinstance(body, dict) or not set(body) <= {"mode", "move_to"} or not body:
            raise BadRequest("bad_request", 'expected {"mode": "755"} and/or {"move_to": "path"}')
        if "mode" in body:
            if not isinstance(body["mode"], str):
                raise BadRequest("bad_mode", 'mode must be a string like "755"')
            await self._in_files(files.chmod, path, body["mode"])
        if "move_to" in body:
            if not isinstance(body["move_to"], str):
                raise BadRequest("bad_path", "move_to must be a path")
            await self._in_files(files.move, path, body["move_to"])
            path = body["move_to"]
        return render_json(request, {"path": path})

    @app.route("/v1/sites/<int:site_id>/files/", methods=["DELETE"], branch=True)
    async def delete_file(self, request: Any, site_id: int) -> bytes:
        files = self._site_files(site_id)
        path = _file_path(request, site_id)
        await self._in_files(files.delete, path, _flag(request, "recursive"))
        return render_json(request, {"deleted": path})


#: What a new directory is counted as until the site is measured again (one block).
DIRECTORY_BYTES = 4096


def _growth(files: SiteFiles, path: str, size: int) -> int:
    """How much bigger the site gets when C{path} becomes C{size} bytes long."""
    try:
        entry = files.stat(path)
    except FileError:
        return size
    return size - entry.size if entry.type == "file" else size


def _chunks(stream: Any, size: int = 64 * 1024) -> Any:
    while True:
        data = stream.read(size)
        if not data:
            return
        yield data


def _write_all(files: SiteFiles, writer: ThreadWriter) -> int:
    count = write_archive(files, writer)  # type: ignore[arg-type]
    writer.flush()
    return count


def _zip_to_spool(files: SiteFiles, path: str) -> Any:
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    try:
        files.zip_dir(path, spool)  # type: ignore[arg-type]
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100]


async def _send(request: Any, stream: Any) -> bytes:
    """Stream an open file to the client in chunks (the producer pauses with the transport)."""
    try:
        await FileSender().beginFileTransfer(stream, request)
    finally:
        stream.close()
    return b""
