"""
An orchestrator in memory, at the wire: a L{Caller} that answers the API's paths the way
L{director.orchestrator.web.OrchestratorAPI} does, and keeps the sites, databases, images and
backups it was given. The contract suite (L{director.testing.orchestrator_contract}) runs the
same calls against it and against the real app, so manager tests that use it can notice the
manager calling the orchestrator wrongly.

It records every call as C{(method, path, kwargs)} in C{calls}. C{answers} answers them
(C{serve}, the stateful orchestrator, unless a test puts a function of its own in its place,
say to make a call fail).
"""

from __future__ import annotations

import io
import json as jsonlib
import re
import tarfile
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from director.common.client import ComponentCallError
from director.contract.errors import ValidationError
from director.contract.images import validate_setup_commands
from director.orchestrator.databases import DATABASE_ERROR_STATUS, DatabaseError, DatabaseHost
from director.orchestrator.engine_health import engine_report
from director.orchestrator.files import LAYOUT, FileError
from director.orchestrator.images import CUSTOM_TAG
from director.orchestrator.site_archive import (
    ArchivePlan,
    BadArchive,
    open_archive,
    require_end,
)
from director.orchestrator.sites import IMAGE_NAME, HostedSite, parse_site, site_summary
from director.testing.fake_databases import FakeDatabaseAdmin

URL = "http://fake-orchestrator"


def refusal(path: str, status: int, code: str, message: str) -> ComponentCallError:
    """What L{ComponentClient.json} raises for an error answer."""
    body = jsonlib.dumps({"error": code, "message": message}).encode()
    return ComponentCallError(URL + path, status, body)


