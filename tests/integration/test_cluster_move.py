"""
Moving sites between nodes through the real manager: on the two-node cluster
(L{cluster_stack}), a static site and a dynamic site with a database, both on node 2, are
moved to node 1 while a loop of requests goes through the router. They keep their files and
their database; the static site fails no request, the dynamic one few (bounded) and none
once its move is over; each move's timeline (when each action ended, when requests failed)
is printed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cluster_stack import ClusterStack, cluster_stack, wait
from request_loop import RequestLoop

from director.cluster.nodes import docker


@dataclass
class MoveResult:
    """A move under load: the request loop (stopped), the operation, when each action ended."""

    requests: RequestLoop
    operation: dict[str, Any]
    took: float
    #: (action, seconds after the move was asked for when it was seen done)
    timeline: list[tuple[str, float]] = field(default_factory=list)
    #: when (time.monotonic()) the operation was seen to have succeeded
    done_at: float = 0.0

    @property
    def failed_after_the_move(self) -> list[str]:
        """Requests that failed once the operation had succeeded (the site must serve)."""
        late = [at for at in self.requests.failed_at if at > self.done_at]
        return self.requests.failures[len(self.requests.failures) - len(late) :]

    @property
    def failures(self) -> list[str]:
        return self.requests.failures

    @property
    def ok(self) -> int:
        return self.requests.ok

    @property
    def downtime(self) -> float:
        return self.requests.downtime


def move_under_load(stack: ClusterStack, name: str, body: bytes, target: str) -> MoveResult:
    """
    Move site C{name} to C{target} while a loop of requests goes through the router; the
    operation is polled often, so the printed timeline says which action the failed
    requests fell in.
    """
    loop = RequestLoop(stack.ports.http, f"{name}.{stack.sites_domain}", body, interval=0.01)
    loop.start()
    timeline: list[tuple[str, float]] = []
    try:
        time.sleep(1.0)  # requests before the move too
        started = time.monotonic()
        answer = stack.api("POST", f"/api/v1/sites/{name}/move", {"orchestrator": target})
        op_id = answer["operation"]["id"]
        op: dict[str, Any] = {}
        seen: set[str] = set()
        deadline = started + 300
        while time.monotonic() < deadline:
            op = stack.api("GET", f"/api/v1/operations/{op_id}")
            for action in op["actions"]:
                if action["status"] == "succeeded" and action["name"] not in seen:
                    seen.add(action["name"])
                    timeline.append((action["name"], time.monotonic() - started))
            if op["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.05)
        done_at = time.monotonic()
        took = done_at - started
        assert op.get("status") == "succeeded", (op, stack.log_tail())
        time.sleep(3.0)  # and after it (the removal from the source included)
    finally:
        loop.stop()
    steps = ", ".join(f"{a}: {t:.2f}" for a, t in timeline)
    failed = ""
    if loop.failed_at:
        failed = (
            f"; failures from {loop.failed_at[0] - started:.2f} s "
            f"to {loop.failed_at[-1] - started:.2f} s"
        )
    print(
        f"move of {name} to {target}: {took:.1f} s; {loop.ok} requests answered, "
        f"{len(loop.failures)} failed, downtime {loop.downtime:.2f} s{failed} "
        f"(actions done at: {steps})"
    )
    return MoveResult(loop, op, took, timeline, done_at)


@pytest.fixture(scope="module")
def stack() -> Iterator[ClusterStack]:
    with cluster_stack("dv") as made:
        yield made


def _query(stack: ClusterStack, site: str, sql: str) -> Any:
    return stack.api("POST", f"/api/v1/sites/{site}/database/query", {"sql": sql})


#: At most this many requests (one every 10 ms) may fail while a dynamic site moves (about
#: half a second's worth): its old process keeps serving for 2 s after the new one serves on
#: the target (sites.STOP_LINGER), while the router's reload onto the target takes effect.
#: Measured: 0-4 failed. Before: 59 (1.4 s) without the linger, 268 (3.4 s) when the source
#: also removed the service the target had taken over.
DYNAMIC_MOVE_FAILURES = 50


def _check_dynamic_move(move: MoveResult) -> None:
    """A dynamic site's move: few failures, and none once it is over (the source's removal
    leaves the service the target took over)."""
    assert move.failed_after_the_move == [], move.failed_after_the_move[:10]
    assert len(move.failures) <= DYNAMIC_MOVE_FAILURES, (len(move.failures), move.failures[:10])
    assert move.ok > 50


def test_static_and_dynamic_sites_move_to_the_other_node(stack: ClusterStack) -> None:
    s = stack
    s.create_site("mvst", "static", b"static moved", "node2")
    s.create_site("mvdy", "dynamic", b"dynamic moved", "node2")
    s.api("PUT", "/api/v1/sites/mvst/files/private/notes.txt", raw=b"kept with the site")
    s.api("PUT", "/api/v1/sites/mvdy/files/private/data.txt", raw=b"dynamic data")
    s.wait_served("mvst", b"static moved")
    s.wait_served("mvdy", b"dynamic moved")

    static = move_under_load(s, "mvst", b"static moved", "node1")
    assert static.failures == [], static.failures[:10]
    assert static.ok > 50
    dynamic = move_under_load(s, "mvdy", b"dynamic moved", "node1")
    _check_dynamic_move(dynamic)

    for name in ("mvst", "mvdy"):
        assert s.api("GET", f"/api/v1/sites/{name}")["orchestrator"] == "node1"
    assert s.api("GET", "/api/v1/sites/mvst/files/private/notes.txt") == b"kept with the site"
    assert s.api("GET", "/api/v1/sites/mvdy/files/private/data.txt") == b"dynamic data"
    s.wait_served("mvst", b"static moved")
    s.wait_served("mvdy", b"dynamic moved")
    listed = {o["name"]: o for o in s.api("GET", "/api/v1/orchestrators")["orchestrators"]}
    assert listed["node2"]["sites"] == 0, listed
    # The dynamic site's container runs on node 1 only.
    site_id = s.api("GET", "/api/v1/sites/mvdy")["id"]
    label = f"label=director.site={site_id}"
    assert docker(s.layout, 1, "ps", "-q", "--filter", label).split()
    wait(
        lambda: not docker(s.layout, 2, "ps", "-aq", "--filter", label).split(),
        "node 2's container of the moved site to go",
        60,
    )
    # And back, away from the router's default orchestrator (node 1): the router switches
    # from its default group to node 2's nginx.
    back = move_under_load(s, "mvdy", b"dynamic moved", "node2")
    _check_dynamic_move(back)
    assert s.api("GET", "/api/v1/sites/mvdy")["orchestrator"] == "node2"
    assert docker(s.layout, 2, "ps", "-q", "--filter", label).split()


def test_a_site_keeps_its_database_across_a_move(stack: ClusterStack) -> None:
    """The database lives on the host's server: untouched, reached from node 1 afterwards."""
    s = stack
    s.create_site("mvdb", "dynamic", b"with a database", "node2")
    s.wait_operation(s.api("POST", "/api/v1/sites/mvdb/database", {"type": "postgres"}))
    _query(s, "mvdb", "CREATE TABLE kept (v text)")
    _query(s, "mvdb", "INSERT INTO kept VALUES ('written on node 2')")
    url = s.api("GET", "/api/v1/sites/mvdb/database")["url"]
    s.wait_served("mvdb", b"with a database")
    probe = move_under_load(s, "mvdb", b"with a database", "node1")
    _check_dynamic_move(probe)
    assert s.api("GET", "/api/v1/sites/mvdb")["orchestrator"] == "node1"
    assert _query(s, "mvdb", "SELECT v FROM kept")["rows"] == [["written on node 2"]]
    assert s.api("GET", "/api/v1/sites/mvdb/database")["url"] == url


def test_drain_moves_every_site_off(stack: ClusterStack) -> None:
    s = stack
    s.create_site("drst", "static", b"drained", "node2")
    s.api("POST", "/api/v1/orchestrators/node2/drain")

    def drained() -> bool:
        listed = {o["name"]: o for o in s.api("GET", "/api/v1/orchestrators")["orchestrators"]}
        return bool(listed["node2"]["sites"] == 0)

    wait(drained, "node 2 drained", 180)
    assert s.api("GET", "/api/v1/sites/drst")["orchestrator"] == "node1"
    s.wait_served("drst", b"drained")
    assert "left" in s.cli("orchestrator", "list")
