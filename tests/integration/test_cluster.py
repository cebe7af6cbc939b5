"""
A real two-node swarm on this machine (director.cluster: a dockerd per network namespace),
an orchestrator on each node (real twistd processes): sites are served from the node whose
orchestrator they were put on, each orchestrator sees only its own, and a node whose engine
goes down takes only its own dynamic sites with it, which come back with the engine.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import pytest_twisted
from cluster_stack import RUN_SH, Nodes, cluster_nodes
from services import front_get
from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool

from director.cluster.layout import NGINX_PORT
from director.cluster.nodes import (
    State,
    docker,
    start_engine,
    stop_engine,
    up,
)
from director.common.client import ComponentClient
from director.common.config import load_config
from director.common.service import component_signer
from director.orchestrator.docker_gateway import OWNER_LABEL
from director.orchestrator.images import PYTHON_IMAGE

#: Node n's sites: a static one (id 10n+1) and a dynamic one (id 10n+2).
STATIC, DYNAMIC = 1, 2


def site_id(n: int, kind: int) -> int:
    return 10 * n + kind


def site_name(n: int, kind: int) -> str:
    return f"{'static' if kind == STATIC else 'dyn'}{n}"


class Cluster:
    def __init__(self, nodes: Nodes) -> None:
        self.layout = nodes.layout
        self.domain = load_config(self.layout.config(1)).director.sites_domain
        #: the pids that must be gone at the end (the fixture's check): tests add theirs
        self.pids = nodes.pids

    def get(self, n: int, name: str, timeout: float = 2) -> tuple[int, bytes]:
        """GET / of site C{name} through node C{n}'s nginx, from the host."""
        address = self.layout.address(n)
        return front_get(NGINX_PORT, f"{name}.{self.domain}", "/", timeout, address)

    def wait_for(self, n: int, name: str, body: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        got: tuple[int, bytes] = (0, b"")
        while time.monotonic() < deadline:
            got = self.get(n, name)
            if got[0] == 200 and body in got[1]:
                return
            time.sleep(0.1)
        raise AssertionError(f"node {n}, {name}: wanted 200 {body!r}, last got {got!r}")

    def client(self, n: int) -> ComponentClient:
        """A client of node C{n}'s orchestrator, signing as the manager."""
        from twisted.internet import reactor

        config = load_config(self.layout.config(n))
        pool = HTTPConnectionPool(reactor, persistent=False)
        return ComponentClient(
            reactor,
            component_signer(reactor, config, "manager"),
            "orchestrator",
            self.layout.api_url(n),
            HTTPClient(Agent(reactor, pool=pool)),
            timeout=120,
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """
    Two nodes with an orchestrator each, under a prefix and an octet of their own (so a
    `make cluster` running meanwhile is not touched); removed at the end, even on failure.
    """
    with cluster_nodes("dt") as nodes:
        yield Cluster(nodes)


async def _put_sites(c: Cluster, n: int) -> None:
    """Node C{n}'s static and dynamic sites, put on its own orchestrator."""
    client = c.client(n)
    static, dynamic = site_id(n, STATIC), site_id(n, DYNAMIC)
    await client.json(
        "PUT", f"/v1/sites/{static}", json={"name": site_name(n, STATIC), "type": "static"}
    )
    await client.json(
        "PUT",
        f"/v1/sites/{static}/files/public/index.html",
        data=f"static on node {n}".encode(),
    )
    name = site_name(n, DYNAMIC)
    await client.json("PUT", f"/v1/sites/{dynamic}", json={"name": name, "type": "static"})
    await client.json(
        "PUT", f"/v1/sites/{dynamic}/files/run.sh", data=RUN_SH, params={"mode": "755"}
    )
    await client.json(
        "PUT",
        f"/v1/sites/{dynamic}/files/public/index.html",
        data=f"dynamic on node {n}".encode(),
    )
    status = await client.json(
        "PUT", f"/v1/sites/{dynamic}", json={"name": name, "type": "dynamic", "image": PYTHON_IMAGE}
    )
    assert status["upstream"], status


def _task_nodes(c: Cluster, service: str) -> set[str]:
    listed = docker(
        c.layout, 1, "service", "ps", service, "--filter", "desired-state=running",
        "--format", "{{.Node}} {{.CurrentState}}",
    )  # fmt: skip
    return {line.split()[0] for line in listed.splitlines() if " Running" in line}


@pytest_twisted.ensureDeferred
async def test_sites_served_from_their_nodes(cluster: Cluster) -> None:
    """
    Sites put on node 2's orchestrator (a worker: services go through node 1, the manager)
    run on node 2 and are served by node 2's nginx; node 1's likewise; each orchestrator
    lists only its own sites.
    """
    c = cluster
    for n in (2, 1):
        started = time.monotonic()
        await _put_sites(c, n)
        c.wait_for(n, site_name(n, STATIC), f"static on node {n}".encode())
        c.wait_for(n, site_name(n, DYNAMIC), f"dynamic on node {n}".encode())
        print(f"node {n}: sites served {time.monotonic() - started:.1f} s after the first PUT")
        service = f"site_{site_id(n, DYNAMIC)}"
        assert _task_nodes(c, service) == {c.layout.hostname(n)}
        inspected = json.loads(docker(c.layout, 1, "service", "inspect", service))[0]["Spec"]
        assert inspected["Labels"][OWNER_LABEL] == c.layout.hostname(n)
        assert inspected["TaskTemplate"]["Placement"]["Constraints"] == [
            f"node.hostname=={c.layout.hostname(n)}"
        ]
        # the other node's nginx knows nothing of these sites
        other = 3 - n
        assert c.get(other, site_name(n, STATIC))[0] == 404
    for n in (1, 2):
        listed = await c.client(n).json("GET", "/v1/sites")
        assert sorted((s["id"], s["healthy"]) for s in listed["sites"]) == [
            (site_id(n, STATIC), True),
            (site_id(n, DYNAMIC), True),
        ], listed


@pytest_twisted.ensureDeferred
async def test_a_node_going_down_takes_only_its_own_sites(cluster: Cluster) -> None:
    """
    While node 2's dockerd is stopped, node 1's sites answer 200 throughout (and node 2's
    static site, which needs no container, too); once it is started again, node 2's dynamic
    site serves again without any call to its orchestrator. The same when node 2's dockerd
    is killed (and restarted with its network store dropped, the documented recovery).
    """
    c = cluster
    if c.get(2, site_name(2, DYNAMIC))[0] != 200:
        await _put_sites(c, 2)
        await _put_sites(c, 1)
    for n in (1, 2):
        c.wait_for(n, site_name(n, DYNAMIC), f"dynamic on node {n}".encode())
    failures: list[tuple[str, int]] = []
    polls = {"count": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for n, kind in ((1, DYNAMIC), (1, STATIC), (2, STATIC)):
                status = c.get(n, site_name(n, kind))[0]
                if status != 200:
                    failures.append((site_name(n, kind), status))
            polls["count"] += 1
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        started = time.monotonic()
        stop_engine(c.layout, 2)
        stopped = time.monotonic() - started
        assert c.get(2, site_name(2, DYNAMIC))[0] != 200, "node 2's task outlived its engine"
        started = time.monotonic()
        start_engine(c.layout, 2)
        c.pids.append(State.load(c.layout.state_file).pid("dockerd-2") or 0)
        c.wait_for(2, site_name(2, DYNAMIC), b"dynamic on node 2", timeout=120)
        back = time.monotonic() - started
        print(f"node 2's engine stopped in {stopped:.1f} s; its site back {back:.1f} s after")
        # Uncleanly now (a power cut): the engine killed; its containers outlive it (their
        # shims do) until it comes back, with its network store dropped (moby#37087).
        stop_engine(c.layout, 2, signal.SIGKILL)
        started = time.monotonic()
        start_engine(c.layout, 2, forget_networks=True)
        c.pids.append(State.load(c.layout.state_file).pid("dockerd-2") or 0)
        c.wait_for(2, site_name(2, DYNAMIC), b"dynamic on node 2", timeout=120)
        back = time.monotonic() - started
        print(f"node 2's engine killed; its site back {back:.1f} s after it was started")
    finally:
        stop.set()
        poller.join()
    assert polls["count"] > 10
    assert failures == [], failures
    assert _task_nodes(c, f"site_{site_id(2, DYNAMIC)}") == {c.layout.hostname(2)}


def test_up_refuses_a_cluster_that_is_up(cluster: Cluster) -> None:
    """A second `up` of the same cluster says so and changes nothing."""
    from director.cluster.nodes import ClusterError

    before = State.load(cluster.layout.state_file).data
    with pytest.raises(ClusterError, match="is up already"):
        up(cluster.layout, say=lambda line: None)
    assert State.load(cluster.layout.state_file).data == before
