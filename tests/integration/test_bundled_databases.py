"""
Databases out of the box: `director init` and the all-in-one daemon, with nothing else set
up, give a site a PostgreSQL and then a MySQL database on the servers Director runs itself;
a killed daemon's servers are adopted by the next run, and a deliberate stop ends them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services import DOCKER_BRIDGE_IP, api_request, free_port, pid_alive
from test_daemon import BIN, Daemon, init_config, start_daemon, stop_daemon, wait_listening

RUN_SH = b'#!/bin/sh\nexec python3 -m http.server "$PORT" --directory /site/public\n'


def wait(check: Callable[[], bool], what: str, timeout: float, details: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{details()}")
        time.sleep(0.2)


class API:
    def __init__(self, daemon: Daemon, token: str) -> None:
        self.daemon = daemon
        self.token = token

    def __call__(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        status, content = api_request(
            self.daemon.config.manager.url, self.token, method, path, body, raw
        )
        try:
            return status, json.loads(content)
        except ValueError:
            return status, content

    def ok(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        status, answer = self(method, path, body, raw)
        assert status in (200, 201, 202), (method, path, status, answer)
        return answer

    def finish(self, answer: Any, timeout: float = 180) -> None:
        """Wait for the operation C{answer} started; it must succeed."""
        op_id = answer["operation"]["id"]
        result: dict[str, Any] = {}

        def done() -> bool:
            result.update(self.ok("GET", f"/api/v1/operations/{op_id}"))
            return result["status"] in ("succeeded", "failed")

        wait(done, f"operation {op_id}", timeout, self.daemon.log_text)
        assert result["status"] == "succeeded", (result, self.daemon.log_text()[-5000:])


def server_pids(var: Path) -> dict[str, int | None]:
    """The bundled servers' pids from their pid files, if those processes run."""
    files = {
        "postgres": var / "databases" / "postgres" / "data" / "postmaster.pid",
        "mysql": var / "databases" / "mysql" / "run" / "mariadbd.pid",
    }
    pids: dict[str, int | None] = {}
    for kind, path in files.items():
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        pids[kind] = pid if pid is not None and pid_alive(pid) else None
    return pids


def reach_from_container(site_id: int) -> subprocess.CompletedProcess[str]:
    """Connect, from the site's running container, to where DIRECTOR_DATABASE_URL points."""
    container = ""

    def found() -> bool:
        nonlocal container
        container = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=director.site={site_id}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")[0]
        return bool(container)

    wait(found, "the site's container", 60)
    return subprocess.run(
        [
            "docker",
            "exec",
            container,
            "python3",
            "-c",
            "import os, socket, urllib.parse as u\n"
            "url = u.urlsplit(os.environ['DIRECTOR_DATABASE_URL'])\n"
            "socket.create_connection((url.hostname, url.port), timeout=5).close()\n"
            "print(url.scheme, url.hostname, url.port)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_site_databases_out_of_the_box(public_tmp: Path, docker_swarm: Any) -> None:
    pg_port = free_port(also_bind=[DOCKER_BRIDGE_IP])
    my_port = free_port(also_bind=[DOCKER_BRIDGE_IP])
    config_path = init_config(
        public_tmp,
        "orchestrator.bundled_databases=true",
        f"orchestrator.postgres_port={pg_port}",
        f"orchestrator.mysql_port={my_port}",
        "manager.bcrypt_rounds=4",
        "manager.write_burst=100000.0",
    )
    var = public_tmp / "var"
    token = subprocess.run(
        [str(BIN / "director"), "token", "create", "admin", "--config", str(config_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    daemon = start_daemon(config_path)
    site_id = None
    try:
        c = daemon.config
        wait_listening(daemon, [c.manager.port, c.orchestrator.port, c.router.port], 60)
        api = API(daemon, token)
        hosts = api.ok("GET", "/api/v1/database-hosts")["hosts"]
        assert sorted((h["kind"], h["admin_port"]) for h in hosts) == [
            ("mysql", my_port),
            ("postgres", pg_port),
        ]
        api.finish(api.ok("POST", "/api/v1/sites", {"name": "dbsite", "type": "dynamic"}))
        site_id = api.ok("GET", "/api/v1/sites/dbsite")["id"]
        api.ok("PUT", "/api/v1/sites/dbsite/files/run.sh?mode=755", raw=RUN_SH)
        api.finish(api.ok("POST", "/api/v1/sites/dbsite/restart"))

        # PostgreSQL, with no database host set up by hand.
        api.finish(api.ok("POST", "/api/v1/sites/dbsite/database", {"type": "postgres"}))
        database = api.ok("GET", "/api/v1/sites/dbsite/database")
        assert database["port"] == pg_port and database["host"] == DOCKER_BRIDGE_IP, database
        for sql in ("create table visits (n int)", "insert into visits values (7)"):
            api.ok("POST", "/api/v1/sites/dbsite/database/query", {"sql": sql})
        rows = api.ok(
            "POST", "/api/v1/sites/dbsite/database/query", {"sql": "select n from visits"}
        )["rows"]
        assert rows == [[7]]
        probe = reach_from_container(site_id)
        assert probe.stdout.split() == ["postgresql", DOCKER_BRIDGE_IP, str(pg_port)], probe

        # Then MySQL (MariaDB) instead.
        api.finish(api.ok("DELETE", "/api/v1/sites/dbsite/database"))
        api.finish(api.ok("POST", "/api/v1/sites/dbsite/database", {"type": "mysql"}))
        rows = api.ok("POST", "/api/v1/sites/dbsite/database/query", {"sql": "select 6*7"})["rows"]
        assert rows == [[42]]
        probe = reach_from_container(site_id)
        assert probe.stdout.split() == ["mysql", DOCKER_BRIDGE_IP, str(my_port)], probe

        # A killed daemon leaves the servers serving; the next run adopts them.
        before = server_pids(var)
        assert None not in before.values(), before
        daemon.process.kill()
        daemon.process.wait(15)
        assert server_pids(var) == before
        daemon = start_daemon(config_path)
        wait_listening(daemon, [c.manager.port, c.orchestrator.port, c.router.port], 60)
        wait(lambda: daemon.log_text().count("adopted") >= 2, "adoption", 30, daemon.log_text)
        assert server_pids(var) == before
        rows = api.ok("POST", "/api/v1/sites/dbsite/database/query", {"sql": "select 1"})["rows"]
        assert rows == [[1]]
        api.finish(api.ok("DELETE", "/api/v1/sites/dbsite"))
        site_id = None
    finally:
        stop_daemon(daemon, timeout=90)
        if site_id is not None:
            subprocess.run(["docker", "service", "rm", f"site_{site_id}"], capture_output=True)
        left = server_pids(var)
        for pid in left.values():
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
    # A deliberate stop ends both servers.
    assert left == {"postgres": None, "mysql": None}
