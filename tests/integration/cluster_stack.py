"""
A whole cluster for integration tests: two nodes with an orchestrator each
(director.cluster), and on the host the real front door driving them (director.cluster.host:
managers a and b on PostgreSQL and Redis, routers a and b, the shell), under a prefix and an
octet of their own and free ports on 127.0.0.1 and 127.0.0.2.
L{cluster_stack} brings it up and removes everything at the end, even on failure, and
asserts that nothing is left. Reusable by any multi-node test (moving sites, ...).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manager_calls import ManagerAPI, wait
from services import api_request, free_port, front_get

from director.cluster.host import (
    HostPorts,
    host_config,
    host_dir,
    orchestrator_name,
    start_component,
    wait_component,
)
from director.cluster.layout import Layout
from director.cluster.nodes import (
    State,
    down,
    routes_overlapping,
    start_engine,
    start_orchestrator,
    stop_engine,
    up,
    wait_orchestrator,
)
from director.cluster.processes import _alive
from director.common.config import Config, load_config

BIN = Path(sys.executable).parent
RUN_SH = b'#!/bin/sh\nexec python3 -m http.server "$PORT" --directory /site/public\n'


@dataclass
class ClusterStack(ManagerAPI):
    """
    What a test needs of the cluster: the API (manager a's; C{api_on} either), the routers'
    fronts, the node engines, and killing (by pid) and restarting any part.
    """

    layout: Layout
    ports: HostPorts
    config: Config
    token: str
    pids: list[int] = field(default_factory=list)
    operation_timeout: float = 180

    @property
    def manager_url(self) -> str:
        return self.ports.manager_url(0)

    def api_on(
        self, i: int, method: str, path: str, body: Any = None, timeout: float = 30
    ) -> tuple[int, bytes]:
        """One API call to manager C{i} (0: a, 1: b): (status, body); 0 when it is down."""
        try:
            return api_request(self.ports.manager_url(i), self.token, method, path, body,
                               timeout=timeout)  # fmt: skip
        except OSError as e:
            return 0, str(e).encode()

    @property
    def sites_domain(self) -> str:
        return self.config.director.sites_domain

    def node_address(self, n: int) -> str:
        return self.layout.address(n)

    def orchestrator(self, n: int) -> str:
        """The pool's name of node C{n}'s orchestrator."""
        return orchestrator_name(n)

    def log_tail(self) -> str:
        logs = [*host_dir(self.layout).glob("*.log"), *self.layout.base.glob("n*/*.log")]
        return "\n".join(f"--- {p}\n" + p.read_text(errors="replace")[-3000:] for p in logs)

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """C{director ARGS --config <the host's config>}; its output."""
        return subprocess.run(
            [str(BIN / "director"), *args, "--config", str(host_config(self.layout))],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    def front(
        self, name: str, timeout: float = 5, path: str = "/", router: int = 0
    ) -> tuple[int, bytes]:
        """GET C{path} of site C{name} through router C{router}'s front (0: no answer)."""
        return self.front_host(f"{name}.{self.sites_domain}", timeout, path, router)

    def front_host(
        self, host: str, timeout: float = 5, path: str = "/", router: int = 0
    ) -> tuple[int, bytes]:
        """GET C{path} for C{Host: host} through router C{router}'s front (0: no answer)."""
        return front_get(self.ports.http, host, path, timeout, self.ports.addresses[router])

    def wait_served(self, name: str, body: bytes, timeout: float = 120) -> None:
        last: list[tuple[int, bytes]] = [(0, b"")]

        def served() -> bool:
            last[0] = self.front(name)
            return last[0] == (200, body)

        try:
            wait(served, f"{name} serving {body!r}", timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}; last answer {last[0]!r}\n{self.log_tail()}") from None

    def create_site(
        self,
        name: str,
        kind: str,
        body: bytes,
        orchestrator: str | None = None,
        users: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """A site created through the API (on C{orchestrator}, or placed), with its files."""
        request: dict[str, Any] = {"name": name, "type": "static"}
        if orchestrator is not None:
            request["orchestrator"] = orchestrator
        if users:
            request["users"] = list(users)
        self.wait_operation(self.api("POST", "/api/v1/sites", request))
        if kind == "dynamic":
            self.api("PUT", f"/api/v1/sites/{name}/files/run.sh?mode=755", raw=RUN_SH)
        self.api("PUT", f"/api/v1/sites/{name}/files/public/index.html", raw=body)
        if kind == "dynamic":
            self.wait_operation(self.api("PATCH", f"/api/v1/sites/{name}", {"type": "dynamic"}))
        site: dict[str, Any] = self.api("GET", f"/api/v1/sites/{name}")
        return site

    def pool_names(self, i: int) -> list[str]:
        """The orchestrators in manager C{i}'s pool that answered its last check."""
        status, content = self.api_on(i, "GET", "/api/v1/orchestrators")
        listed = json.loads(content)["orchestrators"] if status == 200 else []
        return sorted(o["name"] for o in listed if o["healthy"])

    def pid(self, key: str) -> int:
        """The pid the state file records for C{key} (host-manager-a, orchestrator-2, ...)."""
        pid = State.load(self.layout.state_file).pid(key)
        assert pid is not None, key
        return pid

    def kill(self, key: str) -> None:
        """kill -9 of the process recorded as C{key}; returns once it is gone."""
        pid = self.pid(key)
        os.kill(pid, signal.SIGKILL)
        wait(lambda: not _alive(pid), f"{key} (pid {pid}) gone", 10)

    def restart(self, key: str) -> None:
        """The host's component C{key} started again (recorded, so ended at `down`)."""
        self.pids.append(start_component(self.layout, key))
        wait_component(self.layout, key, self.ports)

    def kill_node(self, n: int) -> None:
        """
        Node C{n} down as in a power cut: its orchestrator, its nginx and its dockerd (with
        its containers) killed with SIGKILL, by pid.
        """
        self.kill(f"orchestrator-{n}")
        for pidfile in self.layout.state_dir(n).glob("**/nginx.pid"):
            text = pidfile.read_text().strip()
            if text.isdigit() and _alive(int(text)):
                # the master and its workers (which would go on serving without it)
                for pid in (int(text), *_children(int(text))):
                    os.kill(pid, signal.SIGKILL)
        self.kill_engine(n)

    def restart_node(self, n: int) -> None:
        """Node C{n} back: its engine (its network store dropped), then its orchestrator."""
        self.restart_engine(n)
        start_orchestrator(self.layout, n)
        self.pids.append(self.pid(f"orchestrator-{n}"))
        wait_orchestrator(self.layout, n)

    def kill_engine(self, n: int) -> None:
        """Node C{n}'s dockerd killed (a power cut; its orchestrator keeps running)."""
        stop_engine(self.layout, n, signal.SIGKILL)

    def restart_engine(self, n: int) -> None:
        """Node C{n}'s dockerd started again, its network store dropped (docs/deploy.md)."""
        start_engine(self.layout, n, forget_networks=True)
        self.pids.append(State.load(self.layout.state_file).pid(f"dockerd-{n}") or 0)


def _children(parent: int) -> list[int]:
    """The pids whose parent is C{parent}."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def _recorded_pids(layout: Layout) -> list[int]:
    if not layout.state_file.exists():
        return []
    state = State.load(layout.state_file)
    pids = [int(p["pid"]) for p in state.data["processes"].values()]
    for pidfile in layout.base.glob("**/nginx.pid"):
        text = pidfile.read_text().strip()
        if text.isdigit():
            pids.append(int(text))
    return pids


def _naming(layout: Layout) -> list[tuple[int, str]]:
    """Processes whose command line names the cluster's directories (any we did not record)."""
    marks = (str(layout.base), str(layout.run_dir))
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _running(int(entry.name)):
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(mark in line for mark in marks):
                found.append((int(entry.name), line))
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def pick_layout(prefix: str) -> Layout:
    """A two-node layout under C{prefix}+pid, on an octet no route of the host uses."""
    tag = f"{os.getpid() % 10000:04d}"
    octets = random.sample(range(16, 32), 16)
    return next(
        (
            Layout(f"{prefix}{tag}", 2, o)
            for o in octets
            if not routes_overlapping(Layout("x", 2, o))
        ),
        Layout(f"{prefix}{tag}", 2, octets[0]),  # up says which route is in the way
    )


@dataclass
class Nodes:
    """A cluster that is up: its layout, and the pids that must be gone once it is down."""

    layout: Layout
    #: what was recorded when it came up; a test adds what it starts (a restarted engine)
    pids: list[int]


@contextmanager
def cluster_nodes(
    prefix: str, host: HostPorts | None = None, host_settings: tuple[str, ...] = ()
) -> Iterator[Nodes]:
    """
    The nodes (with the host's components on C{host}'s ports, if given), up under C{prefix}
    on a free octet; everything removed afterwards, even on failure, and checked to be gone:
    namespaces, links, files, the processes recorded and any naming the cluster's paths.
    """
    layout = pick_layout(prefix)
    started = time.monotonic()
    try:
        timings = up(layout, say=lambda line: None, host=host, host_settings=host_settings)
    except Exception:
        assert not _namespaces() & {layout.hub, layout.netns(1), layout.netns(2)}
        raise
    print(f"cluster up in {time.monotonic() - started:.1f} s: {timings}")
    nodes = Nodes(layout, _recorded_pids(layout))
    try:
        yield nodes
    finally:
        pids = sorted(set(nodes.pids + _recorded_pids(layout)))
        started = time.monotonic()
        timings = down(layout, say=lambda line: None)
        print(f"cluster down in {time.monotonic() - started:.1f} s: {timings}")
        left = _namespaces() & {layout.hub, layout.netns(1), layout.netns(2)}
        assert not left, f"namespaces left behind: {left}"
        alive = [pid for pid in pids if _running(pid)]
        assert not alive, f"processes left behind: {alive}"
        naming = _naming(layout)
        assert not naming, f"processes naming the cluster's directories left behind: {naming}"
        assert not layout.base.exists() and not layout.run_dir.exists()
        links = subprocess.run(["ip", "link", "show"], capture_output=True, text=True).stdout
        assert layout.host_link not in links


@contextmanager
def cluster_stack(prefix: str = "dm", settings: tuple[str, ...] = ()) -> Iterator[ClusterStack]:
    """
    The whole cluster with the host's managers, routers and shell (L{cluster_nodes});
    C{settings}: further settings of theirs.
    """
    both = ("127.0.0.1", "127.0.0.2")

    def port() -> int:
        return free_port(also_bind=both[1:])

    ports = HostPorts(
        manager=port(), router_api=port(), http=port(), https=port(), shell=free_port(),
        postgres=free_port(), redis=free_port(), addresses=both,
    )  # fmt: skip
    with cluster_nodes(prefix, ports, ("manager.bcrypt_rounds=4", *settings)) as nodes:
        config_path = host_config(nodes.layout)
        token = subprocess.run(
            [str(BIN / "director"), "token", "create", "admin", "--config", str(config_path)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        stack = ClusterStack(nodes.layout, ports, load_config(config_path), token, nodes.pids)
        for i in (0, 1):  # both managers' pools have both nodes, up (checked after start)
            wait(lambda i=i: stack.pool_names(i) == ["node1", "node2"],
                 f"manager {'ab'[i]}'s pool to list both nodes", 90, stack.log_tail)  # fmt: skip
        yield stack
