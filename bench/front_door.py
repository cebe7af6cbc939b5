"""
The dashboard's front door: authenticated GET /api/v1/sites straight to one manager (plain
HTTP on loopback, what `make run` had before) versus through the router's front nginx over
HTTPS by the dashboard host's name (what a browser gets), in one run. Target: through the
router >= 0.8x the direct requests per second.

    .venv/bin/python bench/front_door.py [--sites 200] [--duration 5] [--rounds 5]

Starts its own manager and router (twistd child processes; no orchestrator is needed for
the API's reads) with the dashboard host "localhost" and a self-signed certificate given
in the config (router.dashboard_certificate). Each measurement is wrk after a warm-up:
latency with one connection (-c1: p50/p99 of single requests, no queueing) and throughput
with 16 connections (-t2 -c16: requests per second, and p50/p99 under that load). Direct
and routed runs alternate, --rounds times each; the figures are medians, and the ratio is
the median of each round's routed run over the direct run just before it (the machine is
shared, so its load drifts). wrk, nginx and the manager share this machine's cores. Each run
also reports the CPU time per request of the manager and of the front nginx (master and
workers, from /proc): a figure the machine's load hardly moves, showing what the extra hop
costs next to what the manager spends.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _stack import Stack, free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from manager_api import seed

HOST = "localhost"

# wrk resolves "localhost" to ::1 too; the front nginx listens on 127.0.0.1 only.
IPV4_ONLY = """
local addrs = nil
function setup(thread)
   if not addrs then
      addrs = {}
      for _, addr in ipairs(wrk.lookup(wrk.host, wrk.port)) do
         if string.find(tostring(addr), "^127%.") then
            table.insert(addrs, addr)
         end
      end
   end
   thread.addr = addrs[1]
end
"""


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOST (wrk does not verify it; nginx serves it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "dashboard.crt", directory / "dashboard.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes C{pids} have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def nginx_processes(pid_file: Path) -> list[int]:
    """The front nginx's master and its workers."""
    master = int(pid_file.read_text().split()[0])
    workers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(stat[1]) == master:
                workers.append(int(entry.name))
    return [master, *workers]


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(url: str, token: str, connections: int, duration: float, script: Path) -> dict[str, float]:
    """One wrk run: requests/s and the p50/p99 latency (seconds); fails on any non-2xx."""
    threads = min(2, connections)
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:.0f}s", "--latency",
         "-s", str(script), "-H", f"Authorization: Bearer {token}", url],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout  # fmt: skip
    if "Non-2xx" in result or "Socket errors" in result:
        raise RuntimeError(f"wrk saw errors:\n{result}")
    found = {
        "requests": float(re.search(r"([0-9]+) requests in", result).group(1)),  # type: ignore[union-attr]
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", result).group(1)),  # type: ignore[union-attr]
        "p50": _seconds(re.search(r"\n\s+50%\s+(\S+)", result).group(1)),  # type: ignore[union-attr]
        "p99": _seconds(re.search(r"\n\s+99%\s+(\S+)", result).group(1)),  # type: ignore[union-attr]
    }
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="director-bench-front-", dir="/tmp"))
    cert, key = certificate(work)
    script = work / "ipv4.lua"
    script.write_text(IPV4_ONLY)
    https_port = free_port()
    stack = Stack(
        f'manager.dashboard_host="{HOST}"',
        f'router.dashboard_certificate="{cert}"',
        f'router.dashboard_certificate_key="{key}"',
        f"router.https_port={https_port}",
    )
    try:
        seed(stack, args.sites)
        stack.start(("router", "manager"))
        direct = f"http://127.0.0.1:{stack.ports['manager']}/api/v1/sites"
        routed = f"https://{HOST}:{https_port}/api/v1/sites"
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        manager_pid = stack.processes[-1].pid
        pid_file = stack.base / "var" / "router" / "nginx" / "nginx.pid"
        for url in (direct, routed):  # warm up: connections, caches, the JIT of nothing
            wrk(url, stack.token, 4, 2, script)
        for _ in range(args.rounds):
            for connections in (1, 16):
                for what, url in (("direct", direct), ("router", routed)):
                    before = (cpu_seconds([manager_pid]), cpu_seconds(nginx_processes(pid_file)))
                    run = wrk(url, stack.token, connections, args.duration, script)
                    after = (cpu_seconds([manager_pid]), cpu_seconds(nginx_processes(pid_file)))
                    run["manager_cpu"] = (after[0] - before[0]) / run["requests"]
                    run["nginx_cpu"] = (after[1] - before[1]) / run["requests"]
                    results.setdefault((what, connections), []).append(run)
                    time.sleep(0.5)
        print(
            f"GET /api/v1/sites, admin token, {args.sites} sites in the store; "
            f"{args.rounds} rounds of {args.duration:.0f} s each (medians)"
        )
        summary: dict[tuple[str, int], dict[str, float]] = {}
        for (what, connections), runs in results.items():
            summary[(what, connections)] = {
                k: statistics.median(r[k] for r in runs)
                for k in ("rps", "p50", "p99", "manager_cpu", "nginx_cpu")
            }
        for connections in (1, 16):
            for what, label in (
                ("direct", "direct to the manager (HTTP)"),
                ("router", "through the router (HTTPS)"),
            ):
                s = summary[(what, connections)]
                print(
                    f"  -c{connections:<2} {label:30} {s['rps']:8.0f} req/s   "
                    f"p50 {s['p50'] * 1000:6.2f} ms   p99 {s['p99'] * 1000:6.2f} ms   "
                    f"CPU/request: manager {s['manager_cpu'] * 1e6:5.0f} us, "
                    f"front nginx {s['nginx_cpu'] * 1e6:4.0f} us"
                )
            # Each round's routed run against the direct run just before it (the load on a
            # shared machine drifts between rounds more than within one).
            paired = [
                r["rps"] / d["rps"]
                for d, r in zip(
                    results[("direct", connections)], results[("router", connections)], strict=True
                )
            ]
            print(
                f"  -c{connections:<2} ratio router/direct: {statistics.median(paired):.2f}x "
                f"(median of rounds: {', '.join(f'{x:.2f}' for x in paired)}; target >= 0.8)"
            )
    finally:
        stack.close()  # the router stops its front nginx as it stops
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
