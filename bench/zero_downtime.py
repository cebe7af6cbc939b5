"""
Zero downtime: visitors load a static and a dynamic site through the router (about 200
requests/s in all: for each site one thread on new connections and one on a keep-alive
connection, 50 requests/s each) while

  (a) the dynamic site restarts 10 times through the API,
  (b) the daemon (`twistd -n director`, all in one) is killed with SIGKILL and started again,
  (c) every component is restarted in turn (SIGTERM, start again): manager, orchestrator,
      router, shell, then all four in one process.

Prints the failed requests (non-2xx answers and connection errors) of each, and each
restart operation's time from the API call to the new task serving (an answer through
the router from the new container: the site's run.sh answers with its host name).

    .venv/bin/python bench/zero_downtime.py [--restarts 10] [--rate 50]

Both nginx run as their systemd units run them (`director nginx run`), and the daemons with
DIRECTOR_NGINX=supervised, as their units set it (docs/operations.md, "Upgrading Director").
Starts and stops everything itself (bench/_stack.py for the config and the API).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time

from _stack import BIN, Stack, free_port
from restart_time import RUN_SH

from director.cli import nginx_instances
from director.common import pidfiles
from director.common.config import load_config
from director.common.nginx import stop_instance

COMPONENTS = ("manager", "orchestrator", "router", "shell")


class Visitor(threading.Thread):
    """GET / for C{host} at C{rate} requests/s, on new connections or one kept alive."""

    def __init__(self, port: int, host: str, keep_alive: bool, rate: float) -> None:
        super().__init__(daemon=True)
        self.port, self.host, self.keep_alive, self.rate = port, host, keep_alive, rate
        self.ok = 0
        self.failures: list[tuple[float, str]] = []
        self.reconnects = 0
        self.stopped = threading.Event()

    def _get(self, conn: http.client.HTTPConnection) -> tuple[int, bytes]:
        headers = {"Host": self.host}
        if not self.keep_alive:
            headers["Connection"] = "close"
        conn.request("GET", "/", headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        while not self.stopped.is_set():
            try:
                fresh = conn is None or not self.keep_alive
                if conn is None or fresh:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                try:
                    status, body = self._get(conn)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    if fresh:
                        raise
                    # an idle keep-alive connection closed by a graceful reload: browsers
                    # send the request again on a new connection, so does this visitor
                    self.reconnects += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    status, body = self._get(conn)
                if 200 <= status < 300 and body:
                    self.ok += 1
                else:
                    self.failures.append((time.monotonic(), f"{status} {body[:80]!r}"))
                if not self.keep_alive:
                    conn.close()
            except Exception as e:
                self.failures.append((time.monotonic(), f"{type(e).__name__}: {e}"))
                if conn is not None:
                    conn.close()
                conn = None
            next_at += 1 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()


class Bench:
    def __init__(self, rate: float) -> None:
        self.stack = Stack('shell.host="127.0.0.1"', f"shell.port={free_port()}")
        self.base = self.stack.base
        self.config = load_config(self.stack.config)
        self.env = {**os.environ, "DIRECTOR_NGINX": "supervised"}
        self.units: list[subprocess.Popen[bytes]] = []
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.rate = rate
        self.visitors: list[Visitor] = []

    def start_units(self) -> None:
        for instance in ("orchestrator", "router"):
            out = (self.base / f"nginx-{instance}.out").open("ab")
            command = [str(BIN / "director"), "nginx", "run", instance, "--config"]
            self.units.append(
                subprocess.Popen(
                    [*command, str(self.stack.config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            out.close()

    def start(self, component: str) -> None:
        plugin = "director" if component == "all" else f"director-{component}"
        log = (self.base / f"{plugin}.log").open("ab")
        self.daemons[component] = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", plugin, "--config", str(self.stack.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            env=self.env,
        )
        log.close()
        for name in COMPONENTS if component == "all" else (component,):
            port = getattr(self.config, name).port
            deadline = time.monotonic() + 60
            while not _answers(port):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not start; see {self.base}/{plugin}.log")
                time.sleep(0.05)

    def stop(self, component: str, sig: int = signal.SIGTERM) -> None:
        process = self.daemons.pop(component)
        process.send_signal(sig)
        process.wait(60)

    def failures_between(self, start: float, end: float) -> list[str]:
        return [
            f"{v.host} {'keep-alive' if v.keep_alive else 'new'}: {what}"
            for v in self.visitors
            for at, what in v.failures
            if start <= at <= end
        ]

    def total(self) -> int:
        return sum(v.ok + len(v.failures) for v in self.visitors)

    def close(self) -> None:
        for visitor in self.visitors:
            visitor.stopped.set()
        for component in list(self.daemons):
            self.stop(component)
        for unit in self.units:
            if unit.poll() is None:
                unit.send_signal(signal.SIGQUIT)
                unit.wait(30)
        for _, paths in nginx_instances(self.config):
            stop_instance(paths)
        applied = self.base / "var" / "orchestrator" / "applied"
        for path in applied.glob("*.json"):
            subprocess.run(["docker", "service", "rm", f"site_{path.stem}"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.settimeout(0.5)
            try:
                data = conn.recv(16)
            except TimeoutError:
                conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                data = conn.recv(16)
            return bool(data)
    except OSError:
        return False


def _get(port: int, host: str) -> tuple[int, bytes]:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/", headers={"Host": host, "Connection": "close"})
        response = conn.getresponse()
        answer = response.status, response.read()
        conn.close()
        return answer
    except OSError:
        return 0, b""


def _wait(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def _nginx_pids(bench: Bench) -> list[int | None]:
    return [pidfiles.running_pid(p.pid, str(p.conf)) for _, p in nginx_instances(bench.config)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s of each visitor")
    args = parser.parse_args()
    bench = Bench(args.rate)
    s = bench.stack
    port = s.http_port
    try:
        bench.start_units()
        for component in ("orchestrator", "router", "manager", "shell"):
            bench.start(component)
        static, dynamic = "zd-static.sites.localhost", "zd-dyn.sites.localhost"
        s.api("POST", "/api/v1/sites", {"name": "zd-static", "type": "static"})
        s.api("POST", "/api/v1/sites", {"name": "zd-dyn", "type": "static"})
        for _ in range(200):  # until the creations have made the site directories
            try:
                s.api("PUT", "/api/v1/sites/zd-static/files/public/index.html", raw=b"static")
                s.api("PUT", "/api/v1/sites/zd-dyn/files/run.sh?mode=755", raw=RUN_SH)
                break
            except Exception:
                time.sleep(0.05)
        _wait(lambda: _get(port, static) == (200, b"static"), "the static site")
        _wait(lambda: not s.api("GET", "/api/v1/sites/zd-dyn").get("operation"), "the creation")
        s.api("PATCH", "/api/v1/sites/zd-dyn", {"type": "dynamic"})
        _wait(lambda: _get(port, dynamic)[0] == 200, "the dynamic site")
        _wait(lambda: not s.api("GET", "/api/v1/sites/zd-dyn").get("operation"), "the PATCH")
        nginx = _nginx_pids(bench)
        print(f"nginx (orchestrator, router) run by their own services: pids {nginx}")
        bench.visitors = [
            Visitor(port, host, keep_alive, args.rate)
            for host in (static, dynamic)
            for keep_alive in (False, True)
        ]
        for visitor in bench.visitors:
            visitor.start()
        time.sleep(1)
        results: list[tuple[str, float, float]] = []

        # (a) the dynamic site restarts
        start = time.monotonic()
        times: list[float] = []
        for _ in range(args.restarts):
            before = _get(port, dynamic)[1]
            started = time.monotonic()
            answer = s.api("POST", "/api/v1/sites/zd-dyn/restart")
            while True:
                status, body = _get(port, dynamic)
                if status == 200 and body != before:
                    break
                if time.monotonic() - started > 60:
                    raise SystemExit("the new task never served")
                time.sleep(0.005)
            times.append(time.monotonic() - started)
            op = answer["operation"]["id"]
            _wait(
                lambda op=op: (
                    s.api("GET", f"/api/v1/operations/{op}")["status"] in ("succeeded", "failed")
                ),
                "the restart",
            )
            time.sleep(0.5)
        results.append(("(a) 10 restarts of the dynamic site", start, time.monotonic()))

        # (c) every component restarted in turn, then all in one
        start = time.monotonic()
        took: dict[str, float] = {}
        for component in COMPONENTS:
            t = time.monotonic()
            bench.stop(component)
            bench.start(component)
            took[component] = time.monotonic() - t
            time.sleep(1)
        t = time.monotonic()
        for component in COMPONENTS:
            bench.stop(component)
        bench.start("all")
        took["all in one"] = time.monotonic() - t
        time.sleep(2)
        results.append(("(c) each component restarted, then all in one", start, time.monotonic()))

        # (b) SIGKILL of the daemon, started again
        start = time.monotonic()
        bench.stop("all", signal.SIGKILL)
        time.sleep(2)  # nobody home: nginx serves alone
        t = time.monotonic()
        bench.start("all")
        took["after SIGKILL"] = time.monotonic() - t
        time.sleep(2)
        results.append(("(b) SIGKILL of the daemon, started again", start, time.monotonic()))
        for visitor in bench.visitors:
            visitor.stopped.set()
        for visitor in bench.visitors:
            visitor.join(30)

        assert _nginx_pids(bench) == nginx, "nginx should have served throughout"
        print(
            f"visitors: {len(bench.visitors)} at {args.rate:.0f} requests/s each "
            f"({bench.total()} requests, {sum(v.reconnects for v in bench.visitors)} "
            "keep-alive reconnects after a reload)"
        )
        for what, begin, end in results:
            failed = bench.failures_between(begin, end)
            print(f"{what}: {len(failed)} failed requests in {end - begin:.1f} s")
            for line in failed[:5]:
                print(f"    {line}")
        all_failed = sum(len(v.failures) for v in bench.visitors)
        print(f"failed requests in all: {all_failed}")
        print(
            "restart, API call -> new task serving through the router: median "
            f"{statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s "
            f"(n={len(times)})"
        )
        print(
            "component restart, stop -> listening again: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in took.items())
        )
    finally:
        bench.close()


if __name__ == "__main__":
    main()
