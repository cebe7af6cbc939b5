"""
Downtime of moving a site between nodes: on the two-node cluster of the integration tests
(tests/integration/cluster_stack.py: real dockerds, orchestrators, the manager and router on
the host), a static and a dynamic site (with a 5 MB file) are moved node 2 -> node 1 -> node
2 ... while a loop of requests goes through the router. For each move: how long the
operation took, the requests answered and failed, and the longest run of failures.

    sudo .venv/bin/python bench/move_downtime.py [--moves 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "integration"))

from cluster_stack import cluster_stack
from test_cluster_move import move_under_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moves", type=int, default=2, help="moves of each site")
    args = parser.parse_args()
    with cluster_stack("db") as s:
        bodies = {"bst": b"static under move", "bdy": b"dynamic under move"}
        s.create_site("bst", "static", bodies["bst"], "node2")
        s.create_site("bdy", "dynamic", bodies["bdy"], "node2")
        for name in bodies:
            s.api("PUT", f"/api/v1/sites/{name}/files/private/blob", raw=os.urandom(5 << 20))
            s.wait_served(name, bodies[name])
        results: dict[str, list[tuple[float, int, int]]] = {"bst": [], "bdy": []}
        for i in range(args.moves):
            target = "node1" if i % 2 == 0 else "node2"
            for name, body in bodies.items():
                probe = move_under_load(s, name, body, target)
                results[name].append((probe.downtime, probe.ok, len(probe.failures)))
                if probe.failures:
                    print(f"  failures of {name}: {sorted(set(probe.failures))[:3]}")
        print()
        print(f"{'site':<8} {'moves':>5} {'downtime max (s)':>17} {'median':>7} {'failed':>7}")
        for name, kind in (("bst", "static"), ("bdy", "dynamic")):
            rows = results[name]
            downs = [d for d, _, _ in rows]
            failed = sum(f for _, _, f in rows)
            print(
                f"{kind:<8} {len(rows):>5} {max(downs):>17.2f} "
                f"{statistics.median(downs):>7.2f} {failed:>7}"
            )


if __name__ == "__main__":
    main()
