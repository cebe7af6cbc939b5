"""
Two managers versus one: requests per second of authenticated GET /api/v1/sites/{name}
(target: >= 1.6x with two). Real processes: one PostgreSQL, one Redis, an orchestrator, a
router and two managers (tests/integration/manager_pair.py). There is no front for the
managers here (the routers serve sites; the dashboard host on the routers is another piece of
work), so the client spreads the load itself: one wrk process per manager, run at the same
time, their rates added. "One" runs the same total connections against manager A alone
(manager B idle). Rounds alternate one/two, in the same run.

On a shared machine the rates swing with the other load, so the bench also measures CPU
time per request of each part (each manager process, PostgreSQL's processes, wrk) from
/proc and getrusage, and projects the rates on an idle machine with the cores it has: a
manager is one reactor thread (at most one core), and all parts share the cores.

    .venv/bin/python bench/two_managers.py [--seconds 10] [--connections 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

from manager_pair import ManagerPair, Process, discard, start_pair
from services import PostgresServer, RedisServer, Services

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    """CPU seconds (user + system) process C{pid} has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def family(root: int) -> list[int]:
    """C{root} and its children (PostgreSQL's postmaster and its backends)."""
    pids = [root]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == root:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return pids


class Costs:
    """CPU seconds per request of each part, over the measurements made so far."""

    def __init__(self) -> None:
        self.seconds = {"manager": 0.0, "postgres": 0.0, "wrk": 0.0}
        self.requests = 0

    def per_request(self, part: str) -> float:
        return self.seconds[part] / max(1, self.requests)


def wrk(
    pair: ManagerPair,
    managers: list[Process],
    connections: int,
    seconds: int,
    postgres: PostgresServer | None = None,
    costs: Costs | None = None,
) -> float:
    """Requests per second over C{managers} at once (one wrk each, connections split)."""
    pg_pids = family(postgres.pid) if postgres is not None and postgres.pid else []
    before_m = sum(cpu(m.pid) for m in (pair.a, pair.b))
    before_pg = {pid: cpu(pid) for pid in pg_pids}
    before_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    each = max(1, connections // len(managers))
    auth = f"Authorization: Bearer {pair.token}"
    runs = []
    for m in managers:
        argv = ["wrk", "-t1", f"-c{each}", f"-d{seconds}s", "--timeout", "10s", "-H", auth]
        argv.append(f"{pair.url(m)}/api/v1/sites/bench")
        runs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    total = 0.0
    count = 0
    for run in runs:
        out, _ = run.communicate(timeout=seconds + 60)
        rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
        done = re.search(r"(\d+) requests in", out)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if rate is None or done is None or errors is not None:
            raise RuntimeError(f"wrk failed or saw errors:\n{out}")
        total += float(rate.group(1))
        count += int(done.group(1))
    if costs is not None:
        after_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
        costs.seconds["manager"] += sum(cpu(m.pid) for m in (pair.a, pair.b)) - before_m
        costs.seconds["postgres"] += (
            sum(cpu(pid) - before_pg.get(pid, 0.0) for pid in family(postgres.pid or 0))
            if postgres is not None
            else 0.0
        )
        costs.seconds["wrk"] += (after_wrk.ru_utime + after_wrk.ru_stime) - (
            before_wrk.ru_utime + before_wrk.ru_stime
        )
        costs.requests += count
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
            costs = Costs()
            for _ in range(args.rounds):
                ones.append(wrk(pair, [pair.a], args.connections, args.seconds, postgres, costs))
                twos.append(
                    wrk(pair, [pair.a, pair.b], args.connections, args.seconds, postgres, costs)
                )
            one, two = max(ones), max(twos)
            cores = len(os.sched_getaffinity(0))
            print(f"cores: {cores}; load average before: {os.getloadavg()[0]:.1f}")
            parts = {p: costs.per_request(p) for p in costs.seconds}
            print(
                "CPU per request: "
                + ", ".join(f"{p} {v * 1000:.2f} ms" for p, v in parts.items())
                + f" ({costs.requests} requests)"
            )
            every = sum(parts.values())
            idle_one = min(1 / parts["manager"], cores / every)
            idle_two = min(2 / parts["manager"], cores / every)
            print(
                f"projected on {cores} idle cores: one {idle_one:.0f} req/s, two "
                f"{idle_two:.0f} req/s, ratio {idle_two / idle_one:.2f}x"
            )
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
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
