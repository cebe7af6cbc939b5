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
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from director.cluster.host import HostPorts, start_host, stop_host
from director.cluster.layout import API_PORT, MIRROR_PORT, NGINX_PORT, Layout

Say = Callable[[str], None]

#: How long an engine, an orchestrator or a command may take before we give up.
ENGINE_START_TIMEOUT = 60.0
ENGINE_STOP_TIMEOUT = 40.0
ORCHESTRATOR_START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 120.0


class ClusterError(Exception):
    """The cluster cannot be brought up (or is up already); the message says why."""


# -- the state file ------------------------------------------------------------------------


class State:
    """What exists of a cluster, written through to its state file at every change."""

    def __init__(self, layout: Layout, data: dict[str, Any] | None = None) -> None:
        self.layout = layout
        self.data: dict[str, Any] = data or {
            "prefix": layout.prefix,
            "nodes": layout.nodes,
            "octet": layout.octet,
            "root": str(layout.root),
            "run": str(layout.run),
            "netns": [],
            "host_link": False,
            "processes": {},
        }

    @classmethod
    def load(cls, state_file: Path) -> State:
        data = json.loads(state_file.read_text())
        layout = Layout(
            data["prefix"], data["nodes"], data["octet"], Path(data["root"]), Path(data["run"])
        )
        return cls(layout, data)

    def save(self) -> None:
        path = self.layout.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(path)

    def netns_made(self, name: str) -> None:
        self.data["netns"].append(name)
        self.save()

    def process(self, key: str, pid: int, marker: str) -> None:
        """Process C{key} runs as C{pid}; its command line contains C{marker}."""
        self.data["processes"][key] = {"pid": pid, "marker": marker}
        self.save()

    def pid(self, key: str) -> int | None:
        entry = self.data["processes"].get(key)
        return int(entry["pid"]) if entry else None

    def forget(self, key: str) -> None:
        self.data["processes"].pop(key, None)
        self.save()


# -- small helpers -------------------------------------------------------------------------


def _run(argv: list[str], timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{' '.join(argv)}: no answer within {timeout:g} s") from None
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def docker(layout: Layout, n: int, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """The docker CLI against node C{n}'s engine."""
    return _run(["docker", "-H", layout.docker_url(n), *args], timeout=timeout)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Whether C{pid} runs (a zombie does not; our own children are reaped here)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def end_process(pid: int, marker: str, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """
    Send C{sig} to C{pid} if it still runs a command containing C{marker}, wait up to
    C{timeout} s for it to end, then kill it. False if it was not running.
    """
    if not _alive(pid) or marker not in _cmdline(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    return True


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(log.parent),
        )
    return process.pid


def _wait(what: str, ready: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "; last lines of " + str(log) + ":\n" + "\n".join(log.read_text().splitlines()[-15:])
    raise ClusterError(f"waited {timeout:g} s for {what}, in vain{tail}")


def _connects(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=0.5).close()
        return True
    except OSError:
        return False


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
    With C{host}, the manager, router and shell on the host too, listening on those ports
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
                with _step(timings, "manager, router and shell", say):
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


def _in_netns(layout: Layout, n: int) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{layout.netns(n)}"]


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


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


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
    with _step(timings, "manager, router and shell", say):
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
