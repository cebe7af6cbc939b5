"""
Two managers versus one: requests per second of authenticated GET /api/v1/sites/{name}
(target: >= 1.6x with two). Real processes: one PostgreSQL, one Redis, an orchestrator, a
router and two managers (tests/integration/manager_pair.py). There is no front for the
managers here (the routers serve sites; the dashboard host on the routers is another piece of
work), so the client spreads the load itself: one wrk process per manager, run at the same
time, their rates added. "One" runs the same total connections against manager A alone
(manager B idle). Rounds alternate one/two, in the same run.

    .venv/bin/python bench/two_managers.py [--seconds 10] [--connections 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

from manager_pair import ManagerPair, Process, discard, start_pair
from services import PostgresServer, RedisServer, Services


def wrk(pair: ManagerPair, managers: list[Process], connections: int, seconds: int) -> float:
    """Requests per second over C{managers} at once (one wrk each, connections split)."""
    each = max(1, connections // len(managers))
    auth = f"Authorization: Bearer {pair.token}"
    runs = []
    for m in managers:
        argv = ["wrk", "-t1", f"-c{each}", f"-d{seconds}s", "--timeout", "10s", "-H", auth]
        argv.append(f"{pair.url(m)}/api/v1/sites/bench")
        runs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    total = 0.0
    for run in runs:
        out, _ = run.communicate(timeout=seconds + 60)
        rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if rate is None or errors is not None:
            raise RuntimeError(f"wrk failed or saw errors:\n{out}")
        total += float(rate.group(1))
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="director-bench-two-", dir="/tmp"))
    base.chmod(0o755)
    with Services(base) as services:
        postgres = services.start(PostgresServer(base))
        redis = services.start(RedisServer(base))
        pair = start_pair(postgres, redis, prefix="director-bench-two-")
        try:
            answer = pair.api(pair.a, "POST", "/api/v1/sites", {"name": "bench", "type": "static"})
            pair.wait_operation(pair.a, answer["operation"]["id"])
            for m in (pair.a, pair.b):  # both answer, and warm
                assert pair.api(m, "GET", "/api/v1/sites/bench")["name"] == "bench"
                wrk(pair, [m], 4, 2)
            ones, twos = [], []
            for _ in range(args.rounds):
                ones.append(wrk(pair, [pair.a], args.connections, args.seconds))
                twos.append(wrk(pair, [pair.a, pair.b], args.connections, args.seconds))
            one, two = max(ones), max(twos)
            print(f"cores: {len(__import__('os').sched_getaffinity(0))}")
            print(
                f"one manager:  {one:8.1f} req/s  (rounds: {', '.join(f'{r:.1f}' for r in ones)})"
            )
            print(
                f"two managers: {two:8.1f} req/s  (rounds: {', '.join(f'{r:.1f}' for r in twos)})"
            )
            print(
                f"ratio: {two / one:.2f}x (target >= 1.6x); wrk -t1, {args.connections} "
                f"connections in all, {args.seconds} s per measurement"
            )
        finally:
            discard(pair, postgres)


if __name__ == "__main__":
    main()
