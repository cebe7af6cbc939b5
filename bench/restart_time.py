"""
A dynamic site's restart through the manager's API: the time from the restart call to the
new task serving (the first answer through the router that comes from the new container),
and the failed requests (non-2xx or connection errors) of a request loop running through the
router meanwhile. Targets: median <= 1 s for a process that starts in under 0.2 s; 0 failed.

    .venv/bin/python bench/restart_time.py [--restarts 10]

Starts its own manager, orchestrator and router (twistd child processes, bench/_stack.py).
The site's run.sh is a small Python HTTP server answering with its host name (the
container's), so an answer tells which task served it. The loop opens a new connection per
request, one request at a time (a 5 ms pause between them); the restart time is polled
every 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.error
import urllib.request

from _stack import Stack

RUN_SH = b"""#!/bin/sh
exec python3 -c '
import http.server, os, socket
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
'
"""


def get(stack: Stack, host: str, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.http_port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except OSError:
        return 0, b""


class Loop(threading.Thread):
    def __init__(self, stack: Stack, host: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.host = stack, host
        self.ok = 0
        self.failed: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            status, _ = get(self.stack, self.host)
            if 200 <= status < 300:
                self.ok += 1
            else:
                self.failed.append(status)
            time.sleep(0.005)  # about 150 requests/s: the loop must not starve the machine


def restart_until_served(stack: Stack, name: str, host: str) -> float:
    """
    One restart of C{name} through the API: the seconds from the call to the new task
    serving (its page changes); returns once the operation is over and the old task stopped.
    """
    before = get(stack, host)[1]
    started = time.monotonic()
    answer = stack.api("POST", f"/api/v1/sites/{name}/restart")
    while True:
        status, body = get(stack, host, timeout=5)
        if status == 200 and body != before:
            break
        if time.monotonic() - started > 60:
            raise SystemExit("the new task never served")
        time.sleep(0.005)
    took = time.monotonic() - started
    op = answer["operation"]["id"]
    while stack.api("GET", f"/api/v1/operations/{op}")["status"] not in ("succeeded", "failed"):
        time.sleep(0.05)
    time.sleep(0.5)  # the old task's stop, well clear of the next restart
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--restarts", type=int, default=10)
    args = parser.parse_args()
    stack = Stack()
    try:
        stack.start()
        name = "bench-restart"
        host = f"{name}.sites.localhost"
        stack.api("POST", "/api/v1/sites", {"name": name, "type": "static"})
        for _ in range(100):
            try:
                stack.api("PUT", f"/api/v1/sites/{name}/files/run.sh?mode=755", raw=RUN_SH)
                break
            except Exception:
                time.sleep(0.05)
        time.sleep(0.5)
        stack.api("PATCH", f"/api/v1/sites/{name}", {"type": "dynamic"})
        deadline = time.monotonic() + 60
        while get(stack, host)[0] != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the site never served")
            time.sleep(0.05)
        for _ in range(600):  # until the PATCH's operation is over (one at a time per site)
            if not stack.api("GET", f"/api/v1/sites/{name}").get("operation"):
                break
            time.sleep(0.05)
        loop = Loop(stack, host)
        loop.start()
        times: list[float] = []
        for _ in range(args.restarts):
            times.append(restart_until_served(stack, name, host))
        loop.stopped.set()
        loop.join(30)
        print(
            f"restart, API call -> new task serving through the router: median "
            f"{statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s "
            f"(n={len(times)})"
        )
        print(
            f"request loop through the router during {len(times)} restarts: "
            f"{len(loop.failed)} failed of {loop.ok + len(loop.failed)}"
            + (f" (statuses {sorted(set(loop.failed))})" if loop.failed else "")
        )
    finally:
        stack.close()


if __name__ == "__main__":
    main()
