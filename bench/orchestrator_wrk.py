"""
Requests per second for a dynamic site through the orchestrator's nginx, as a ratio of the
same backend hit directly at its container address (target >= 0.9, upstream keepalive).

    .venv/bin/python bench/orchestrator_wrk.py [--duration 10] [--cases 0.6:0,2:0,0.6:300,2:300]

Starts its own orchestrator (twistd, child process) and one dynamic site per case
(site CPU limit : microseconds of CPU work per request). The backend is a small asyncio
HTTP/1.1 server with keep-alive (python3 in director/python:3; `python3 -m http.server`
would measure its own HTTP/1.0 connection-per-request handling, not the proxy), answering
a 108-byte body, optionally after burning WORK_US of CPU time per request (what any real
application spends; 0 is the bare server). Each measurement is `wrk -t2 -c50
-d<duration>s` after a 2 s warm-up; direct (the container's address on the sites network)
and proxied (the orchestrator's nginx, Host header) runs alternate, --rounds times each,
and the medians are compared (this machine is shared, so single runs vary by +-20%).

Everything (wrk, nginx, the container) shares this machine's cores. With the bare server
(about 30 us of CPU a request) the proxy hop costs as much CPU as the backend does, so on a
saturated 2-core machine the ratio shows the cost of a second hop rather than a limit of
the site; with some work per request the backend is what it should be, the bottleneck.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time

from orchestrator_common import BenchOrchestrator, median

PYTHON_IMAGE = "director/python:3"

SERVER = b"""\
import asyncio, os, time

WORK = int(os.environ.get("WORK_US", "0")) / 1e6
BODY = b"hello from a director site\\n" * 4
RESPONSE = (
    b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: "
    + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY
)


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            if WORK:  # stands in for an application's own work: CPU time, not wall time
                end = time.thread_time() + WORK
                while time.thread_time() < end:
                    pass
            writer.write(RESPONSE)
            if b"connection: close" in head.lower():
                break
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", int(os.environ["PORT"]), backlog=1024)
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""

RUN_SH = b"#!/bin/sh\nexec python3 /site/private/server.py\n"


def wrk(url: str, duration: int, host: str | None = None) -> float:
    argv = ["wrk", "-t2", "-c50", f"-d{duration}s", url]
    if host:
        argv[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if match is None or errors is not None:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}")
    return float(match.group(1))


def measure(
    o: BenchOrchestrator, site_id: int, cpus: float, work_us: int, duration: int, rounds: int
) -> tuple[float, float]:
    name = f"wrk{site_id}"
    o.call("PUT", f"/v1/sites/{site_id}", {"name": name, "type": "static"})
    o.call("PUT", f"/v1/sites/{site_id}/files/private/server.py", data=SERVER)
    o.call("PUT", f"/v1/sites/{site_id}/files/run.sh", data=RUN_SH, params={"mode": "755"})
    status = o.call(
        "PUT",
        f"/v1/sites/{site_id}",
        {
            "name": name,
            "type": "dynamic",
            "image": PYTHON_IMAGE,
            "limits": {"cpus": cpus},
            "env": {"WORK_US": str(work_us)},
        },
    )
    (address,) = status["upstream"]
    deadline = time.monotonic() + 30
    while o.get(name)[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not served")
        time.sleep(0.1)
    direct_url = f"http://{address}:8080/"
    proxy_url = f"http://127.0.0.1:{o.nginx_port}/"
    host = f"{name}.{o.config.director.sites_domain}"
    wrk(direct_url, 2)
    wrk(proxy_url, 2, host)
    direct, proxied = [], []
    for _ in range(rounds):
        direct.append(wrk(direct_url, duration))
        proxied.append(wrk(proxy_url, duration, host))
    o.call("DELETE", f"/v1/sites/{site_id}")
    return median(direct), median(proxied)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--cases", default="0.6:0,2:0,0.6:300,2:300")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cases = [(float(c), int(w)) for c, w in (case.split(":") for case in args.cases.split(","))]
    results = []
    with BenchOrchestrator() as o:
        for i, (cpus, work_us) in enumerate(cases):
            results.append(
                (cpus, work_us, *measure(o, 280 + i, cpus, work_us, args.duration, args.rounds))
            )
    load = open("/proc/loadavg").read().split()[0]
    print(
        f"wrk -t2 -c50 -d{args.duration}s, asyncio HTTP/1.1 keep-alive backend "
        f"(requests/s, medians of {args.rounds} interleaved runs)"
    )
    print(f"(load average at the end: {load})")
    print(f"{'site CPUs':>10} {'work/req':>9} {'direct':>9} {'via nginx':>10} {'ratio':>6}")
    for cpus, work_us, direct, proxied in results:
        print(f"{cpus:>10} {work_us:>7}us {direct:>9.0f} {proxied:>10.0f} {proxied / direct:>6.2f}")


if __name__ == "__main__":
    main()
