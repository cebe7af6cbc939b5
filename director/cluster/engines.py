"""
The nodes' Docker engines: one dockerd per node in its network namespace, started and
stopped by pid, the host's base images loaded into each, and the swarm across them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

from director.cluster.layout import Layout
from director.cluster.processes import (
    ENGINE_START_TIMEOUT,
    ENGINE_STOP_TIMEOUT,
    ClusterError,
    State,
    _alive,
    _in_netns,
    _run,
    _spawn,
    _text,
    _wait,
    docker,
    end_process,
)


def _engine_argv(layout: Layout, n: int) -> list[str]:
    # nsenter --net, not `ip netns exec` (which remounts /sys and hides the cgroups); a
    # private mount and UTS namespace, for a hostname of the node's own.
    return [
        *_in_netns(layout, n),
        "unshare", "--mount", "--uts", "--propagation", "slave", "--",
        "sh", "-c", 'hostname "$0"; exec "$@"', layout.hostname(n),
        "dockerd",
        "--data-root", str(layout.data_root(n)),
        "--exec-root", str(layout.exec_root(n) / "exec"),
        "--pidfile", str(layout.pidfile(n)),
        "-H", layout.docker_url(n),
        "--bip", layout.bridge_ip(n),
        "--default-address-pool", f"base={layout.address_pool(n)},size=27",
        "--storage-driver", "overlay2",
        "--containerd-namespace", f"{layout.prefix}n{n}",
        "--containerd-plugins-namespace", f"{layout.prefix}n{n}p",
        "--dns", layout.address(n),
        "--iptables=true",
        "--no-new-privileges",
    ]  # fmt: skip


def _spawn_engine(state: State, n: int) -> None:
    layout = state.layout
    layout.data_root(n).mkdir(parents=True, exist_ok=True)
    layout.exec_root(n).mkdir(parents=True, exist_ok=True)
    # A killed engine leaves its pid file and its containerd's: dockerd refuses to start
    # while the pid in the first exists, and waits for the one in the second, even as a
    # zombie not yet reaped.
    for pidfile in (layout.pidfile(n), _containerd_pidfile(layout, n)):
        recorded = _text(pidfile).strip()
        if recorded.isdigit() and not _alive(int(recorded)):
            pidfile.unlink()
    # the swarm never pulls (the nodes have no route out): tasks use the local images
    env = dict(os.environ, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")
    pid = _spawn(_engine_argv(layout, n), layout.log(n, "dockerd"), env)
    state.process(f"dockerd-{n}", pid, str(layout.data_root(n)))


def _containerd_pidfile(layout: Layout, n: int) -> Path:
    """Where the containerd node C{n}'s dockerd starts writes its pid."""
    return layout.exec_root(n) / "exec" / "containerd" / "containerd.pid"


def _engine_answers(layout: Layout, n: int) -> bool:
    try:
        docker(layout, n, "version", "--format", "{{.Server.Version}}", timeout=5)
        return True
    except ClusterError:
        return False


def _wait_engine(layout: Layout, n: int) -> None:
    _wait(
        f"node {n}'s dockerd",
        lambda: _engine_answers(layout, n),
        ENGINE_START_TIMEOUT,
        layout.log(n, "dockerd"),
    )


def start_engine(layout: Layout, n: int, forget_networks: bool = False) -> None:
    """
    (Re)start node C{n}'s dockerd (after L{stop_engine}) and wait until it answers. With
    C{forget_networks}, its network store goes first: the recovery of an engine that died
    uncleanly, whose swarm-scoped bridge otherwise rejects every new task with "network
    <id> exists" (moby/moby#37087; docs/deploy.md). The config-only network goes with the
    store; the node's orchestrator makes it again.
    """
    state = State.load(layout.state_file)
    if forget_networks:
        with contextlib.suppress(FileNotFoundError):
            (layout.data_root(n) / "network" / "files" / "local-kv.db").unlink()
    _spawn_engine(state, n)
    _wait_engine(layout, n)


def stop_engine(layout: Layout, n: int, sig: int = signal.SIGTERM) -> None:
    """Stop node C{n}'s dockerd (by its pid), as a machine going down would."""
    state = State.load(layout.state_file)
    pid = state.pid(f"dockerd-{n}")
    if pid is not None:
        end_process(pid, str(layout.data_root(n)), ENGINE_STOP_TIMEOUT, sig)
        state.forget(f"dockerd-{n}")
    # its containerd ends with it (at once when killed: it gets SIGKILL when dockerd dies)
    containerd = _text(_containerd_pidfile(layout, n)).strip()
    if containerd.isdigit():
        _wait(f"node {n}'s containerd to end", lambda: not _alive(int(containerd)), 15)


def _images(layout: Layout) -> list[str]:
    """The host's director/* base images (not sites' own images)."""
    listed = _run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "director/*"])
    return sorted(
        ref
        for ref in listed.split()
        if not ref.startswith("director/site-") and not ref.endswith(":<none>")
    )


def _load_images(layout: Layout) -> None:
    _run(["docker", "save", "-o", str(layout.images), *_images(layout)], timeout=600)
    errors: list[str] = []

    def load(n: int) -> None:
        try:
            docker(layout, n, "load", "-q", "-i", str(layout.images), timeout=600)
        except ClusterError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=load, args=(n,)) for n in layout.numbers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    layout.images.unlink()
    if errors:
        raise ClusterError("; ".join(errors))


def _make_swarm(layout: Layout) -> None:
    first = layout.address(1)
    docker(layout, 1, "swarm", "init", "--advertise-addr", first, "--listen-addr",
           f"{first}:2377", "--default-addr-pool", layout.overlay_pool)  # fmt: skip
    token = docker(layout, 1, "swarm", "join-token", "-q", "worker").strip()
    for n in layout.numbers[1:]:
        address = layout.address(n)
        docker(layout, n, "swarm", "join", "--advertise-addr", address, "--listen-addr",
               f"{address}:2377", "--token", token, f"{first}:2377")  # fmt: skip

    def all_ready() -> bool:
        listed = docker(layout, 1, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")
        ready = {line.split()[0] for line in listed.splitlines() if line.endswith(" Ready")}
        return ready >= {layout.hostname(n) for n in layout.numbers}

    _wait("every node in the swarm", all_ready, 30)
