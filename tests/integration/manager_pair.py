"""
Two real manager processes on one PostgreSQL and one Redis, in front of one real
orchestrator and one real router (each a twistd process). Both managers have the same
settings (the public manager.url included, as behind the routers) except their port and
their state directory, so their identity. Used by tests/integration/test_several_managers.py
and bench/two_managers.py; its L{Process} (a twistd component), L{init_config},
L{admin_token} and L{remove_site_services} also by test_manager_routers.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import psycopg
from services import PostgresServer, RedisServer, api_request, free_port, front_get
from sites_network import free_subnet, network_name, remove_network

from director.cli import nginx_instances
from director.common.config import Config, load_config
from director.common.nginx import stop_instance

BIN = Path(sys.executable).parent
SITES = "sites.localhost"


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait(check: Any, what: str, timeout: float, details: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{details()}")
        time.sleep(0.1)


@dataclass
class Process:
    """One twistd component process, its config and log."""

    name: str
    component: str
    config_path: Path
    port: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [str(BIN / "twistd"), "-n", "--pidfile=", f"director-{self.component}",
                 "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.config_path.parent,
            )  # fmt: skip
        wait(lambda: listening(self.port), f"{self.name} listening", 30, self.log)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def send(self, sig: int) -> None:
        """Signal the process by its PID (if it still runs)."""
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(30)
        self.popen = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path)


@dataclass
class ManagerPair:
    base: Path
    config: Config
    token: str
    database_url: str
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def a(self) -> Process:
        return self.processes["manager-a"]

    @property
    def b(self) -> Process:
        return self.processes["manager-b"]

    def url(self, manager: Process) -> str:
        return f"http://127.0.0.1:{manager.port}"

    def api(
        self,
        manager: Process,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        status, content = api_request(self.url(manager), self.token, method, path, body, raw)
        assert status in ok, (manager.name, method, path, status, content[:500])
        try:
            return json.loads(content)
        except ValueError:
            return content

    def wait_operation(self, manager: Process, op_id: int, timeout: float = 120) -> dict[str, Any]:
        result: dict[str, Any] = {}

        def done() -> bool:
            result.update(self.api(manager, "GET", f"/api/v1/operations/{op_id}"))
            return result["status"] in ("succeeded", "failed")

        wait(done, f"operation {op_id}", timeout, self.logs)
        assert result["status"] == "succeeded", (result, self.logs())
        return result

    def front(self, host: str) -> tuple[int, bytes]:
        return front_get(self.config.router.http_port, host)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.processes.values())

    def identity(self, manager: Process) -> str:
        """The manager's identity (its state directory's manager-identity file)."""
        state = "var" if manager.name == "manager-a" else "var-b"
        return (self.base / state / "manager-identity").read_text().strip()

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        url = self.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, connect_timeout=10) as conn:
            return list(conn.execute(query, args).fetchall())

    def sign_in(self, manager: Process, username: str, password: str) -> tuple[int, str]:
        """The dashboard's sign-in form on C{manager}: (status, session cookie or "")."""
        opener = urllib.request.build_opener(_NoRedirect)
        with opener.open(self.url(manager) + "/login", timeout=10) as response:
            page = response.read().decode()
            login = _cookie(response.headers.get_all("set-cookie"), "director_login")
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match, page[:500]
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrf": match.group(1), "next": "/"}
        ).encode()
        request = urllib.request.Request(
            self.url(manager) + "/login", data=form, headers={"Cookie": f"director_login={login}"}
        )
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, ""
        except urllib.error.HTTPError as e:
            return e.code, _cookie(e.headers.get_all("set-cookie"), "director_session")

    def close(self) -> None:
        for process in reversed(list(self.processes.values())):
            try:
                process.send(signal.SIGCONT)  # one a test left stopped
                process.stop()
            except OSError:
                pass  # it is gone already; the others are still stopped
        for _, paths in nginx_instances(self.config):
            stop_instance(paths)
        remove_site_services(self.base / "var")


def remove_site_services(state: Path) -> None:
    """The swarm services of the sites the orchestrator under C{state} applied (only those)."""
    applied = state / "orchestrator" / "applied"
    for line in subprocess.run(
        ["docker", "service", "ls", "--format", "{{.Name}}"], capture_output=True, text=True
    ).stdout.split():
        if line.startswith("site_") and (applied / f"{line[5:]}.json").exists():
            subprocess.run(["docker", "service", "rm", line], capture_output=True)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _cookie(headers: list[str] | None, name: str) -> str:
    for header in headers or []:
        if header.startswith(name + "="):
            return header.split(";", 1)[0].split("=", 1)[1]
    return ""


