"""
The orchestrator's API as methods (L{OrchestratorClient}), over a signed L{Caller}.

Values go and come as the wire carries them (JSON objects as dicts); each method applies the
timeout its callers have always used. File transfers are streamed by the manager itself
(L{OrchestratorClient.files_request}; a whole site's files as one archive:
L{OrchestratorClient.export_files} and L{OrchestratorClient.import_files}), and websockets
are opened by their relays: for those the client only builds the path
(L{OrchestratorClient.terminal_path} and its siblings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IResponse

from director.clients.component import ComponentAPI, call_options
from director.common.client import ComponentCallError
from director.contract.databases import DatabaseHost, DatabaseSpec
from director.contract.terminals import TerminalShell, parse_shell

#: How long a site's apply, restart or removal may take (a dynamic site rolls out a task).
SITE_CHANGE_TIMEOUT = 180.0
#: A restore of files or of a database (a whole site's snapshot).
RESTORE_TIMEOUT = 6 * 3600.0
#: A relayed file call (an upload or a download, streamed).
FILES_TIMEOUT = 300.0
#: A whole site's files as one archive: the import unpacks all of it before it answers.
ARCHIVE_TIMEOUT = 6 * 3600.0
#: An archive download gives up after this long without data.
ARCHIVE_IDLE_TIMEOUT = 120.0


class OrchestratorClient(ComponentAPI):
    """
    Calls one orchestrator; C{caller} signs and sends (a L{ComponentClient} or a fake).
    L{whoami} names the component C{"orchestrator"}; L{list_sites} gives each site's id,
    name, type, availability, healthy, ...
    """

    async def health(self, timeout: float | None = None) -> dict[str, Any]:
        """
        Whether the orchestrator can run sites now: C{healthy}, C{engine} (C{ok}, C{version},
        C{error}) and C{swarm} (C{node}, C{local_state}, C{state}, C{availability}, C{error}).
        An orchestrator older than this route answers 404.
        """
        answer: dict[str, Any] = await self.caller.json(
            "GET", "/v1/health", **call_options(timeout)
        )
        return answer

    # -- sites ---------------------------------------------------------------------------------

    async def put_site(
        self, site_id: int, spec: Mapping[str, Any], timeout: float = SITE_CHANGE_TIMEOUT
    ) -> dict[str, Any]:
        """Apply the site's spec (idempotent); its status, with C{upstream} (served tasks)."""
        status: dict[str, Any] = await self.caller.json(
            "PUT", f"/v1/sites/{int(site_id)}", json=dict(spec), timeout=timeout
        )
        return status

    async def check_nginx(self, site_id: int, spec: Mapping[str, Any], timeout: float = 30) -> None:
        """
        Whether the orchestrator's nginx takes the site's server block for C{spec} (nothing
        changes): a L{ComponentCallError} 400 C{bad_nginx_snippet} with nginx's words if not.
        """
        await self.caller.json(
            "POST", f"/v1/sites/{site_id}/nginx-check", json=dict(spec), timeout=timeout
        )

    async def site_status(self, site_id: int, timeout: float = 10) -> dict[str, Any]:
        """Whether the site runs, is starting, its error and last log lines; 404 if unknown."""
        status: dict[str, Any] = await self.caller.json(
            "GET", f"/v1/sites/{int(site_id)}", timeout=timeout
        )
        return status

    async def remove_site(
        self, site_id: int, purge: bool, timeout: float = SITE_CHANGE_TIMEOUT
    ) -> bool:
        """Stop serving the site (C{purge}: delete its files too); whether it was there."""
        answer = await self.caller.json(
            "DELETE",
            f"/v1/sites/{int(site_id)}",
            params={"purge": "1" if purge else "0"},
            timeout=timeout,
        )
        return bool(answer.get("removed")) if isinstance(answer, dict) else False

    async def restart_site(
        self, site_id: int, timeout: float = SITE_CHANGE_TIMEOUT
    ) -> dict[str, Any]:
        """Replace a dynamic site's process; its status."""
        status: dict[str, Any] = await self.caller.json(
            "POST", f"/v1/sites/{int(site_id)}/restart", timeout=timeout
        )
        return status

    async def run_task(
        self, site_id: int, command: str, timeout: float, max_output: int
    ) -> dict[str, Any]:
        """
        Run C{command} in the site's container, stopped after C{timeout} seconds; answers when
        it ended: C{exit_code}, C{timed_out}, C{output} (at most C{max_output} bytes), C{truncated}.
        """
        result: dict[str, Any] = await self.caller.json(
            "POST",
            f"/v1/sites/{int(site_id)}/tasks/run",
            json={"command": command, "timeout": timeout, "max_output": max_output},
            timeout=timeout + 60,
        )
        return result

    async def disk(self, timeout: float = 30) -> dict[str, Any]:
        """C{{"sites": [{"id", "disk_usage_bytes", "disk_quota_bytes"}, ...]}}."""
        report: dict[str, Any] = await self.caller.json("GET", "/v1/disk", timeout=timeout)
        return report

    # -- images --------------------------------------------------------------------------------

    async def build_image(
        self,
        tag: str,
        parent: str,
        packages: Sequence[str],
        setup_commands: Sequence[str] = (),
        timeout: float = 1800,
    ) -> dict[str, Any]:
        """
        Build C{tag} from C{parent}: the catalogue's C{setup_commands} for it (one RUN step
        each), then Debian C{packages}; a failed build is a 422.
        """
        answer: dict[str, Any] = await self.caller.json(
            "POST",
            "/v1/images/build",
            json={
                "tag": tag,
                "parent": parent,
                "packages": list(packages),
                "setup_commands": list(setup_commands),
            },
            timeout=timeout,
        )
        return answer

    # -- databases -----------------------------------------------------------------------------

    async def put_database(
        self, database: DatabaseSpec, timeout: float | None = None
    ) -> dict[str, str]:
        """Create the site's user and database, or set its password; its environment."""
        answer = await self.caller.json(
            "PUT", "/v1/databases", **call_options(timeout, json=database.to_json())
        )
        environment: dict[str, str] = answer["environment"]
        return environment

    async def drop_database(
        self, host: Mapping[str, Any], name: str, username: str, timeout: float | None = None
    ) -> None:
        """Drop the site's database and its user."""
        login = DatabaseSpec(DatabaseHost.from_record(host), name, username, "")
        await self.caller.json(
            "POST", "/v1/databases/delete", **call_options(timeout, json=login.to_json())
        )

    async def query_database(
        self,
        database: DatabaseSpec,
        sql: str,
        *,
        query_timeout: float = 10,
        max_rows: int = 1000,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Run one SQL statement as the site's user; its columns and rows."""
        result: dict[str, Any] = await self.caller.json(
            "POST",
            "/v1/databases/query",
            json={**database.to_json(), "sql": sql, "timeout": query_timeout, "max_rows": max_rows},
            timeout=timeout,
        )
        return result

    # -- backups -------------------------------------------------------------------------------

    async def backup_site(
        self, site_id: int, database: DatabaseSpec | None, timeout: float
    ) -> dict[str, Any]:
        """Back up the site's files (and C{database}); C{{"snapshot": id, "bytes": n, ...}}."""
        body = {"database": database.to_json()} if database is not None else {}
        made: dict[str, Any] = await self.caller.json(
            "POST", f"/v1/sites/{int(site_id)}/backups", json=body, timeout=timeout
        )
        return made

    async def list_backups(self, site_id: int, timeout: float = 120) -> list[dict[str, Any]]:
        """The site's snapshots."""
        answer = await self.caller.json("GET", f"/v1/sites/{int(site_id)}/backups", timeout=timeout)
        snapshots: list[dict[str, Any]] = answer["snapshots"]
        return snapshots

    async def restore_files(
        self, site_id: int, snapshot: str, path: str | None, timeout: float = RESTORE_TIMEOUT
    ) -> dict[str, Any]:
        """Put the snapshot's files (or only C{path}) back in place."""
        answer: dict[str, Any] = await self.caller.json(
            "POST",
            f"/v1/sites/{int(site_id)}/backups/{quote(snapshot, safe='')}/restore-files",
            json={"path": path},
            timeout=timeout,
        )
        return answer

    async def restore_database(
        self,
        site_id: int,
        snapshot: str,
        database: DatabaseSpec,
        timeout: float = RESTORE_TIMEOUT,
    ) -> dict[str, Any]:
        """Load the snapshot's database dump into the site's database."""
        answer: dict[str, Any] = await self.caller.json(
            "POST",
            f"/v1/sites/{int(site_id)}/backups/{quote(snapshot, safe='')}/restore-database",
            json=database.to_json(),
            timeout=timeout,
        )
        return answer

    # -- a site's files as one archive (moving a site) --------------------------------------------

    @staticmethod
    def archive_path(site_id: int) -> str:
        return f"/v1/sites/{int(site_id)}/archive"

    async def export_files(
        self,
        site_id: int,
        write: Callable[[bytes], object],
        clock: IReactorTime,
        timeout: float = FILES_TIMEOUT,
        idle_timeout: float = ARCHIVE_IDLE_TIMEOUT,
    ) -> int:
        """
        Stream the site's whole directory, an uncompressed tar, to C{write} chunk by chunk as
        it arrives (never held whole); the number of bytes. C{timeout} bounds the wait for
        the answer to start, C{idle_timeout} (on C{clock}) each wait for more of it. A
        transfer that breaks off fails: the bytes written so far are not a whole archive.
        """
        path = self.archive_path(site_id)
        response = await self.caller.request("GET", path, timeout=timeout, stream=True)
        reader = _ArchiveReader(write, clock, idle_timeout)
        if response.code >= 400:
            error = bytearray()
            reader.write = error.extend
            response.deliverBody(reader)
            await reader.done
            raise ComponentCallError(path, response.code, bytes(error))
        response.deliverBody(reader)
        return await reader.done

    async def import_files(
        self,
        site_id: int,
        body_file: IO[bytes],
        body_digest: str,
        timeout: float = ARCHIVE_TIMEOUT,
    ) -> dict[str, Any]:
        """
        Replace the site's whole directory with the tar (plain or gzip) in C{body_file} (an
        open file at its start, streamed; C{body_digest} from L{file_digest}). Nothing
        changes unless all of it could be unpacked: C{{"imported", "entries", "bytes"}}.
        """
        answer: dict[str, Any] = await self.caller.json(
            "PUT",
            self.archive_path(site_id),
            body_file=body_file,
            body_digest=body_digest,
            timeout=timeout,
        )
        return answer

    # -- files (streamed by the caller) ---------------------------------------------------------

    @staticmethod
    def files_path(site_id: int, path: str, directory: bool = False) -> str:
        """The orchestrator's path of a site's file (C{directory}: with a trailing slash)."""
        return (
            f"/v1/sites/{int(site_id)}/files/" + quote(path, safe="/") + ("/" if directory else "")
        )

    async def create_file(
        self, site_id: int, path: str, data: bytes, mode: str = "644", timeout: float = 30
    ) -> bool:
        """
        Write a small file at C{path} unless one is there: True if written, False if the
        path already existed (C{409}); other refusals raise.
        """
        try:
            await self.caller.json(
                "PUT",
                self.files_path(site_id, path),
                data=data,
                params={"mode": mode, "exclusive": "1"},
                timeout=timeout,
            )
        except ComponentCallError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def files_request(
        self,
        method: str,
        site_id: int,
        path: str,
        *,
        directory: bool = False,
        json: Any = None,
        params: dict[str, str] | None = None,
        body_file: Any = None,
        body_digest: str | None = None,
    ) -> IResponse:
        """
        A call of the files API, answered whatever its status, its body unread and
        unbuffered: the caller streams it on (L{director.common.client.stream_body}).
        """
        return await self.caller.request(
            method,
            self.files_path(site_id, path, directory),
            json=json,
            params=params,
            timeout=FILES_TIMEOUT,
            body_file=body_file,
            body_digest=body_digest,
            stream=True,
        )

    # -- websockets (opened by their relays) -----------------------------------------------------

    @staticmethod
    def websocket_url(base_url: str, path: str) -> str:
        """The ws:// (wss://) URL of websocket C{path} on the orchestrator at C{base_url}."""
        return "ws" + base_url.rstrip("/")[len("http") :] + path

    @staticmethod
    def whoami_path() -> str:
        return "/ws/whoami"

    @staticmethod
    def terminal_path(site_id: int, shell: TerminalShell = "login") -> str:
        """The terminal's path; the database shell's with C{?shell=database}."""
        path = f"/ws/sites/{int(site_id)}/terminal"
        return path if shell == "login" else f"{path}?shell={parse_shell(shell)}"

    @staticmethod
    def logs_path(site_id: int, tail: int) -> str:
        return f"/ws/sites/{int(site_id)}/logs?tail={int(tail)}"

    @staticmethod
    def files_monitor_path(site_id: int) -> str:
        return f"/ws/sites/{int(site_id)}/files/monitor"

    @staticmethod
    def status_path(site_id: int) -> str:
        return f"/ws/sites/{int(site_id)}/status"

    @staticmethod
    def statuses_path() -> str:
        """Every site's status, for the sites the first message names."""
        return "/ws/sites/status"

    @staticmethod
    def shell_path(site_id: int) -> str:
        """The shell server's bridge into the site's container (token-authenticated)."""
        return f"/ws/shell-server/{int(site_id)}/ssh-shell"


class _ArchiveReader(Protocol):
    """Hands a response body to C{write} as it arrives; gives up after C{idle_timeout}."""

    def __init__(self, write: Callable[[bytes], object], clock: IReactorTime, idle: float) -> None:
        self.write = write
        self.clock = clock
        self.idle = idle
        self.total = 0
        self.done: Deferred[int] = Deferred()
        self._timer: Any = None

    def connectionMade(self) -> None:
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(self.idle, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if not self.done.called:
            self.done.errback(TimeoutError(f"no data for {self.idle} s"))
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        self.write(data)
        self.total += len(data)
        self._arm()

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self.done.called:
            return
        if isinstance(reason, Failure) and reason.check(ResponseDone):
            self.done.callback(self.total)
        else:
            self.done.errback(reason)
