"""
Bring a cluster (L{Layout}) up and down: namespaces and links, one dockerd and one DNS
responder per node, the swarm (node 1 its manager, the others workers), the host's base
images in every node, and an orchestrator per node.

Blocking, for a command line (C{make cluster}) and test fixtures, never for the reactor.
Everything made is recorded in the state file as soon as it exists, so L{down} removes it
all even after a crash half-way through L{up}; processes are ended by the pid recorded,
after checking that the pid still runs what we started.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from director.cluster.engines import (
    _images,
    _load_images,
    _make_swarm,
    _spawn_engine,
    _wait_engine,
    start_engine,
    stop_engine,
)
from director.cluster.host import HostPorts, start_host, stop_host
from director.cluster.layout import API_PORT, MIRROR_PORT, NGINX_PORT, Layout
from director.cluster.processes import (
    COMMAND_TIMEOUT,
    ENGINE_START_TIMEOUT,
    ENGINE_STOP_TIMEOUT,
    ORCHESTRATOR_START_TIMEOUT,
    ClusterError,
    State,
    _cmdline,
    _connects,
    _in_netns,
    _run,
    _spawn,
    _text,
    _wait,
    docker,
    end_process,
)

__all__ = [
    "COMMAND_TIMEOUT",
    "ENGINE_START_TIMEOUT",
    "ENGINE_STOP_TIMEOUT",
    "ORCHESTRATOR_START_TIMEOUT",
    "ClusterError",
    "State",
    "docker",
    "down",
    "end_process",
    "is_up",
    "routes_overlapping",
    "start_engine",
    "start_orchestrator",
    "stop_engine",
    "stop_orchestrator",
    "up",
    "wait_orchestrator",
    "write_orchestrator_config",
]


Say = Callable[[str], None]


@contextlib.contextmanager
def _step(timings: dict[str, float], name: str, say: Say) -> Iterator[None]:
    start = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - start, 2)
    say(f"cluster: {name}: {timings[name]:.2f} s")


def routes_overlapping(layout: Layout) -> list[str]:
    """The host's routes that overlap the cluster's networks (other than its own link's)."""
    ours = layout.networks()
    found = []
    for line in _run(["ip", "-4", "route", "show"]).splitlines():
        words = line.split()
        if not words or words[0] == "default" or layout.host_link in words:
            continue
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(words[0], strict=False)
            if any(net.overlaps(mine) for mine in ours):
                found.append(line.strip())
    return found


def is_up(layout: Layout) -> bool:
    return layout.state_file.exists()


# -- up ------------------------------------------------------------------------------------


def up(
    layout: Layout,
    orchestrators: bool = True,
    say: Say = print,
    host: HostPorts | None = None,
    host_settings: tuple[str, ...] = (),
) -> dict[str, float]:
    """
    Bring the whole cluster up; returns the seconds each step took. Refuses (changing
    nothing) if the cluster is up already; on a failure, removes what it made and raises.
    With C{host}, the managers, routers and shell on the host too, listening on those ports
    (L{director.cluster.host}; C{host_settings}: further config settings of theirs).
    """
    if is_up(layout):
        raise ClusterError(
            f"cluster {layout.prefix!r} is up already ({layout.state_file}); "
            f"bring it down first (make cluster-down, or python -m director.cluster down)"
        )
    existing = set(_run(["ip", "netns", "list"]).split())
    clash = sorted(existing & {layout.hub, *(layout.netns(n) for n in layout.numbers)})
    if clash:
        raise ClusterError(f"network namespaces {clash} exist already: another cluster?")
    overlapping = routes_overlapping(layout)
    if overlapping:
        raise ClusterError(
            f"the host already routes networks the cluster {layout.prefix!r} would use "
            f"(pick another octet): {overlapping}"
        )
    if not _images(layout):
        raise ClusterError("the host has no director/* images yet: run `make images` first")
    state = State(layout)
    state.save()
    timings: dict[str, float] = {}
    try:
        with _step(timings, "namespaces and links", say):
            _make_network(state)
        with _step(timings, "DNS responders and the mirror proxy", say):
            for n in layout.numbers:
                _start_dns(state, n)
            _start_mirror(state)
        with _step(timings, "engines", say):
            for n in layout.numbers:
                _spawn_engine(state, n)
            for n in layout.numbers:
                _wait_engine(layout, n)
        with _step(timings, "images", say):
            _load_images(layout)
        with _step(timings, "swarm", say):
            _make_swarm(layout)
        if orchestrators:
            with _step(timings, "orchestrators", say):
                for n in layout.numbers:
                    start_orchestrator(layout, n, state)
                for n in layout.numbers:
                    wait_orchestrator(layout, n)
            if host is not None:
                with _step(timings, "managers, routers and shell", say):
                    start_host(layout, host, host_settings)
    except BaseException:
        say(f"cluster: bringing {layout.prefix!r} up failed; removing what was made")
        down(layout, say=say)
        raise
    return timings


def _make_network(state: State) -> None:
    layout = state.layout
    ip = ["ip"]
    _run([*ip, "netns", "add", layout.hub])
    state.netns_made(layout.hub)
    _run([*ip, "-n", layout.hub, "link", "add", "br0", "type", "bridge"])
    _run([*ip, "-n", layout.hub, "link", "set", "br0", "up"])
    for n in layout.numbers:
        ns = layout.netns(n)
        _run([*ip, "netns", "add", ns])
        state.netns_made(ns)
        link = layout.hub_link(n)
        veth = ["type", "veth", "peer", "name", "eth0", "netns", ns]
        _run([*ip, "link", "add", link, "netns", layout.hub, *veth])
        _run([*ip, "-n", layout.hub, "link", "set", link, "master", "br0", "up"])
        _run([*ip, "-n", ns, "link", "set", "lo", "up"])
        _run([*ip, "-n", ns, "addr", "add", f"{layout.address(n)}/24", "dev", "eth0"])
        _run([*ip, "-n", ns, "link", "set", "eth0", "up"])
    # the host's own link into the hub: host processes reach every node at 10.77.<octet>.N
    veth = ["type", "veth", "peer", "name", layout.host_link_peer, "netns", layout.hub]
    _run([*ip, "link", "add", layout.host_link, *veth])
    state.data["host_link"] = True
    state.save()
    _run([*ip, "-n", layout.hub, "link", "set", layout.host_link_peer, "master", "br0", "up"])
    _run([*ip, "addr", "add", f"{layout.host_address}/24", "dev", layout.host_link])
    _run([*ip, "link", "set", layout.host_link, "up"])


def _start_dns(state: State, n: int) -> None:
    layout = state.layout
    address = layout.address(n)
    argv = [*_in_netns(layout, n), sys.executable, "-m", "director.cluster.dns", address]
    log = layout.log(n, "dns")
    pid = _spawn(argv, log)
    state.process(f"dns-{n}", pid, f"director.cluster.dns {address}")
    _wait(f"node {n}'s DNS responder", lambda: "answering" in _text(log), 20, log)


def _start_mirror(state: State) -> None:
    """The host's proxy to the Debian mirror, for the nodes' image builds (no route out)."""
    layout = state.layout
    address, port = layout.host_address, str(MIRROR_PORT)
    argv = [sys.executable, "-m", "director.cluster.mirror", address, port]
    log = layout.base / "mirror.log"
    pid = _spawn(argv, log)
    state.process("mirror", pid, f"director.cluster.mirror {address}")
    _wait("the mirror proxy", lambda: _connects(address, MIRROR_PORT), 20, log)


# -- orchestrators -------------------------------------------------------------------------


def write_orchestrator_config(layout: Layout, n: int) -> Path:
    """
    Node C{n}'s orchestrator's config and state directory, and the signing keys all the
    cluster's components share (made once). Not `director init`: a node runs no manager, so
    it needs no database nor administrator.
    """
    from director.cli import render_config
    from director.common.atomic import atomic_write
    from director.common.config import parse_config
    from director.common.keys import generate_component_keys

    for path in (layout.root, layout.base, layout.node_dir(n), layout.state_dir(n)):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)  # nginx workers (nobody) go through to the sites
    sections: dict[str, list[str]] = {"director": [f'state_dir = "{layout.state_dir(n)}"']}
    for key, value in layout.orchestrator_settings(n).items():
        section, _, name = key.partition(".")
        sections.setdefault(section, []).append(f"{name} = {value}")
    text = "".join(
        f"[{name}]\n" + "".join(f"{line}\n" for line in lines) for name, lines in sections.items()
    )
    config = parse_config(text, layout.node_dir(n))  # checked before anything is written
    atomic_write(layout.config(n), render_config(config), 0o600)
    generate_component_keys(layout.keys_dir)
    return layout.config(n)


