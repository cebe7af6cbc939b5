"""
The host's part of a cluster, the whole front door: two managers (dashboard and API) on one
PostgreSQL store and one Redis, two routers (each a front nginx) and the shell (SSH), each
its own twistd process, driving the nodes' orchestrators. Manager a and router a listen on
the first loopback address, manager b and router b on the second (same ports); every router
serves the dashboard host (sent to both managers) and every site, and both managers drive
both routers. No orchestrator runs on the host: the config's own (C{[orchestrator]}) is
node 1's, and every other node's is registered with C{director orchestrator add}.

Blocking, like L{director.cluster.nodes}; the processes are recorded in the cluster's state
file (ended by pid by L{stop_host}, which L{director.cluster.nodes.down} calls first).
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from director.cluster.databases import (
    admin_user,
    manager_store,
    start_postgres,
    start_redis,
    stop_postgres,
    stop_redis,
)
from director.cluster.layout import Layout
from director.orchestrator.bundled_databases import ensure_password

#: How long the managers, routers and shell may take to listen.
HOST_START_TIMEOUT = 60.0
#: The host's twistd processes, in start order: (state file key, component, instance).
COMPONENTS = (
    ("host-manager-a", "manager", "a"),
    ("host-manager-b", "manager", "b"),
    ("host-router-a", "router", "a"),
    ("host-router-b", "router", "b"),
    ("host-shell", "shell", "a"),
)


@dataclass(frozen=True)
class HostPorts:
    """
    Where the host's components listen (C{make cluster}: those of C{make run}). Manager a
    and router a on C{addresses[0]}, manager b and router b on C{addresses[1]}, on the same
    ports; the shell, PostgreSQL and Redis on 127.0.0.1.
    """

    manager: int = 8000
    router_api: int = 8200
    http: int = 80
    https: int = 443
    shell: int = 2322
    #: the sites' PostgreSQL (not 8432: a `make run` beside keeps its bundled one there)
    postgres: int = 8433
    #: the managers' Redis (not 6379: a system one may run there)
    redis: int = 8379
    addresses: tuple[str, str] = ("127.0.0.1", "127.0.0.2")

    def manager_url(self, i: int) -> str:
        return f"http://{self.addresses[i]}:{self.manager}"

    def router_url(self, i: int) -> str:
        return f"http://{self.addresses[i]}:{self.router_api}"


def stored_ports(layout: Layout) -> HostPorts:
    """The ports the host's components were started on (kept in the state file)."""
    from director.cluster.processes import State

    saved = dict(State.load(layout.state_file).data["host_ports"])
    saved["addresses"] = tuple(saved["addresses"])
    return HostPorts(**saved)


def orchestrator_name(n: int) -> str:
    """The pool's name of node C{n}'s orchestrator."""
    return f"node{n}"


def host_dir(layout: Layout) -> Path:
    return layout.base / "host"


def host_config(layout: Layout) -> Path:
    """Manager a's, router a's and the shell's config; C{b}: manager b's or router b's."""
    return host_dir(layout) / "director.toml"


def config_of(layout: Layout, component: str, instance: str) -> Path:
    """The config of the host's C{component} C{instance} (a: the host's config)."""
    if instance == "a":
        return host_config(layout)
    return host_dir(layout) / f"{component}-{instance}.toml"


def host_state_dir(layout: Layout, component: str = "", instance: str = "a") -> Path:
    if instance == "a":
        return host_dir(layout) / "var"
    return host_dir(layout) / f"var-{component}-{instance}"


def host_settings(layout: Layout, ports: HostPorts, database_url: str, redis_url: str) -> list[str]:
    """C{director init --set} settings the host's configs share (those of a)."""
    a, b = ports.addresses
    return [
        f'auth.keys_dir="{layout.keys_dir}"',
        f'shell.host_keys_dir="{layout.keys_dir}"',
        f'manager.host="{a}"',
        f"manager.port={ports.manager}",
        f'manager.url="{ports.manager_url(0)}"',
        f'manager.database_url="{database_url}"',
        f'manager.redis_url="{redis_url}"',
        f'manager.trusted_proxies="{a}, {b}, ::1"',
        f'orchestrator.name="{orchestrator_name(1)}"',
        f'orchestrator.url="{layout.api_url(1)}"',
        f'orchestrator.public_nginx="{layout.nginx_address(1)}"',
        "orchestrator.bundled_databases=false",
        f'router.host="{a}"',
        f"router.port={ports.router_api}",
        f'router.url="{ports.router_url(0)}"',
        f'router.urls="a={ports.router_url(0)}, b={ports.router_url(1)}"',
        f'router.public_host="{a}"',
        f"router.http_port={ports.http}",
        f"router.https_port={ports.https}",
        f'router.upstreams="{layout.nginx_address(1)}"',
        f'router.manager_upstreams="{a}:{ports.manager}, {b}:{ports.manager}"',
        f'router.shared_dir="{host_dir(layout) / "router-shared"}"',
        f"shell.port={ports.shell}",
        f'backup.repository="{layout.backup_repository}"',
        f'backup.password_file="{layout.backup_password_file}"',
    ]


