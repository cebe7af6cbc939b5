"""
Several nodes through the real manager: a two-node cluster (a dockerd and an orchestrator
per node) driven by a manager, a router and a shell on the host (what `make cluster`
starts). Sites placed on node 1, on node 2 and by the default placement are all served
through the one router; node 2's engine killed takes only node 2's dynamic site, which
serves again once the engine is back, without an administrator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from cluster_stack import ClusterStack, cluster_stack, wait


@pytest.fixture(scope="module")
def stack() -> Iterator[ClusterStack]:
    started = time.monotonic()
    with cluster_stack("dm") as made:
        yield made
    print(f"test_cluster_manager: module took {time.monotonic() - started:.1f} s")


def test_pool_lists_both_nodes(stack: ClusterStack) -> None:
    """The manager registered its configured orchestrator (node 1's) beside node 2's."""

    def both_up() -> bool:
        listed = stack.api("GET", "/api/v1/orchestrators")["orchestrators"]
        return sorted(o["name"] for o in listed) == ["node1", "node2"]

    wait(both_up, "both orchestrators in the pool", 30)


def test_sites_on_both_nodes_through_one_router(stack: ClusterStack) -> None:
    """
    Static and dynamic sites on node 1 and node 2 (the admin's choice) and one placed by
    the default (the fewest sites: node 1, which then has fewer), all through one router.
    """
    s = stack
    made = {
        "st1": s.create_site("st1", "static", b"static on node 1", "node1"),
        "st2": s.create_site("st2", "static", b"static on node 2", "node2"),
        "dy2": s.create_site("dy2", "dynamic", b"dynamic on node 2", "node2"),
    }
    # node 1 has 1 site, node 2 has 2: the default placement picks node 1
    made["dy1"] = s.create_site("dy1", "dynamic", b"dynamic on node 1")
    assert {name: site["orchestrator"] for name, site in made.items()} == {
        "st1": "node1",
        "st2": "node2",
        "dy2": "node2",
        "dy1": "node1",
    }
    for name, body in (
        ("st1", b"static on node 1"),
        ("st2", b"static on node 2"),
        ("dy2", b"dynamic on node 2"),
        ("dy1", b"dynamic on node 1"),
    ):
        s.wait_served(name, body)
    # files written through the API on a node-2 site show up served
    s.api("PUT", "/api/v1/sites/dy2/files/public/index.html", raw=b"rewritten on node 2")
    s.wait_served("dy2", b"rewritten on node 2", timeout=30)
    s.api("PUT", "/api/v1/sites/dy2/files/public/index.html", raw=b"dynamic on node 2")
    s.wait_served("dy2", b"dynamic on node 2", timeout=30)
    listed = {o["name"]: o for o in s.api("GET", "/api/v1/orchestrators")["orchestrators"]}
    assert (listed["node1"]["sites"], listed["node2"]["sites"]) == (2, 2), listed


def test_node2_engine_killed(stack: ClusterStack) -> None:
    """
    Node 2's dockerd killed: its dynamic site answers 503 through the router, node 1's sites
    (and node 2's static one, served by node 2's nginx without a container) keep serving
    with no failed request; once the engine is back its site serves again by itself.
    """
    s = stack
    for name in ("st1", "dy1", "st2", "dy2"):
        if s.front(name)[0] != 200:
            pytest.skip(f"{name} is not served (see the test before)")
    failures: list[tuple[str, int]] = []
    polls = {"count": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for name in ("st1", "dy1", "st2"):
                status = s.front(name)[0]
                if status != 200:
                    failures.append((name, status))
            polls["count"] += 1
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        s.kill_engine(2)
        wait(lambda: s.front("dy2")[0] == 503, "node 2's dynamic site answering 503", 60)
        # the orchestrator process still runs: what the API says of the site
        shown = s.api("GET", "/api/v1/sites/dy2")
        print(f"node 2's engine down: the API shows dy2 with status {shown['status']!r}")
        started = time.monotonic()
        s.restart_engine(2)
        s.wait_served("dy2", b"dynamic on node 2", timeout=180)
        print(f"node 2's dynamic site back {time.monotonic() - started:.1f} s after its engine")
    finally:
        stop.set()
        poller.join()
    assert polls["count"] > 10
    assert failures == [], failures