def start_orchestrator(layout: Layout, n: int, state: State | None = None) -> None:
    """Start node C{n}'s orchestrator inside the node's network namespace (not waiting)."""
    state = state or State.load(layout.state_file)
    config = write_orchestrator_config(layout, n)
    twistd = str(Path(sys.executable).parent / "twistd")
    pidfile = layout.state_dir(n) / "orchestrator.pid"
    argv = [*_in_netns(layout, n), twistd, "-n", f"--pidfile={pidfile}",
            "director-orchestrator", "--config", str(config)]  # fmt: skip
    pid = _spawn(argv, layout.log(n, "orchestrator"))
    state.process(f"orchestrator-{n}", pid, str(config))


def wait_orchestrator(layout: Layout, n: int) -> None:
    address = layout.address(n)
    _wait(
        f"node {n}'s orchestrator",
        lambda: _connects(address, API_PORT) and _connects(address, NGINX_PORT),
        ORCHESTRATOR_START_TIMEOUT,
        layout.log(n, "orchestrator"),
    )


def stop_orchestrator(layout: Layout, n: int, state: State | None = None) -> None:
    """Stop node C{n}'s orchestrator and the nginx it started (which would outlive it)."""
    state = state or State.load(layout.state_file)
    pid = state.pid(f"orchestrator-{n}")
    if pid is not None:
        end_process(pid, str(layout.config(n)), 20)
        state.forget(f"orchestrator-{n}")
    for pidfile in layout.state_dir(n).glob("**/nginx.pid"):
        text = _text(pidfile).strip()
        if text.isdigit():
            end_process(int(text), str(layout.state_dir(n)), 10, signal.SIGQUIT)