def instance_settings(ports: HostPorts, component: str) -> list[str]:
    """What manager b's or router b's config has instead of a's: its own address."""
    b = ports.addresses[1]
    if component == "manager":
        return [f'manager.host="{b}"']
    return [
        f'router.host="{b}"',
        f'router.url="{ports.router_url(1)}"',
        f'router.public_host="{b}"',
    ]


def _director(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "director"), *args]


def _init(config: Path, state_dir: Path, settings: list[str]) -> None:
    from director.cluster.processes import _run

    args = _director("init", "--config", str(config), "--state-dir", str(state_dir))
    for setting in settings:
        args += ["--set", setting]
    _run(args)
    state_dir.chmod(0o755)  # nginx workers (nobody) read the routers' files


def start_host(layout: Layout, ports: HostPorts = HostPorts(), extra: tuple[str, ...] = ()) -> None:
    """
    Start the databases (PostgreSQL: the managers' store and the sites'; Redis), write the
    host's configs (C{director init}: keys shared with the nodes, the store, the
    administrator; b's the same but their address and state directory), register the
    other nodes' orchestrators, start the five components and wait until they listen.
    C{extra}: further C{--set} settings of every config.
    """
    from director.cluster.processes import State

    host_dir(layout).mkdir(parents=True, exist_ok=True)
    host_dir(layout).chmod(0o755)
    secrets = host_state_dir(layout)
    secrets.mkdir(exist_ok=True)
    state = State.load(layout.state_file)
    state.data["host_ports"] = dataclasses.asdict(ports)
    state.save()
    databases = host_dir(layout) / "databases"
    databases.mkdir(exist_ok=True)
    databases.chmod(0o755)
    start_postgres(layout, databases, ports.postgres, secrets)
    database_url = manager_store(ports.postgres, secrets)
    redis_url = start_redis(layout, host_dir(layout) / "redis", ports.redis)
    shared = [*host_settings(layout, ports, database_url, redis_url), *extra]
    config = host_config(layout)
    _init(config, secrets, shared)  # the store's schema and administrator: first, alone
    # then b's configs and the registrations at once (each command takes seconds)
    with ThreadPoolExecutor(3) as pool:
        steps = [
            pool.submit(
                _init,
                config_of(layout, component, "b"),
                host_state_dir(layout, component, "b"),
                [*shared, *instance_settings(ports, component)],
            )
            for component in ("manager", "router")
        ]
        steps.append(pool.submit(_register, layout, ports, secrets))
        for done in steps:
            done.result()
    for key, _component, _instance in COMPONENTS:
        start_component(layout, key)
    for key, _component, _instance in COMPONENTS:
        wait_component(layout, key, ports)


