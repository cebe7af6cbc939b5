"""
The real daemon: `director init` then `twistd -n director` on free loopback ports, walked
with the real signed HTTP and websocket clients over real sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from services import api_request, free_port
from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool

from director.cli import nginx_instances
from director.common import pidfiles
from director.common.client import ComponentClient, connect_websocket
from director.common.config import Config, load_config
from director.common.keys import load_private_key
from director.common.nginx import stop_instance
from director.common.signing import RequestSigner

BIN = Path(sys.executable).parent


@dataclass
class Daemon:
    config: Config
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def init_config(base: Path, *extra: str) -> Path:
    """Write a config with every port free, through the real `director init`."""
    config = base / "director.toml"
    ports = {
        "manager": free_port(),
        "orchestrator": free_port(),
        "router": free_port(),
    }
    settings = [
        f"manager.port={ports['manager']}",
        f'manager.url="http://127.0.0.1:{ports["manager"]}"',
        f"orchestrator.port={ports['orchestrator']}",
        f'orchestrator.url="http://127.0.0.1:{ports["orchestrator"]}"',
        f"orchestrator.nginx_port={free_port()}",
        f"router.port={ports['router']}",
        f'router.url="http://127.0.0.1:{ports["router"]}"',
        f"router.http_port={free_port()}",
        f"router.https_port={free_port()}",
        'shell.host="127.0.0.1"',
        f"shell.port={free_port()}",
        # Tests that want Director's own database servers turn them on, on free ports.
        "orchestrator.bundled_databases=false",
        *extra,
    ]
    args = [
        str(BIN / "director"),
        "init",
        "--config",
        str(config),
        "--state-dir",
        str(base / "var"),
    ]
    for s in settings:
        args += ["--set", s]
    subprocess.run(args, check=True, capture_output=True)
    return config


def start_daemon(
    config_path: Path,
    *twistd_args: str,
    plugin: str = "director",
    env: dict[str, str] | None = None,
) -> Daemon:
    log = config_path.parent / f"{plugin}.log"
    out = log.open("wb")
    process = subprocess.Popen(
        [
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            *twistd_args,
            plugin,
            "--config",
            str(config_path),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=config_path.parent,
        env=env,
    )
    out.close()
    return Daemon(load_config(config_path), process, log)


def wait_listening(daemon: Daemon, ports: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if daemon.process.poll() is not None:
            pytest.fail(f"daemon exited with {daemon.process.returncode}:\n{daemon.log_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"ports {pending} not listening after {timeout}s:\n{daemon.log_text()}")
        if _answers(pending[0]):
            pending.pop(0)
        else:
            time.sleep(0.05)


def _answers(port: int) -> bool:
    """
    The daemon's reactor serves the port: it sends something back (an SSH banner, or an
    HTTP answer to a request). Accepting a connection is not enough: the kernel accepts
    before the reactor runs, and a SIGTERM then would not get a clean shutdown.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.settimeout(0.5)
            try:
                data = conn.recv(16)
            except TimeoutError:
                conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                data = conn.recv(16)
            return bool(data)
    except OSError:
        return False


# twistd re-raises SIGTERM on itself after a clean shutdown, so systemd sees the signal.
CLEAN_EXIT = (0, -signal.SIGTERM)


def stop_daemon(daemon: Daemon, timeout: float = 15.0) -> int:
    """
    SIGTERM (a deliberate stop: the daemon ends its nginx itself); then, by their pid files,
    any nginx a daemon of this config left running (one killed outright, or stopped before
    its signal handlers were in place), so no test's nginx outlives its test.
    """
    try:
        if daemon.process.poll() is None:
            daemon.process.send_signal(signal.SIGTERM)
            try:
                daemon.process.wait(timeout)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()
                pytest.fail(f"daemon did not stop on SIGTERM within {timeout}s")
    finally:
        stop_nginx(daemon.config)
    return daemon.process.returncode


def nginx_pids(config: Config) -> dict[str, int | None]:
    """The running nginx of each instance of C{config} (from their pid files)."""
    return {
        what: pidfiles.running_pid(paths.pid, str(paths.conf))
        for what, paths in nginx_instances(config)
    }