def new_database(postgres: PostgresServer) -> str:
    """A new database on C{postgres} for the managers' store: its SQLAlchemy URL."""
    name = f"director_pair_{secrets.token_hex(4)}"
    with psycopg.connect(postgres.dsn(), autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return (
        f"postgresql+psycopg://{postgres.admin_user}:{postgres.admin_password}"
        f"@{postgres.host}:{postgres.port}/{name}"
    )


def drop_database(postgres: PostgresServer, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.dsn(), autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def init_config(config_path: Path, state: Path, settings: list[str]) -> None:
    """C{director init} of C{config_path} and C{state} with C{settings} (key=value each)."""
    args = [str(BIN / "director"), "init", "--config", str(config_path), "--state-dir", str(state)]
    for setting in settings:
        args += ["--set", setting]
    subprocess.run(args, check=True, capture_output=True)
    state.chmod(0o755)


def admin_token(config_path: Path) -> str:
    """A new API token of the admin's (C{director token create admin})."""
    return subprocess.run(
        [str(BIN / "director"), "token", "create", "admin", "--config", str(config_path)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def start_pair(
    postgres: PostgresServer, redis: RedisServer, *extra: str, prefix: str = "director-pair-"
) -> ManagerPair:
    """
    Orchestrator, router, manager A and manager B, started; the caller closes the pair
    (L{ManagerPair.close}) and removes its network (L{remove_pair_network}).
    """
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    database = new_database(postgres)
    ports = {name: free_port() for name in ("manager", "orchestrator", "router")}
    port_b = free_port()
    nginx_port = free_port()
    network, subnet = network_name(), free_subnet()
    (base / "network").write_text(f"{network} {subnet}")
    settings = [
        *(f"{c}.port={p}" for c, p in ports.items()),
        *(f'{c}.url="http://127.0.0.1:{p}"' for c, p in ports.items()),
        f"orchestrator.nginx_port={nginx_port}",
        f'router.upstreams="127.0.0.1:{nginx_port}"',
        f"router.http_port={free_port()}",
        f"router.https_port={free_port()}",
        'router.public_host="127.0.0.1"',
        'shell.host="127.0.0.1"',
        f"shell.port={free_port()}",
        f'manager.database_url="{database}"',
        f'manager.redis_url="redis://{redis.host}:{redis.port}"',
        "manager.bcrypt_rounds=4",
        "orchestrator.bundled_databases=false",
        f'orchestrator.sites_network="{network}"',
        f'orchestrator.sites_subnet="{subnet}"',
        *extra,
    ]
    config_path = base / "director.toml"
    init_config(config_path, base / "var", settings)
    config = load_config(config_path)
    # Manager B: the same settings, its own port and state directory (so its own identity).
    b_path = base / "manager-b.toml"
    init_config(
        b_path,
        base / "var-b",
        [
            *settings,
            f'auth.keys_dir="{config.auth.keys_dir}"',
            f'shell.host_keys_dir="{config.shell.host_keys_dir}"',
            f"manager.port={port_b}",
        ],
    )
    pair = ManagerPair(base, config, admin_token(config_path), database)
    for name, component, path, port in (
        ("orchestrator", "orchestrator", config_path, ports["orchestrator"]),
        ("router", "router", config_path, ports["router"]),
        ("manager-a", "manager", config_path, ports["manager"]),
        ("manager-b", "manager", b_path, port_b),
    ):
        pair.processes[name] = Process(name, component, path, port, base / f"{name}.log")
    try:
        for process in pair.processes.values():
            process.start()
    except BaseException:
        pair.close()
        remove_pair_network(pair)
        raise
    return pair


def remove_pair_network(pair: ManagerPair) -> None:
    network, subnet = (pair.base / "network").read_text().split()
    remove_network(network, subnet)


def admin_password(pair: ManagerPair) -> str:
    return (pair.base / "var" / "secrets" / "admin-password").read_text().strip()


def discard(pair: ManagerPair, postgres: PostgresServer) -> None:
    """Everything L{start_pair} made: processes, nginx, services, network, database, files."""
    try:
        pair.close()
        remove_pair_network(pair)
    finally:
        drop_database(postgres, pair.database_url)
        shutil.rmtree(pair.base, ignore_errors=True)