def _register(layout: Layout, ports: HostPorts, secrets: Path) -> None:
    """The sites' PostgreSQL and the other nodes' orchestrators, in the managers' store."""
    from director.cluster.processes import ClusterError, _run

    config = host_config(layout)
    password = ensure_password(secrets, "postgres")
    added = subprocess.run(
        _director(
            "database-host", "add", "--kind", "postgres", "--admin-host", layout.host_address,
            "--admin-port", str(ports.postgres), "--admin-user", admin_user(),
            "--password-stdin", "--container-host", layout.host_address,
            "--container-port", str(ports.postgres), "--config", str(config),
        ),
        input=password + "\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if added.returncode != 0:
        raise ClusterError(f"director database-host add failed: {added.stderr.strip()}")
    for n in layout.numbers[1:]:
        _run(
            _director(
                "orchestrator", "add", orchestrator_name(n), "--url", layout.api_url(n),
                "--nginx", layout.nginx_address(n), "--config", str(config),
            )
        )  # fmt: skip


def _component(key: str) -> tuple[str, str]:
    from director.cluster.processes import ClusterError

    for known, component, instance in COMPONENTS:
        if known == key:
            return component, instance
    raise ClusterError(f"no host component {key!r} (one of {[c[0] for c in COMPONENTS]})")


def start_component(layout: Layout, key: str) -> int:
    """
    Start the host's component C{key} (C{host-manager-b}, ...) and record its pid (not
    waiting): at C{up}, and again after it was killed.
    """
    from director.cluster.processes import State, _spawn

    component, instance = _component(key)
    config = config_of(layout, component, instance)
    pidfile = host_state_dir(layout, component, instance) / f"{component}.pid"
    twistd = str(Path(sys.executable).parent / "twistd")
    argv = [twistd, "-n", f"--pidfile={pidfile}", f"director-{component}", "--config", str(config)]
    pid = _spawn(argv, log_of(layout, key))
    State.load(layout.state_file).process(key, pid, str(config))
    return pid


def log_of(layout: Layout, key: str) -> Path:
    return host_dir(layout) / f"{key.removeprefix('host-')}.log"


def listening_on(ports: HostPorts, key: str) -> list[tuple[str, int]]:
    """The addresses component C{key} listens on once it is up."""
    component, instance = _component(key)
    address = ports.addresses[0 if instance == "a" else 1]
    if component == "manager":
        return [(address, ports.manager)]
    if component == "router":
        return [(address, ports.router_api), (address, ports.http)]
    return [("127.0.0.1", ports.shell)]


def wait_component(layout: Layout, key: str, ports: HostPorts) -> None:
    """Until component C{key} listens (a L{ClusterError} with its log's end if it does not)."""
    from director.cluster.processes import _connects, _wait

    for address, port in listening_on(ports, key):
        _wait(
            f"the host's {key.removeprefix('host-')} on {address}:{port}",
            lambda a=address, p=port: _connects(a, p),  # type: ignore[misc]
            HOST_START_TIMEOUT,
            log_of(layout, key),
        )


def stop_host(layout: Layout) -> None:
    """End the host's components (by their pids), the routers' nginx and the databases."""
    from director.cluster.processes import State, _text, end_process

    if not layout.state_file.exists():
        return
    state = State.load(layout.state_file)
    running = [(key, state.pid(key), config_of(layout, c, i)) for key, c, i in COMPONENTS]
    with ThreadPoolExecutor(len(COMPONENTS)) as pool:  # all at once: each may take seconds
        ends = [pool.submit(end_process, pid, str(config), 20) for _, pid, config in running if pid]
        for done in ends:
            done.result()
    for key, _pid, _config in running:
        state.forget(key)
    for pidfile in host_dir(layout).glob("**/nginx.pid"):
        text = _text(pidfile).strip()
        if text.isdigit():
            end_process(int(text), str(host_dir(layout)), 10, signal.SIGQUIT)
    stop_redis(layout)
    stop_postgres(layout)


def banner(layout: Layout) -> str:
    """
    What C{make cluster} prints at the end: C{director banner} of the host's config (the
    dashboard through router a), then the dashboard through router b and both managers.
    """
    done = subprocess.run(
        _director("banner", "--config", str(host_config(layout))),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    ports = stored_ports(layout)
    host, b = _dashboard_host(layout), ports.addresses[1]
    port = "" if ports.http == 80 else f":{ports.http}"
    lines: list[str] = []
    for line in done.stdout.replace(
        "Director is starting:", "Director (cluster) is up:"
    ).splitlines():
        if line.startswith("  manager directly:"):
            lines += [f"  manager {x}:         {ports.manager_url(i)}/   (this machine only)"
                      for i, x in enumerate("ab")]  # fmt: skip
            continue
        lines.append(line)
        if line.startswith("  dashboard and API:"):
            lines.append(
                f"  through router b:  curl --resolve {host}:{ports.http}:{b} "
                f"http://{host}{port}/   (router a's front: {ports.addresses[0]}, b's: {b})"
            )
    return "".join(f"{line}\n" for line in lines)


def _dashboard_host(layout: Layout) -> str:
    from director.common.config import load_config

    return load_config(host_config(layout)).manager.dashboard_host
