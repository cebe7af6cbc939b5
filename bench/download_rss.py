"""
Memory of the manager while it relays file downloads from the orchestrator: the growth of
its RSS (peak while downloading, over its RSS before) for one 200 MB download through
GET /api/v1/sites/{name}/files/{path}, and for 10 of them in parallel. Streamed, neither
should approach the file's size, and 10 should not cost 10 times one.

    .venv/bin/python bench/download_rss.py [--mb 200] [--parallel 10]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _stack import Stack


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def download(stack: Stack, url: str, size: int) -> None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {stack.token}"})
    total = 0
    with urllib.request.urlopen(request, timeout=300) as response:
        while chunk := response.read(256 * 1024):
            total += len(chunk)
    if total != size:
        raise SystemExit(f"downloaded {total} bytes of {size}")


def measure(pids: dict[str, int], work: list[threading.Thread]) -> tuple[dict[str, float], float]:
    """Peak RSS growth (MiB) of each process while the threads of C{work} run."""
    before = {name: rss_kib(pid) for name, pid in pids.items()}
    peak = dict(before)
    start = time.monotonic()
    for thread in work:
        thread.start()
    while any(thread.is_alive() for thread in work):
        for name, pid in pids.items():
            peak[name] = max(peak[name], rss_kib(pid))
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    return {name: (peak[name] - before[name]) / 1024 for name in pids}, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    # Downloads are capped at orchestrator.max_download_mb (100 by default): raise it.
    stack = Stack(f"orchestrator.max_download_mb={max(args.mb + 1, 100)}")
    try:
        stack.start()
        pids = {
            "manager": stack.processes[2].pid,
            "orchestrator": stack.processes[0].pid,
        }
        created = stack.api("POST", "/api/v1/sites", {"name": "bench-dl", "type": "static"})
        deadline = time.monotonic() + 60
        while stack.api("GET", f"/api/v1/operations/{created['operation']['id']}")[
            "status"
        ] not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                raise SystemExit("the site was not created")
            time.sleep(0.1)
        big = stack.base / "var" / "sites" / str(created["site"]["id"]) / "public" / "big.bin"
        with big.open("wb") as f:
            f.truncate(size)  # sparse: nothing on disk, but a full-size download
        url = (
            f"http://127.0.0.1:{stack.ports['manager']}/api/v1/sites/bench-dl/files/public/big.bin"
        )
        download(stack, url, size)  # warm up (connections, pools)
        for count in (1, args.parallel):
            threads = [
                threading.Thread(target=download, args=(stack, url, size)) for _ in range(count)
            ]
            growth, elapsed = measure(pids, threads)
            print(
                f"{count:2d} x {args.mb} MB download: manager RSS +{growth['manager']:.1f} MiB, "
                f"orchestrator RSS +{growth['orchestrator']:.1f} MiB "
                f"({count * args.mb / elapsed:.0f} MB/s in all)"
            )
        stack.api("DELETE", "/api/v1/sites/bench-dl")
        time.sleep(2)
    finally:
        stack.close()


if __name__ == "__main__":
    main()
