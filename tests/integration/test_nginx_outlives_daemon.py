"""
The data plane outlives the control plane: both nginx instances (the orchestrator's and the
router's front) run on when the daemon is killed, keep serving every request (one in flight
included), are adopted by the next daemon (same pids, configuration checked and reloaded,
later changes go live), and end on a deliberate stop (`director stop`, SIGTERM).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from request_loop import RequestLoop, SlowDownload
from services import api_request
from services import front_get as front
from test_daemon import (
    BIN,
    Daemon,
    init_config,
    nginx_pids,
    start_daemon,
    stop_daemon,
    wait_listening,
)

from director.cli import nginx_instances
from director.common import pidfiles

SITES = "sites.localhost"


class API:
    def __init__(self, daemon: Daemon, token: str) -> None:
        self.url = daemon.config.manager.url
        self.token = token

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        status, content = api_request(self.url, self.token, method, path, body, raw)
        if status >= 400:
            raise AssertionError(f"{method} {path}: {status} {content[:300]!r}")
        return json.loads(content) if content else None

    def finish(self, answer: dict[str, Any], timeout: float = 120) -> None:
        op = answer["operation"]["id"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("GET", f"/api/v1/operations/{op}")["status"]
            if status in ("succeeded", "failed"):
                assert status == "succeeded", self.call("GET", f"/api/v1/operations/{op}")
                return
            assert time.monotonic() < deadline, f"operation {op} still {status}"
            time.sleep(0.1)


def wait_for(check: Any, what: str, timeout: float = 30, details: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{details()}"
        time.sleep(0.05)


def masters(conf: Path) -> list[int]:
    """Every nginx master process running C{conf} (there must never be two)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            command = pidfiles.command_line(int(entry.name))
            if command.startswith("nginx: master process") and f"-c {conf} " in command:
                found.append(int(entry.name))
    return found


