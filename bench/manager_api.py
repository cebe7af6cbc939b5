"""
The manager's API with 5,000 sites in its store: latency of GET /api/v1/sites (target p99 <=
50 ms) and requests per second of authenticated GET /api/v1/sites/{name} (wrk), on one
manager process.

    .venv/bin/python bench/manager_api.py [--sites 5000]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _stack import Stack
from sqlalchemy import insert, select

from director.common.config import load_config
from director.manager import schema as t
from director.manager.service import database_url
from director.manager.store import make_engine


def seed(stack: Stack, count: int) -> None:
    """Users and sites straight into the database (as if created over months)."""
    engine = make_engine(database_url(load_config(stack.config)))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        admin_id = conn.execute(select(t.users.c.id).where(t.users.c.username == "admin")).scalar()
        users = [
            {
                "username": f"user{i}",
                "role": "student",
                "is_active": True,
                "accepted_guidelines": True,
                "full_name": "",
                "email": "",
                "created_at": now,
            }
            for i in range(count // 5)
        ]
        conn.execute(insert(t.users), users)
        ids = dict(conn.execute(select(t.users.c.username, t.users.c.id)).all())
        sites = [
            {
                "name": f"site{i}",
                "type": "static",
                "purpose": "project",
                "availability": "enabled",
                "description": f"site number {i}",
                "image": "director/python:3",
                "packages": [],
                "cpus": 0.6,
                "memory_mb": 100,
                "pids": 256,
                "client_max_body_size": "1m",
                "admin_comments": "",
                "created_at": now,
            }
            for i in range(count)
        ]
        conn.execute(insert(t.sites), sites)
        site_ids = dict(conn.execute(select(t.sites.c.name, t.sites.c.id)).all())
        members = [
            {"site_id": site_ids[f"site{i}"], "user_id": ids[f"user{i // 5}"]} for i in range(count)
        ]
        members += [{"site_id": site_ids[f"site{i}"], "user_id": admin_id} for i in range(5)]
        conn.execute(insert(t.site_members), members)


def timed_gets(url: str, token: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        times.append(time.perf_counter() - start)
    return times


def report(what: str, times: list[float]) -> None:
    times = sorted(times)
    p99 = times[int(len(times) * 0.99) - 1]
    print(
        f"{what}: p50 {statistics.median(times) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
        f"(n={len(times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=5000)
    args = parser.parse_args()
    stack = Stack()
    try:
        seed(stack, args.sites)
        stack.start(("manager",))
        base = f"http://127.0.0.1:{stack.ports['manager']}"
        timed_gets(base + "/api/v1/sites", stack.token, 20)  # warm up
        print(f"{args.sites} sites in the store")
        report(
            "GET /api/v1/sites (a member of 5 sites)",
            timed_gets(base + "/api/v1/sites", stack.token, 300),
        )
        report(
            "GET /api/v1/sites?q=name:site49 (search)",
            timed_gets(base + "/api/v1/sites?q=name:site49", stack.token, 200),
        )
        report(
            "GET /api/v1/sites?all=1&limit=100 (admin, first page)",
            timed_gets(base + "/api/v1/sites?all=1&limit=100", stack.token, 100),
        )
        wrk = subprocess.run(
            [
                "wrk",
                "-t2",
                "-c20",
                "-d10s",
                "-H",
                f"Authorization: Bearer {stack.token}",
                base + "/api/v1/sites/site3",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rps = re.search(r"Requests/sec:\s+([0-9.]+)", wrk)
        latency = re.search(r"Latency\s+(\S+)", wrk)
        print(
            f"authenticated GET /api/v1/sites/{{name}}: {rps.group(1) if rps else '?'} req/s "
            f"(wrk -t2 -c20 -d10s, mean latency {latency.group(1) if latency else '?'})"
        )
    finally:
        stack.close()


if __name__ == "__main__":
    main()
