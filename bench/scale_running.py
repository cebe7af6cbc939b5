"""
Many dynamic sites running at once, with the control plane in use: N sites (each a small
Python HTTP server in its own swarm service, answering with its container's host name),
then

- memory per running site (each container's resident memory from its cgroup, and the
  machine's MemAvailable before and after, which includes dockerd's and containerd's
  share), and the daemons' RSS (each twistd component, both nginx with their workers);
- API p99 of `GET /api/v1/sites` and of one site's page through the router (target 100 ms);
- one site's restart time (API call to the new task serving; target 1 s);
- a reconcile pass: what the manager's reconcile reads (the orchestrator's and the
  router's `GET /v1/sites`, signed as the manager, and the manager's own site list);
- nginx reload time (the `nginx -t` before each reload, and SIGHUP to new workers serving)
  for the orchestrator's nginx and the router's front nginx.

    .venv/bin/python bench/scale_running.py [--sites 500]

The default is the issue's 500; on a shared 2-core machine run a small N (30-50) and
extrapolate. Starts its own manager, orchestrator and router (bench/_stack.py) and removes
every site's service at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from _stack import Stack
from restart_time import RUN_SH, get, restart_until_served

from director.cli import nginx_instances
from director.common import pidfiles
from director.common.config import load_config
from director.common.keys import load_private_key
from director.common.signing import RequestSigner


class _Clock:
    def seconds(self) -> float:
        return time.time()


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and pidfiles.parent_pid(int(entry.name)) == pid:
            found.append(int(entry.name))
    return found


def container_memory(container: str) -> int:
    """Resident memory (anonymous + mapped files) of a container, from its cgroup."""
    for base in (
        f"/sys/fs/cgroup/memory/docker/{container}",
        f"/sys/fs/cgroup/system.slice/docker-{container}.scope",
    ):
        try:
            stat = dict(
                (k, int(v))
                for k, v in (
                    line.split() for line in Path(base, "memory.stat").read_text().splitlines()
                )
            )
        except OSError:
            continue
        if "total_rss" in stat:
            return stat["total_rss"] + stat.get("total_mapped_file", 0)
        return stat.get("anon", 0) + stat.get("file_mapped", 0)
    return 0


def shim_memory(containers: list[str]) -> list[int]:
    """RSS of the containerd shim of each of C{containers} (one process per container)."""
    wanted = set(containers)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        argv = pidfiles.command_line(int(entry.name)).split()
        if argv and "containerd-shim" in argv[0] and "-id" in argv:
            if argv[argv.index("-id") + 1] in wanted:
                found.append(rss(int(entry.name)))
    return found


def signed_get(config: Any, component: str, path: str) -> float:
    key = load_private_key(config.auth.keys_dir, "manager")
    signer = RequestSigner("manager", key, _Clock())  # type: ignore[arg-type]
    headers = signer.headers(component, "GET", path)
    started = time.monotonic()
    request = urllib.request.Request(getattr(config, component).url + path, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        json.loads(response.read())
    return time.monotonic() - started


def workers(master: int) -> set[int]:
    serving = set()
    for child in children(master):
        if pidfiles.command_line(child).startswith("nginx: worker process"):
            serving.add(child)
    return serving


def reload_time(paths: Any) -> tuple[float, float]:
    """(`nginx -t` seconds, SIGHUP -> a full new generation of workers seconds)."""
    started = time.monotonic()
    subprocess.run(paths.argv("-t", "-q"), check=True, capture_output=True, timeout=120)
    check = time.monotonic() - started
    master = pidfiles.running_pid(paths.pid, str(paths.conf))
    assert master is not None
    old = workers(master)
    started = time.monotonic()
    os.kill(master, 1)  # SIGHUP
    while True:
        now = workers(master)
        if now and not (now & old) and len(now) >= len(old):
            break
        if time.monotonic() - started > 60:
            raise SystemExit("nginx did not reload")
        time.sleep(0.002)
    return check, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--requests", type=int, default=200, help="samples per p99")
    args = parser.parse_args()
    stack = Stack("manager.write_burst=100000.0", "manager.write_rate=100000.0")
    config = load_config(stack.config)
    names = [f"scale-{i}" for i in range(args.sites)]
    try:
        stack.start()
        available_before = mem_available()
        started = time.monotonic()
        for name in names:
            stack.api("POST", "/api/v1/sites", {"name": name, "type": "static"})
        for name in names:
            for _ in range(600):  # until the creation made the site's directory
                try:
                    stack.api("PUT", f"/api/v1/sites/{name}/files/run.sh?mode=755", raw=RUN_SH)
                    break
                except Exception:
                    time.sleep(0.1)
        for name in names:
            for _ in range(1200):  # one operation at a time per site: after the creation
                if not stack.api("GET", f"/api/v1/sites/{name}").get("operation"):
                    break
                time.sleep(0.1)
            stack.api("PATCH", f"/api/v1/sites/{name}", {"type": "dynamic"})
        pending = set(names)
        deadline = time.monotonic() + 60 + 10 * args.sites
        while pending:
            for name in sorted(pending):
                if get(stack, f"{name}.sites.localhost", timeout=5)[0] == 200:
                    pending.discard(name)
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} sites never served: {sorted(pending)[:5]}")
            time.sleep(0.5)
        for name in names:
            for _ in range(1200):
                if not stack.api("GET", f"/api/v1/sites/{name}").get("operation"):
                    break
                time.sleep(0.1)
        print(f"{args.sites} dynamic sites serving after {time.monotonic() - started:.0f} s")
        time.sleep(5)  # settle

        # memory
        applied = stack.base / "var" / "orchestrator" / "applied"
        ours = []
        for path in applied.glob("*.json"):
            label = f"label=com.docker.swarm.service.name=site_{path.stem}"
            found = subprocess.run(
                ["docker", "ps", "-q", "--no-trunc", "--filter", label],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            if len(found) != 1:
                tasks = subprocess.run(
                    ["docker", "service", "ps", "--no-trunc", f"site_{path.stem}"],
                    capture_output=True,
                    text=True,
                ).stdout
                print(f"site {path.stem}: {len(found)} containers running\n{tasks}")
            ours += found
        per_container = [container_memory(c) for c in ours]
        shims = shim_memory(ours)
        available_after = mem_available()
        print(
            f"memory per running site: container {statistics.median(per_container) / 2**20:.1f} "
            f"MiB median (max {max(per_container) / 2**20:.1f} MiB, {len(ours)} containers), "
            f"its containerd shim {statistics.median(shims or [0]) / 2**20:.1f} MiB RSS "
            f"({len(shims)} found); "
            f"MemAvailable fell by {(available_before - available_after) / args.sites / 2**20:.1f}"
            " MiB per site (dockerd, containerd-shim and page cache included; other work on "
            "the machine moves this figure)"
        )

        # API p99
        samples = []
        for _ in range(args.requests):
            t = time.monotonic()
            listed = stack.api("GET", "/api/v1/sites")
            samples.append(time.monotonic() - t)
        count = len(listed["sites"]) if isinstance(listed, dict) else len(listed)
        print(
            f"GET /api/v1/sites ({count} sites): p99 {p99(samples) * 1000:.0f} ms, "
            f"median {statistics.median(samples) * 1000:.0f} ms (n={len(samples)})"
        )
        samples = []
        failed: list[str] = []
        for _ in range(args.requests):
            host = f"{random.choice(names)}.sites.localhost"
            t = time.monotonic()
            status, _ = get(stack, host)
            samples.append(time.monotonic() - t)
            if status != 200:
                failed.append(f"{host} {status}")
        print(
            f"a site's page through the router: p99 {p99(samples) * 1000:.1f} ms, median "
            f"{statistics.median(samples) * 1000:.1f} ms, {len(failed)} failed "
            f"(n={len(samples)})" + (f": {sorted(set(failed))}" if failed else "")
        )

        # one site's restart
        times = []
        name = names[len(names) // 2]
        host = f"{name}.sites.localhost"
        for _ in range(3):
            times.append(restart_until_served(stack, name, host))
        print(
            f"one site's restart, API call -> new task serving: median "
            f"{statistics.median(times):.2f} s ({', '.join(f'{x:.2f}' for x in times)})"
        )

        # a reconcile pass (what it reads)
        orchestrator = statistics.median(
            signed_get(config, "orchestrator", "/v1/sites") for _ in range(3)
        )
        router = statistics.median(signed_get(config, "router", "/v1/sites") for _ in range(3))
        t = time.monotonic()
        stack.api("GET", "/api/v1/sites?limit=5000")
        manager = time.monotonic() - t
        print(
            f"a reconcile pass reads: orchestrator GET /v1/sites {orchestrator * 1000:.0f} ms, "
            f"router GET /v1/sites {router * 1000:.0f} ms, the manager's list "
            f"{manager * 1000:.0f} ms: {(orchestrator + router + manager) * 1000:.0f} ms"
        )

        # nginx reloads
        for what, paths in nginx_instances(config):
            checks, reloads = zip(*(reload_time(paths) for _ in range(3)), strict=True)
            print(
                f"{what} ({len(list(paths.sites.iterdir()))} site files): nginx -t "
                f"{statistics.median(checks) * 1000:.0f} ms, SIGHUP -> new workers "
                f"{statistics.median(reloads) * 1000:.0f} ms (median of 3)"
            )

        # the daemons
        parts = []
        for component, process in zip(
            ("orchestrator", "router", "manager"), stack.processes, strict=True
        ):
            parts.append(f"{component} {rss(process.pid) / 2**20:.0f} MiB")
        for what, paths in nginx_instances(config):
            master = pidfiles.running_pid(paths.pid, str(paths.conf))
            if master is not None:
                total = rss(master) + sum(rss(w) for w in children(master))
                parts.append(f"{what} (master + workers) {total / 2**20:.0f} MiB")
        print("RSS: " + ", ".join(parts))
    finally:
        stack.close()


if __name__ == "__main__":
    main()