def stop_nginx(config: Config) -> list[int]:
    """Stop, by pid, every nginx of C{config} still running; the pids it stopped."""
    stopped = [stop_instance(paths) for _, paths in nginx_instances(config)]
    return [pid for pid in stopped if pid is not None]


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(prefix="director-daemon-", dir="/tmp"))
    base.chmod(0o755)
    d = start_daemon(init_config(base))
    c = d.config
    wait_listening(d, [c.manager.port, c.orchestrator.port, c.router.port, c.shell.port])
    yield d
    stop_daemon(d)
    shutil.rmtree(base, ignore_errors=True)


class _Clock:
    """Wall-clock time for signers used outside the daemon."""

    def seconds(self) -> float:
        return time.time()


def signer_for(daemon: Daemon, caller: str) -> RequestSigner | None:
    if caller == "anonymous":
        return None
    if caller == "wrong credentials":
        return RequestSigner("manager", Ed25519PrivateKey.generate(), _Clock())  # type: ignore[arg-type]
    key = load_private_key(daemon.config.auth.keys_dir, caller)
    return RequestSigner(caller, key, _Clock())  # type: ignore[arg-type]


CALLERS = ("manager", "shell", "orchestrator", "router", "anonymous", "wrong credentials")
TARGETS = {
    "manager /shell-server/": ("manager", "/shell-server/whoami", {"shell"}),
    "manager other": ("manager", "/healthz", set(CALLERS)),
    "orchestrator HTTP": ("orchestrator", "/v1/whoami", {"manager"}),
    "orchestrator WS": ("orchestrator", "/ws/whoami", {"manager"}),
    "orchestrator /ws/shell-server/": (
        "orchestrator",
        "/ws/shell-server/whoami",
        {"manager", "shell"},
    ),
    "router HTTP": ("router", "/v1/whoami", {"manager"}),
}


def expected(caller: str, allowed: set[str]) -> int:
    if caller in allowed:
        return 200
    return 401 if caller in ("anonymous", "wrong credentials") else 403


async def http_cell(
    reactor: Any, http: HTTPClient, daemon: Daemon, caller: str, component: str, path: str
) -> tuple[int, Any]:
    base = getattr(daemon.config, component).url
    signer = signer_for(daemon, caller)
    response: Any
    if signer is None:
        response = await http.get(base + path)
    else:
        response = await ComponentClient(reactor, signer, component, base, http, 10).request(
            "GET", path
        )
    return response.code, json.loads(await response.content())


async def ws_cell(reactor: Any, daemon: Daemon, caller: str, path: str) -> tuple[int, Any]:
    url = "ws" + daemon.config.orchestrator.url[4:] + path
    signer = signer_for(daemon, caller)
    if signer is None:
        signer = RequestSigner("anonymous", Ed25519PrivateKey.generate(), _Clock())  # type: ignore[arg-type]
    try:
        proto = await connect_websocket(reactor, signer, "orchestrator", url, timeout=10)
    except ConnectionError as e:
        # The handshake was refused: the status code is in the reason.
        for code in (401, 403):
            if str(code) in str(e):
                return code, None
        raise
    message = json.loads(await proto.next_message(10))
    await proto.closed
    return 200, message


@pytest_twisted.ensureDeferred
async def test_access_table_over_real_sockets(daemon: Daemon) -> None:
    """
    Every caller x target cell over real HTTP and websocket connections: allowed callers
    are recognised, unsigned or wrongly signed requests get 401, other components 403.
    """
    from twisted.internet import reactor

    pool = HTTPConnectionPool(reactor, persistent=False)
    http = HTTPClient(Agent(reactor, pool=pool))
    failures: list[tuple[Any, ...]] = []
    for target, (component, path, allowed) in TARGETS.items():
        for caller in CALLERS:
            if path.startswith("/ws/"):
                if caller == "anonymous":
                    # A browser-style websocket with no signature at all.
                    code, body = await http_cell(reactor, http, daemon, caller, component, path)
                else:
                    code, body = await ws_cell(reactor, daemon, caller, path)
            else:
                code, body = await http_cell(reactor, http, daemon, caller, component, path)
            want = expected(caller, allowed)
            if code != want:
                failures.append((target, caller, code, want, body))
            elif want == 200 and path != "/healthz" and body.get("caller") != caller:
                failures.append((target, caller, "caller", body))
    await pool.closeCachedConnections()
    assert failures == []