def test_killed_daemon_leaves_sites_serving_and_is_adopted(
    public_tmp: Path, docker_swarm: Any
) -> None:
    """
    `twistd -n director` killed with SIGKILL while visitors load a static site through the
    router (and one slow download is in flight): no request fails, the site keeps
    answering. The next daemon adopts both nginx (same pids, no second master), changes
    made after it go live in each, and `director stop` ends the daemon and both nginx.
    """
    config_path = init_config(public_tmp)
    token = subprocess.run(
        [str(BIN / "director"), "token", "create", "admin", "--config", str(config_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    pid_file = public_tmp / "var" / "director.pid"
    daemon = start_daemon(config_path, f"--pidfile={pid_file}")
    c = daemon.config
    ports = [c.manager.port, c.orchestrator.port, c.router.port]
    http_port = c.router.http_port
    try:
        wait_listening(daemon, ports, 60)
        api = API(daemon, token)
        api.finish(api.call("POST", "/api/v1/sites", {"name": "live", "type": "static"}))
        api.call("PUT", "/api/v1/sites/live/files/public/index.html", raw=b"still here")
        big = os.urandom(24 * 1024 * 1024)
        api.call("PUT", "/api/v1/sites/live/files/public/big.bin", raw=big)
        host = f"live.{SITES}"
        wait_for(lambda: front(http_port, host) == (200, b"still here"), "the site")
        before = nginx_pids(c)
        assert None not in before.values(), before

        loop = RequestLoop(http_port, host, b"still here").start()
        slow = SlowDownload(http_port, host, "/big.bin").start()
        try:
            assert slow.started.wait(30) and slow.status == 200, slow.error
            time.sleep(0.5)
            daemon.process.kill()  # no shutdown at all
            daemon.process.wait(15)
            assert slow.running, "the download should still be in flight when the daemon dies"
            time.sleep(1.5)
            assert nginx_pids(c) == before
            slow.join()
        finally:
            loop.stop()
        assert loop.failures == [], loop.failures[:10]
        assert loop.ok > 100, loop.ok
        print(f"across the SIGKILL: {loop.ok} requests, 0 failed, {loop.reconnects} reconnects")
        assert slow.error == "" and slow.received == len(big), (slow.error, slow.received)
        assert slow.digest == hashlib.sha256(big).hexdigest()

        # The next daemon adopts both nginx: same pids, configuration checked and reloaded.
        loop = RequestLoop(http_port, host, b"still here").start()
        try:
            daemon = start_daemon(config_path, f"--pidfile={pid_file}")
            wait_listening(daemon, ports, 60)
            wait_for(lambda: daemon.log_text().count("adopted, configuration") >= 2, "adoption")
            time.sleep(0.5)
        finally:
            loop.stop()
        assert loop.failures == [], loop.failures[:10]
        print(f"across the adoption: {loop.ok} requests, 0 failed, {loop.reconnects} reconnects")
        assert nginx_pids(c) == before
        for what, paths in nginx_instances(c):
            assert masters(paths.conf) == [before[what]], what  # no second nginx
        assert "nginx started" not in daemon.log_text()

        # Changes made afterwards go live: a new site (the router's nginx reloads) and a
        # disabled site (its own file in the orchestrator's nginx).
        api.finish(api.call("POST", "/api/v1/sites", {"name": "later", "type": "static"}))
        api.call("PUT", "/api/v1/sites/later/files/public/index.html", raw=b"later")
        wait_for(lambda: front(http_port, f"later.{SITES}") == (200, b"later"), "the new site")
        api.finish(api.call("PATCH", "/api/v1/sites/live", {"availability": "disabled"}))
        wait_for(lambda: front(http_port, host)[0] == 403, "the disabled site")
        assert nginx_pids(c) == before

        # `director stop`: the daemon by its pid file (a deliberate stop ends its nginx).
        result = subprocess.run(
            [str(BIN / "director"), "stop", "--config", str(config_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"stopping the Director daemon (pid {daemon.process.pid})" in result.stdout
        assert daemon.process.wait(30) in (0, -signal.SIGTERM)
        assert "stopping orchestrator nginx" in daemon.log_text()
        assert "stopping router front nginx" in daemon.log_text()
        for pid in before.values():
            assert pid is not None and not pidfiles.alive(pid)
        assert front(http_port, host) == (0, b"")
    finally:
        stop_daemon(daemon)


def test_nginx_outlives_a_killed_orchestrator_and_ends_with_sigterm(public_tmp: Path) -> None:
    """
    The orchestrator alone: killed outright, its nginx keeps serving; the next orchestrator
    adopts it (same pid); SIGTERM, a deliberate stop, ends it.
    """
    config_path = init_config(public_tmp)
    d = start_daemon(config_path, plugin="director-orchestrator")
    c = d.config
    port = c.orchestrator.nginx_port
    try:
        wait_listening(d, [c.orchestrator.port])
        nginx = nginx_pids(c)["orchestrator nginx"]
        assert nginx is not None
        wait_for(lambda: front(port, "nobody.example")[0] == 404, "nginx")
        page = front(port, "nobody.example")[1]
        loop = RequestLoop(port, "nobody.example", page, status=404).start()
        time.sleep(0.3)
        d.process.kill()
        d.process.wait(10)
        time.sleep(1)
        loop.stop()
        assert pidfiles.alive(nginx)
        assert loop.failures == [] and loop.ok > 20, (loop.ok, loop.failures[:5])

        d = start_daemon(config_path, plugin="director-orchestrator")
        wait_listening(d, [c.orchestrator.port])
        assert f"already running (pid {nginx}): adopted" in d.log_text()
        assert nginx_pids(c)["orchestrator nginx"] == nginx
        d.process.send_signal(signal.SIGTERM)
        d.process.wait(30)
        assert not pidfiles.alive(nginx), "a deliberate stop must end nginx"
    finally:
        stop_daemon(d)
