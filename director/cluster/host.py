"""
The host's part of a cluster: the manager (dashboard and API), the router (the front nginx)
and the shell (SSH), each its own twistd process on the host, driving the nodes'
orchestrators. No orchestrator runs on the host: the config's own (C{[orchestrator]}) is
node 1's, and every other node's is registered with C{director orchestrator add}.

Blocking, like L{director.cluster.nodes}; the processes are recorded in the cluster's state
file (ended by pid by L{stop_host}, which L{director.cluster.nodes.down} calls first).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from director.cluster.databases import admin_user, start_postgres, stop_postgres
from director.cluster.layout import Layout
from director.orchestrator.bundled_databases import ensure_password

#: How long the manager, router and shell may take to listen.
HOST_START_TIMEOUT = 60.0
COMPONENTS = ("manager", "router", "shell")


@dataclass(frozen=True)
class HostPorts:
    """Where the host's components listen (C{make cluster}: those of C{make run})."""

    manager: int = 8000
    router_api: int = 8200
    http: int = 80
    https: int = 443
    shell: int = 2322
    #: the sites' PostgreSQL (not 8432: a `make run` beside keeps its bundled one there)
    postgres: int = 8433


def orchestrator_name(n: int) -> str:
    """The pool's name of node C{n}'s orchestrator."""
    return f"node{n}"


def host_dir(layout: Layout) -> Path:
    return layout.base / "host"


def host_config(layout: Layout) -> Path:
    return host_dir(layout) / "director.toml"


def host_state_dir(layout: Layout) -> Path:
    return host_dir(layout) / "var"


def host_settings(layout: Layout, ports: HostPorts) -> list[str]:
    """C{director init --set} settings of the host's config."""
    return [
        f'auth.keys_dir="{layout.keys_dir}"',
        f'shell.host_keys_dir="{layout.keys_dir}"',
        f"manager.port={ports.manager}",
        f'manager.url="http://127.0.0.1:{ports.manager}"',
        f'orchestrator.name="{orchestrator_name(1)}"',
        f'orchestrator.url="{layout.api_url(1)}"',
        f'orchestrator.public_nginx="{layout.nginx_address(1)}"',
        "orchestrator.bundled_databases=false",
        f"router.port={ports.router_api}",
        f'router.url="http://127.0.0.1:{ports.router_api}"',
        f"router.http_port={ports.http}",
        f"router.https_port={ports.https}",
        f'router.upstreams="{layout.nginx_address(1)}"',
        f"shell.port={ports.shell}",
        f'backup.repository="{layout.backup_repository}"',
        f'backup.password_file="{layout.backup_password_file}"',
    ]


def _director(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "director"), *args]


def start_host(layout: Layout, ports: HostPorts = HostPorts(), extra: tuple[str, ...] = ()) -> None:
    """
    Write the host's config (C{director init}: keys shared with the nodes, the database,
    the administrator), register the other nodes' orchestrators, start the three
    components and wait until they listen. C{extra}: further C{--set} settings.
    """
    from director.cluster.processes import ClusterError, State, _connects, _run, _spawn, _wait

    config = host_config(layout)
    host_dir(layout).mkdir(parents=True, exist_ok=True)
    host_dir(layout).chmod(0o755)
    args = _director("init", "--config", str(config), "--state-dir", str(host_state_dir(layout)))
    for setting in (*host_settings(layout, ports), *extra):
        args += ["--set", setting]
    _run(args)
    host_state_dir(layout).chmod(0o755)  # nginx workers (nobody) read the router's files
    databases = host_dir(layout) / "databases"
    databases.mkdir(exist_ok=True)
    databases.chmod(0o755)
    start_postgres(layout, databases, ports.postgres, host_state_dir(layout))
    password = ensure_password(host_state_dir(layout), "postgres")
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
    twistd = str(Path(sys.executable).parent / "twistd")
    state = State.load(layout.state_file)  # after start_postgres, which records its own pid
    for component in COMPONENTS:
        pidfile = host_state_dir(layout) / f"{component}.pid"
        argv = [twistd, "-n", f"--pidfile={pidfile}", f"director-{component}",
                "--config", str(config)]  # fmt: skip
        pid = _spawn(argv, host_dir(layout) / f"{component}.log")
        state.process(f"host-{component}", pid, str(config))
    listening = {
        "manager": ("127.0.0.1", ports.manager),
        "router": ("127.0.0.1", ports.router_api),
        "shell": ("127.0.0.1", ports.shell),
    }
    for component, (address, port) in listening.items():
        _wait(
            f"the host's {component}",
            lambda a=address, p=port: _connects(a, p),  # type: ignore[misc]
            HOST_START_TIMEOUT,
            host_dir(layout) / f"{component}.log",
        )
    _wait("the router's front port", lambda: _connects("127.0.0.1", ports.http), 30)


def stop_host(layout: Layout) -> None:
    """End the host's components (by their pids) and the router's nginx."""
    from director.cluster.processes import State, _text, end_process

    if not layout.state_file.exists():
        return
    state = State.load(layout.state_file)
    for component in reversed(COMPONENTS):
        pid = state.pid(f"host-{component}")
        if pid is not None:
            end_process(pid, str(host_config(layout)), 20)
            state.forget(f"host-{component}")
    for pidfile in host_state_dir(layout).glob("**/nginx.pid"):
        text = _text(pidfile).strip()
        if text.isdigit():
            end_process(int(text), str(host_state_dir(layout)), 10, signal.SIGQUIT)
    stop_postgres(layout)


def banner(layout: Layout) -> str:
    """What C{make cluster} prints at the end (C{director banner} of the host's config)."""
    done = subprocess.run(
        _director("banner", "--config", str(host_config(layout))),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout.replace("Director is starting:", "Director (cluster) is up:")
