"""
On a two-node cluster with the manager, router and shell on the host (what `make cluster`
starts; tests/integration/cluster_stack.py), the time from site create (API POST, placed on
node 1 or node 2 by the admin's `orchestrator`) to the first 200 through the one router,
static and dynamic: what placing a site on a worker node costs next to the swarm manager.
As root; brings its own cluster up and down (about a minute each way).

    .venv/bin/python bench/cluster_placement.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "integration"))

from cluster_stack import RUN_SH, ClusterStack, cluster_stack


def _until_served(stack: ClusterStack, name: str, body: bytes, start: float, limit: float) -> float:
    while stack.front(name, timeout=2) != (200, body):
        if time.monotonic() > start + limit:
            raise SystemExit(f"{name} never served {body!r}")
        time.sleep(0.01)
    return time.monotonic() - start


def _static(stack: ClusterStack, name: str, orchestrator: str) -> float:
    """POST of the site -> its public/index.html served."""
    start = time.monotonic()
    stack.api(
        "POST", "/api/v1/sites", {"name": name, "type": "static", "orchestrator": orchestrator}
    )
    while True:
        try:
            stack.api("PUT", f"/api/v1/sites/{name}/files/public/index.html", raw=name.encode())
            break
        except AssertionError:  # not created on its orchestrator yet
            time.sleep(0.01)
    return _until_served(stack, name, name.encode(), start, 60)


def _dynamic(stack: ClusterStack, name: str, orchestrator: str) -> float:
    """POST of a dynamic site -> its process's first 200 (run.sh written as soon as allowed)."""
    start = time.monotonic()
    stack.api(
        "POST", "/api/v1/sites", {"name": name, "type": "dynamic", "orchestrator": orchestrator}
    )
    while True:
        try:
            stack.api("PUT", f"/api/v1/sites/{name}/files/run.sh?mode=755", raw=RUN_SH)
            stack.api("PUT", f"/api/v1/sites/{name}/files/public/index.html", raw=name.encode())
            break
        except AssertionError:
            time.sleep(0.01)
    # the service may have started before run.sh was there: restart it (once the creation
    # has finished: until then the restart is refused)
    while True:
        try:
            stack.api("POST", f"/api/v1/sites/{name}/restart")
            break
        except AssertionError:
            if time.monotonic() > start + 120:
                raise
            time.sleep(0.05)
    return _until_served(stack, name, name.encode(), start, 120)


def _figures(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f} s, min {min(values):.2f} s, "
        f"max {max(values):.2f} s (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    with cluster_stack("bp") as stack:
        print(f"cluster with manager, router and shell up in {time.monotonic() - started:.1f} s")
        results: dict[tuple[str, int], list[float]] = {}
        for i in range(args.repeat):
            for n in (1, 2):
                results.setdefault(("static", n), []).append(
                    _static(stack, f"bs{n}x{i}", stack.orchestrator(n))
                )
                results.setdefault(("dynamic", n), []).append(
                    _dynamic(stack, f"bd{n}x{i}", stack.orchestrator(n))
                )
        for (kind, n), values in sorted(results.items()):
            role = "swarm manager" if n == 1 else "worker"
            print(f"{kind:<7} on node {n} ({role:<13}): create -> first 200 {_figures(values)}")


if __name__ == "__main__":
    main()