@pytest_twisted.ensureDeferred
async def test_replayed_request_refused_over_the_wire(daemon: Daemon) -> None:
    """A captured signed request sent again to the orchestrator is refused."""
    from twisted.internet import reactor

    pool = HTTPConnectionPool(reactor, persistent=False)
    http = HTTPClient(Agent(reactor, pool=pool))
    signer = signer_for(daemon, "manager")
    assert signer is not None
    headers: Any = {k: [v] for k, v in signer.headers("orchestrator", "GET", "/v1/whoami").items()}
    url = daemon.config.orchestrator.url + "/v1/whoami"
    first = await http.get(url, headers=headers)
    await first.content()
    second = await http.get(url, headers=headers)
    body = json.loads(await second.content())
    await pool.closeCachedConnections()
    assert (first.code, second.code, body["error"]) == (200, 401, "replayed")


def test_check_command_and_ssh_banner(daemon: Daemon) -> None:
    """`director check` finds every component healthy and accepting the manager's key."""
    assert daemon.config.source is not None
    result = subprocess.run(
        [str(BIN / "director"), "check", "--config", str(daemon.config.source)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SSH-2.0-" in result.stdout
    assert result.stdout.count("ok ") == 7


def test_starts_logs_listeners_and_stops_on_sigterm(public_tmp: Path) -> None:
    """Each plugin starts, logs its listeners, and exits 0 on SIGTERM."""
    config_path = init_config(public_tmp)
    config = load_config(config_path)
    for plugin, ports in {
        "director-manager": [config.manager.port],
        "director-orchestrator": [config.orchestrator.port],
        "director-router": [config.router.port],
        "director-shell": [config.shell.port],
    }.items():
        d = start_daemon(config_path, plugin=plugin)
        wait_listening(d, ports)
        assert stop_daemon(d) in CLEAN_EXIT, d.log_text()
        log = d.log_text()
        assert f"listening on 127.0.0.1:{ports[0]}" in log
        assert "Server Shut Down" in log


def test_json_log_format(public_tmp: Path) -> None:
    """--log-format json writes one JSON object per line."""
    config_path = init_config(public_tmp)
    config = load_config(config_path)
    d = start_daemon(config_path, plugin="director-router")
    d.process.send_signal(signal.SIGTERM)
    d.process.wait(15)
    d = start_daemon(
        config_path, "--logger", "director.common.logging.json_observer", plugin="director-router"
    )
    wait_listening(d, [config.router.port])
    assert stop_daemon(d) in CLEAN_EXIT
    records = [json.loads(line) for line in d.log_text().splitlines() if line.strip()]
    assert any("router API listening" in r["message"] for r in records)
    assert all({"time", "level", "namespace", "message"} <= set(r) for r in records)


def test_log_format_option(public_tmp: Path) -> None:
    """The plugin's own --log-format json option switches twistd to JSON lines."""
    config_path = init_config(public_tmp)
    config = load_config(config_path)
    log = public_tmp / "out.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "-n",
                "--pidfile=",
                "director-router",
                "--config",
                str(config_path),
                "--log-format",
                "json",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    d = Daemon(config, process, log)
    wait_listening(d, [config.router.port])
    assert stop_daemon(d) in CLEAN_EXIT
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines and all(json.loads(line)["message"] is not None for line in lines)


def run_to_exit(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_config_is_one_line(public_tmp: Path) -> None:
    """A malformed config stops start-up with one line naming the key, and no traceback."""
    bad = public_tmp / "bad.toml"
    bad.write_text("[manager]\nport = 'eighty'\n")
    result = run_to_exit(["director", "--config", str(bad)], public_tmp)
    assert result.returncode == 1
    assert "manager.port: expected an integer" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_state_and_keys_is_one_line(public_tmp: Path) -> None:
    """A config pointing at a state directory with no keys says to run `director init`."""
    config = public_tmp / "d.toml"
    config.write_text(f'[auth]\nkeys_dir = "{public_tmp}/nowhere"\n')
    result = run_to_exit(["director-orchestrator", "--config", str(config)], public_tmp)
    assert result.returncode == 1
    assert "director init" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_port_in_use_is_one_line(public_tmp: Path) -> None:
    """A port already taken stops start-up with one line naming the setting to change."""
    config_path = init_config(public_tmp)
    config = load_config(config_path)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", config.router.port))
    blocker.listen()
    try:
        result = run_to_exit(["director-router", "--config", str(config_path)], public_tmp)
    finally:
        blocker.close()
    # By then twistd has routed stderr into its log on stdout.
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "director: router API: cannot listen on 127.0.0.1" in output
    assert "Address already in use" in output
    assert "router.port" in output
    assert "Traceback" not in result.stderr + result.stdout


def test_plugins_listed_by_twistd() -> None:
    """`twistd --help` from the project's environment lists all five plugins."""
    out = subprocess.run([str(BIN / "twistd"), "--help"], capture_output=True, text=True).stdout
    for name in (
        "director ",
        "director-manager",
        "director-orchestrator",
        "director-router",
        "director-shell",
    ):
        assert name in out
    assert os.path.exists(BIN / "director")


def _api(config: Config, token: str, method: str, path: str, body: Any = None) -> Any:
    status, content = api_request(config.manager.url, token, method, path, body, timeout=30)
    assert status < 400, (method, path, status, content[:300])
    return json.loads(content)


ACTION_LINE = r"operation (\d+) \(create_site\): (\w+) by (manager-[0-9a-f]+)/([0-9a-f]+)"


def test_restarted_manager_resumes_its_operations_at_once(public_tmp: Path) -> None:
    """
    Ten site creations in flight, the manager killed with SIGKILL in the middle of one of
    its actions: started again, it takes back the operations it held (same identity, a new
    incarnation) at once rather than after their leases (60 s) run out, and every action
    runs once, apart from the one the kill interrupted, which runs again.
    """
    import re

    config_path = init_config(public_tmp)
    config = load_config(config_path)
    assert config.manager.operation_lease == 60.0
    token = subprocess.run(
        [str(BIN / "director"), "token", "create", "admin", "--config", str(config_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    running: list[Daemon] = []
    orchestrator = start_daemon(config_path, plugin="director-orchestrator")
    running.append(orchestrator)
    try:
        wait_listening(orchestrator, [config.orchestrator.port])
        router = start_daemon(config_path, plugin="director-router")
        running.append(router)
        wait_listening(router, [config.router.port])
        manager = start_daemon(config_path, plugin="director-manager")
        running.append(manager)
        wait_listening(manager, [config.manager.port])
        # The orchestrator stops answering: the first operation's first action is in flight
        # (its lease renewed) when the manager is killed.
        os.kill(orchestrator.process.pid, signal.SIGSTOP)
        try:
            ops = [
                _api(
                    config,
                    token,
                    "POST",
                    "/api/v1/sites",
                    {"name": f"resume-{i}", "type": "static"},
                )["operation"]["id"]
                for i in range(10)
            ]
            deadline = time.monotonic() + 20
            while True:
                first = _api(config, token, "GET", f"/api/v1/operations/{ops[0]}")
                if first["actions"][0]["status"] == "running":
                    break
                assert time.monotonic() < deadline, first
                time.sleep(0.1)
            manager.process.kill()
            manager.process.wait(10)
        finally:
            os.kill(orchestrator.process.pid, signal.SIGCONT)
        before = manager.log_text()
        manager.log.rename(manager.log.with_suffix(".killed.log"))
        restarted_at = time.monotonic()
        manager = start_daemon(config_path, plugin="director-manager")
        running.append(manager)
        wait_listening(manager, [config.manager.port])
        # Far less than the 60 s lease the killed manager had just renewed.
        deadline = restarted_at + 15
        statuses: dict[int, str] = {}
        while time.monotonic() < deadline:
            statuses = {
                op: _api(config, token, "GET", f"/api/v1/operations/{op}")["status"] for op in ops
            }
            if all(s in ("succeeded", "failed") for s in statuses.values()):
                break
            time.sleep(0.2)
        took = time.monotonic() - restarted_at
        assert all(s == "succeeded" for s in statuses.values()), (
            f"{took:.1f}s after the restart: {statuses}\n{manager.log_text()}"
        )
        after = manager.log_text()
        runs_before = re.findall(ACTION_LINE, before)
        runs_after = re.findall(ACTION_LINE, after)
        # Killed in the first operation's first action; nothing else had started.
        assert [(int(o), a) for o, a, _, _ in runs_before] == [(ops[0], "apply_orchestrator")]
        # The restart: the same identity, another incarnation, each action once.
        workers = {(i, n) for _, _, i, n in runs_before + runs_after}
        assert len({i for i, _ in workers}) == 1 and len(workers) == 2, workers
        assert sorted((int(o), a) for o, a, _, _ in runs_after) == sorted(
            (op, action) for op in ops for action in ("apply_orchestrator", "apply_router")
        )
        for i in range(10):
            site = _api(config, token, "GET", f"/api/v1/sites/resume-{i}")
            assert site["name"] == f"resume-{i}"
    finally:
        for d in reversed(running):
            stop_daemon(d)
