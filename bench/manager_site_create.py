"""
Site create through the manager's API until the first 200 through the router's front nginx
(targets: static <= 1 s median, dynamic <= 3 s median, swarm start included).

    .venv/bin/python bench/manager_site_create.py [--static N] [--dynamic N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _stack import Stack

RUN_SH = b'#!/bin/sh\nexec python3 -m http.server "$PORT" --directory /site/public\n'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--static", type=int, default=10)
    parser.add_argument("--dynamic", type=int, default=5)
    args = parser.parse_args()
    stack = Stack()
    try:
        stack.start()
        # A new static site serves its public/index.html, written as soon as the API lets
        # us; a dynamic site is measured from the API call that makes it dynamic (its
        # run.sh already in place) to the first 200 from its process.
        static: list[float] = []
        for i in range(args.static):
            name = f"bench-s{i}"
            start = time.monotonic()
            stack.api("POST", "/api/v1/sites", {"name": name, "type": "static"})
            while True:
                try:
                    stack.api("PUT", f"/api/v1/sites/{name}/files/public/index.html", raw=b"x")
                    break
                except Exception:
                    time.sleep(0.01)
            deadline = start + 30
            while stack.front(f"{name}.sites.localhost") != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} never served a 200")
                time.sleep(0.01)
            static.append(time.monotonic() - start)
        print(
            f"static  create -> first 200 through the router: median "
            f"{statistics.median(static):.3f} s (n={len(static)}, max {max(static):.3f} s)"
        )
        served = []
        for i in range(args.dynamic):
            name = f"bench-r{i}"
            stack.api("POST", "/api/v1/sites", {"name": name, "type": "static"})
            while True:
                try:
                    stack.api("PUT", f"/api/v1/sites/{name}/files/run.sh?mode=755", raw=RUN_SH)
                    break
                except Exception:
                    time.sleep(0.01)
            time.sleep(0.5)
            start = time.monotonic()
            stack.api("PATCH", f"/api/v1/sites/{name}", {"type": "dynamic"})
            deadline = start + 60
            while stack.front(f"{name}.sites.localhost") != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} never served a 200")
                time.sleep(0.01)
            served.append(time.monotonic() - start)
        print(
            f"dynamic (run.sh present) API call -> first 200 through the router: median "
            f"{statistics.median(served):.3f} s (n={len(served)}, max {max(served):.3f} s)"
        )
    finally:
        stack.close()


if __name__ == "__main__":
    main()