# -- down ----------------------------------------------------------------------------------


def down(layout: Layout, say: Say = print) -> dict[str, float]:
    """
    Remove everything the state file records (and the state file): nothing is left, even
    of a cluster whose L{up} crashed. A cluster that is not up is fine (nothing to do).
    """
    timings: dict[str, float] = {}
    if not layout.state_file.exists():
        _remove_dirs(layout)
        return timings
    state = State.load(layout.state_file)
    layout = state.layout
    processes = state.data["processes"]
    with _step(timings, "managers, routers and shell", say):
        stop_host(layout)
    with _step(timings, "orchestrators", say):
        for n in layout.numbers:
            stop_orchestrator(layout, n, state)
    with _step(timings, "services and swarm", say):
        running = [n for n in layout.numbers if f"dockerd-{n}" in processes]
        if 1 in running:
            with contextlib.suppress(ClusterError):
                services = docker(layout, 1, "service", "ls", "-q", timeout=30).split()
                if services:
                    docker(layout, 1, "service", "rm", *services, timeout=60)
        for n in sorted(running, reverse=True):  # workers first, the manager last
            with contextlib.suppress(ClusterError):
                docker(layout, n, "swarm", "leave", "--force", timeout=30)
            with contextlib.suppress(ClusterError):
                containers = docker(layout, n, "ps", "-aq", timeout=30).split()
                if containers:
                    docker(layout, n, "rm", "-f", *containers, timeout=60)
    with _step(timings, "engines", say):
        threads = [threading.Thread(target=stop_engine, args=(layout, n)) for n in layout.numbers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _end_leftovers(layout)
    with _step(timings, "DNS responders and the mirror proxy", say):
        state = State.load(layout.state_file)
        for key, entry in list(state.data["processes"].items()):
            end_process(int(entry["pid"]), entry["marker"], 10)
            state.forget(key)
    with _step(timings, "namespaces and links", say):
        for ns in reversed(state.data["netns"]):
            _run(["ip", "netns", "del", ns], check=False)
        if state.data["host_link"]:
            # gone with the hub's end, normally
            _run(["ip", "link", "del", layout.host_link], check=False)
    with _step(timings, "files", say):
        _remove_dirs(layout)
    return timings


def _end_leftovers(layout: Layout) -> None:
    """
    Processes a killed engine left behind (its containerd and shims name its exec root on
    their command lines): ended by pid, as nothing else has those paths.
    """
    roots = [str(layout.exec_root(n)) for n in layout.numbers]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = _cmdline(int(entry.name))
            marker = next((root for root in roots if root in line), None)
            if marker is not None and int(entry.name) != os.getpid():
                end_process(int(entry.name), marker, 10)


def _remove_dirs(layout: Layout) -> None:
    shutil.rmtree(layout.base, ignore_errors=True)
    shutil.rmtree(layout.run_dir, ignore_errors=True)
    for parent in (layout.root, layout.run):  # ours, if no other cluster uses them
        with contextlib.suppress(OSError):
            parent.rmdir()