class FakeOrchestrator:
    """See the module's docstring. C{images}: the images that exist (None: any)."""

    def __init__(self, images: Iterable[str] | None = None, disk_quota_mb: int = 0) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.answers: Callable[[str, str, dict[str, Any]], Any] = self.serve
        self.images = set(images) if images is not None else None
        self.disk_quota_mb = disk_quota_mb
        #: site id -> the spec last put, as sent; and as the orchestrator read it
        self.specs: dict[int, dict[str, Any]] = {}
        self.sites: dict[int, HostedSite] = {}
        self.removed: list[tuple[int, bool]] = []  # (site id, purged)
        self.restarts: list[int] = []
        self.built: dict[str, dict[str, Any]] = {}  # tag -> the build request
        #: text that makes a snippet fail the fake's `nginx -t`
        self.bad_snippets: list[str] = ["bogus_directive"]
        self.failing_builds: set[str] = set()  # parents whose builds fail (422)
        self.task_result: dict[str, Any] = {
            "exit_code": 0,
            "timed_out": False,
            "output": "",
            "truncated": False,
        }
        self.disk_used: dict[int, int] = {}
        #: (kind, admin host, admin port) -> the server's users and databases
        self.servers: dict[tuple[str, str, int], FakeDatabaseAdmin] = {}
        self.snapshots: dict[int, list[dict[str, Any]]] = {}
        self.restored: list[tuple[int, str, str]] = []  # (site id, snapshot, "files"|"database")
        #: site id -> its files as an import left them (path parts -> entry)
        self.files: dict[int, dict[tuple[str, ...], FakeEntry]] = {}
        #: When true, its Docker engine does not answer (the process still does).
        self.engine_down = False

    # -- Caller ----------------------------------------------------------------------------------

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        return self.answers(method, path, kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        match = re.fullmatch(r"/v1/sites/(\d+)/archive", path)
        if method == "GET" and match:
            try:
                return FakeResponse(200, self._export(path, int(match.group(1))))
            except Exception as e:  # the error answer, as the real one gives it
                if isinstance(e, ComponentCallError):
                    return FakeResponse(e.status, e.body)
                raise
        raise NotImplementedError("file relays are tested against the real orchestrator")

    # -- what tests look at ------------------------------------------------------------------------

    def service(self, site_id: int) -> dict[str, Any] | None:
        """The spec the site was last put with (None: the orchestrator has no such site)."""
        return self.specs.get(site_id)

    def server(self, host: dict[str, Any]) -> FakeDatabaseAdmin:
        """The database server C{host} (a host dict as the manager sends it) names."""
        key = (str(host["kind"]), str(host["admin_host"]), int(host["admin_port"]))
        if key not in self.servers:
            self.servers[key] = FakeDatabaseAdmin(host["kind"])
        return self.servers[key]

    # -- the API -----------------------------------------------------------------------------------

    def serve(self, method: str, path: str, kwargs: dict[str, Any]) -> Any:
        body = kwargs.get("json")
        params = kwargs.get("params") or {}
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/v1/whoami", lambda: {"component": "orchestrator", "caller": "manager"}),
            ("GET", r"/v1/health", self._health),
            ("GET", r"/v1/sites", self._list),
            ("PUT", r"/v1/sites/(\d+)", lambda i: self._put(path, int(i), body)),
            ("GET", r"/v1/sites/(\d+)", lambda i: self._status(path, int(i))),
            (
                "POST",
                r"/v1/sites/(\d+)/nginx-check",
                lambda i: self._check_nginx(path, int(i), body),
            ),
            ("DELETE", r"/v1/sites/(\d+)", lambda i: self._remove(int(i), params)),
            ("POST", r"/v1/sites/(\d+)/restart", lambda i: self._restart(path, int(i))),
            ("POST", r"/v1/sites/(\d+)/tasks/run", lambda i: self._run(path, int(i), body)),
            ("GET", r"/v1/disk", self._disk),
            ("PUT", r"/v1/sites/(\d+)/archive", lambda i: self._import(path, int(i), kwargs)),
            ("POST", r"/v1/images/build", lambda: self._build(path, body)),
            (
                "PUT",
                r"/v1/sites/(\d+)/files/([^/].*)",
                lambda i, p: self._create_file(path, int(i), p, kwargs),
            ),
            ("PUT", r"/v1/databases", lambda: self._put_database(path, body)),
            ("POST", r"/v1/databases/delete", lambda: self._drop_database(path, body)),
            ("POST", r"/v1/databases/query", lambda: self._query(path, body)),
            ("POST", r"/v1/sites/(\d+)/backups", lambda i: self._backup(path, int(i), body)),
            ("GET", r"/v1/sites/(\d+)/backups", lambda i: self._backups(int(i))),
            (
                "POST",
                r"/v1/sites/(\d+)/backups/([^/]+)/restore-(files|database)",
                lambda i, s, what: self._restore(path, int(i), s, what, body),
            ),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return handler(*match.groups())
        raise refusal(path, 404, "not_found", f"no route {method} {path}")

    def _health(self) -> dict[str, Any]:
        if self.engine_down:
            error = "the Docker engine does not answer: the fake engine is down"
            return engine_report(error, node="fake-node")
        return engine_report(None, "fake", "fake-node", "active", "ready", "active")

    def _site(self, path: str, site_id: int) -> HostedSite:
        if site_id not in self.sites:
            raise refusal(path, 404, "unknown_site", f"site {site_id} is not on this orchestrator")
        return self.sites[site_id]

    def _upstream(self, site: HostedSite) -> list[str]:
        if site.type != "dynamic" or site.availability != "enabled":
            return []
        return [f"10.0.{site.id // 250}.{site.id % 250 + 2}"]

    def _list(self) -> dict[str, Any]:
        return {
            "sites": [
                {**site_summary(s, self._upstream(s)), "healthy": True}
                for _, s in sorted(self.sites.items())
            ]
        }

    def _put(self, path: str, site_id: int, body: Any) -> dict[str, Any]:
        try:
            site = parse_site(site_id, body)
        except ValidationError as e:  # SiteError and the contract's own refusals
            raise refusal(path, 400, "invalid", str(e)) from None
        for other in self.sites.values():
            if other.name == site.name and other.id != site.id:
                message = f"name: {site.name} is already used by site {other.id}"
                raise refusal(path, 400, "invalid", message)
        if site.type == "dynamic" and self.images is not None and site.image not in self.images:
            message = f"image: image {site.image} does not exist on this orchestrator"
            raise refusal(path, 400, "invalid", message)
        self.sites[site_id] = site
        self.specs[site_id] = body
        return site_summary(site, self._upstream(site))

    def _status(self, path: str, site_id: int) -> dict[str, Any]:
        site = self._site(path, site_id)
        running = site.availability == "enabled"
        return {
            "id": site.id,
            "name": site.name,
            "type": site.type,
            "availability": site.availability,
            "running": running,
            "starting": False,
            "start_time": "2026-01-01T00:00:00Z" if running and site.type == "dynamic" else None,
            "run_sh_exists": False,
            "error": None,
            "log": [],
        }

    def _remove(self, site_id: int, params: dict[str, str]) -> dict[str, Any]:
        purge = params.get("purge") in ("1", "true", "yes")
        existed = self.sites.pop(site_id, None) is not None
        self.specs.pop(site_id, None)
        if purge:
            self.files.pop(site_id, None)
        self.removed.append((site_id, purge))
        return {"removed": existed}

    def _restart(self, path: str, site_id: int) -> dict[str, Any]:
        site = self._site(path, site_id)
        if site.type == "dynamic":
            self.restarts.append(site_id)
        return site_summary(site, self._upstream(site))

    def _run(self, path: str, site_id: int, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise refusal(path, 400, "bad_request", 'expected {"command", "timeout", "max_output"}')
        command, timeout = body.get("command"), body.get("timeout", 300)
        if not isinstance(command, str) or not command.strip() or "\x00" in command:
            raise refusal(path, 400, "bad_request", "command must be a shell command")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise refusal(path, 400, "bad_request", "timeout must be a number of seconds")
        if not 0 < timeout <= 86400:
            raise refusal(path, 400, "bad_request", "timeout must be a number of seconds")
        site = self._site(path, site_id)
        if site.availability != "enabled":
            message = f"site {site_id} is {site.availability}: its tasks do not run"
            raise refusal(path, 409, "not_served", message)
        return dict(self.task_result)

    def _disk(self) -> dict[str, Any]:
        sites = []
        for site in self.sites.values():
            quota = site.limits.disk_quota_mb or self.disk_quota_mb or None
            sites.append(
                {
                    "id": site.id,
                    "disk_usage_bytes": self.disk_used.get(site.id),
                    "disk_quota_bytes": quota * 1024 * 1024 if quota else None,
                }
            )
        return {"sites": sites}

    def _build(self, path: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise refusal(path, 400, "bad_request", 'expected {"tag", "parent", "packages"}')
        tag, parent = body.get("tag"), body.get("parent")
        packages = body.get("packages", [])
        if not isinstance(tag, str) or not CUSTOM_TAG.fullmatch(tag):
            raise refusal(path, 400, "bad_tag", "tag must look like director/site-<id>:<n>")
        if not isinstance(parent, str) or not IMAGE_NAME.fullmatch(parent):
            raise refusal(path, 400, "bad_parent", "parent must be an image from the catalogue")
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            message = "packages must be a list of Debian package names"
            raise refusal(path, 400, "bad_packages", message)
        try:
            validate_setup_commands(body.get("setup_commands"))
        except ValidationError as e:
            raise refusal(path, 400, "bad_packages", e.reason) from None
        if self.images is not None and parent not in self.images:
            raise refusal(path, 404, "bad_parent", f"image {parent} does not exist")
        if parent in self.failing_builds:
            raise refusal(
                path, 422, "build_failed", "the build failed: E: Unable to locate package"
            )
        self.built[tag] = body
        if self.images is not None:
            self.images.add(tag)
        return {"tag": tag, "log": ""}

    def _check_nginx(self, path: str, site_id: int, body: Any) -> dict[str, Any]:
        """A spec's server block checked: C{bad_snippets} are what this fake's nginx refuses."""
        try:
            site = parse_site(site_id, body)
        except ValidationError as e:
            raise refusal(path, 400, "invalid", str(e)) from None
        if site.nginx_snippet and any(bad in site.nginx_snippet for bad in self.bad_snippets):
            message = f'[emerg] unknown directive in the snippet: "{site.nginx_snippet.split()[0]}"'
            raise refusal(path, 400, "bad_nginx_snippet", message)
        return {"ok": True}

    def _create_file(
        self, path: str, site_id: int, name: str, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """A small file written whole (only C{exclusive} writes: what the manager sends)."""
        self._site(path, site_id)
        params = kwargs.get("params") or {}
        entries = self._site_files(site_id)
        key = tuple(name.split("/"))
        if key in entries and params.get("exclusive"):
            raise refusal(path, 409, "exists", f"{name}: already exists")
        mode = int(params.get("mode", "644"), 8)
        entries[key] = FakeEntry("file", mode, 0.0, kwargs.get("data") or b"")
        return {"created": name}

    def _database(self, path: str, body: Any) -> tuple[FakeDatabaseAdmin, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("host"), dict):
            message = 'expected {"host": {...}, "name", "username", ...}'
            raise refusal(path, 400, "bad_request", message)
        host = body["host"]
        try:
            server = DatabaseHost(
                kind=host["kind"],
                admin_host=str(host["admin_host"]),
                admin_port=int(host["admin_port"]),
                admin_user=str(host["admin_user"]),
                admin_password=str(host["admin_password"]),
                container_host=host.get("container_host"),
                container_port=host.get("container_port"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise refusal(path, 400, "bad_request", f"database host: {e}") from None
        site_db = server.site_database(
            str(body.get("name", "")), str(body.get("username", "")), str(body.get("password", ""))
        )
        return self.server(host), site_db

    def _admin(self, path: str, d: Deferred[Any]) -> Any:
        """The fake server's answer (it answers at once), or its refusal as the API's."""
        out: list[Any] = []
        d.addBoth(out.append)
        (result,) = out
        if isinstance(result, Failure):
            e = result.value
            if isinstance(e, DatabaseError):
                raise refusal(path, DATABASE_ERROR_STATUS.get(e.code, 400), e.code, e.message)
            result.raiseException()
        return result

    def _put_database(self, path: str, body: Any) -> dict[str, Any]:
        admin, site_db = self._database(path, body)
        self._admin(path, admin.create(site_db))
        return {"environment": site_db.environment()}

    def _drop_database(self, path: str, body: Any) -> dict[str, Any]:
        admin, site_db = self._database(path, body)
        self._admin(path, admin.drop(site_db.name, site_db.username))
        return {"dropped": site_db.name}

    def _query(self, path: str, body: Any) -> Any:
        admin, site_db = self._database(path, body)
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise refusal(path, 400, "bad_request", "sql must be one SQL statement")
        timeout, max_rows = body.get("timeout", 10), body.get("max_rows", 1000)
        return self._admin(path, admin.query(site_db, sql, float(timeout), max_rows))

    def _backup(self, path: str, site_id: int, body: Any) -> dict[str, Any]:
        self._site(path, site_id)
        database = (body or {}).get("database")
        if database:
            self._database(path, database)
        snapshot = {
            "id": f"{len(self.calls):08x}",
            "time": "2026-01-01T00:00:00Z",
            "database": bool(database),
        }
        self.snapshots.setdefault(site_id, []).insert(0, snapshot)
        return {"snapshot": snapshot["id"], "bytes": 0}

    def _backups(self, site_id: int) -> dict[str, Any]:
        return {"snapshots": list(self.snapshots.get(site_id, []))}

    def _restore(self, path: str, site_id: int, snapshot: str, what: str, body: Any) -> Any:
        found = next((s for s in self.snapshots.get(site_id, []) if s["id"] == snapshot), None)
        if found is None:
            raise refusal(path, 404, "backup_not_found", f"no snapshot {snapshot} of the site")
        if what == "database":
            self._database(path, body)
            if not found["database"]:
                raise refusal(path, 404, "no_database_backup", "the backup has no database")
        self.restored.append((site_id, snapshot, what))
        return {"restored": snapshot}

    # -- a site's files as one archive ---------------------------------------------------------

    def _quota(self, site: HostedSite) -> int | None:
        quota = site.limits.disk_quota_mb or self.disk_quota_mb or None
        return quota * 1024 * 1024 if quota else None

    def _site_files(self, site_id: int) -> dict[tuple[str, ...], FakeEntry]:
        now = time.time()
        layout: dict[tuple[str, ...], FakeEntry] = {
            (n,): FakeEntry("dir", 0o755 if n == "public" else 0o700, now) for n in LAYOUT
        }
        return self.files.setdefault(site_id, layout)

    def _export(self, path: str, site_id: int) -> bytes:
        self._site(path, site_id)
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for parts, entry in sorted(self._site_files(site_id).items()):
                info = tarfile.TarInfo("/".join(parts))
                info.mode, info.mtime = entry.mode, int(entry.mtime)
                if entry.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    archive.addfile(info)
                elif entry.kind == "link":
                    info.type, info.linkname = tarfile.SYMTYPE, entry.target
                    archive.addfile(info)
                else:
                    info.size = len(entry.data)
                    archive.addfile(info, io.BytesIO(entry.data))
        return out.getvalue()

    def _import(self, path: str, site_id: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The real import's checks (L{ArchivePlan}), unpacked into memory, swapped in."""
        site = self._site(path, site_id)
        source = kwargs.get("body_file")
        if source is None or not kwargs.get("body_digest"):
            raise refusal(path, 401, "bad_signature", "an archive upload is a signed file body")
        plan = ArchivePlan(self._quota(site))
        files: dict[tuple[str, ...], FakeEntry] = {}
        now = time.time()
        try:
            try:
                with open_archive(source) as archive:
                    for info in archive:
                        member = plan.admit(info)
                        if member is None:
                            continue
                        for i in range(1, len(member.parts)):
                            files.setdefault(member.parts[:i], FakeEntry("dir", 0o755, now))
                        data = b""
                        if member.kind == "file":
                            reader = archive.extractfile(info)
                            data = reader.read() if reader is not None else b""
                        files[member.parts] = FakeEntry(
                            member.kind, member.mode, member.mtime, data, member.target
                        )
                    require_end(archive)
                plan.check_links()
            except (tarfile.TarError, EOFError, OSError, zlib.error, UnicodeError) as e:
                raise BadArchive(f"not a complete tar archive: {e}") from None
        except FileError as e:
            raise refusal(path, e.status, e.code, e.message) from None
        for name in LAYOUT:
            files.setdefault((name,), FakeEntry("dir", 0o755 if name == "public" else 0o700, now))
        self.files[site_id] = files
        return {"imported": site_id, "entries": plan.entries, "bytes": plan.used}


@dataclass(frozen=True)
class FakeEntry:
    """One entry of a site's files in the fake: a directory, a file or a symbolic link."""

    kind: str
    mode: int
    mtime: float
    data: bytes = b""
    target: str = ""


class FakeResponse:
    """A streamed answer as L{ComponentClient.request} gives it, with its body at once."""

    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self.body = body

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(_NoTransport())
        if self.body:
            protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class _NoTransport:
    def stopProducing(self) -> None:
        pass
