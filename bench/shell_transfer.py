"""
Files over SSH: an `scp` of a 100 MB file into a site and an `sftp` download of it, each
timed (target >= 20 MB/s), with the resident memory of every Director process involved (the
shell server and the orchestrator) sampled every 20 ms; its growth over the idle value is
reported (it must stay bounded: the bridge applies backpressure both ways).

    .venv/bin/python bench/shell_transfer.py [--megabytes 100]

Starts its own orchestrator (twistd, child process) with a static site, and a child process
running the real shell server with the fake manager of the integration tests (users and
keys in memory, real signed requests and tokens); the real OpenSSH clients do the transfers.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from orchestrator_common import BenchOrchestrator, free_port

SITE_ID = 296
SITE = "benchsftp"


def serve(config_path: str, shell_port: int, manager_port: int, public_key: str) -> None:
    """The child: the shell server and the fake manager on one reactor."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.web.server import Site

    from director.common.config import load_config
    from director.common.keys import load_private_key
    from director.common.service import component_verifier
    from director.shell.service import build_service
    from director.testing.fake_shell_manager import FakeShellManager

    config = load_config(Path(config_path))
    config = dataclasses.replace(
        config,
        shell=dataclasses.replace(config.shell, host="127.0.0.1", port=shell_port),
        manager=dataclasses.replace(config.manager, url=f"http://127.0.0.1:{manager_port}"),
    )
    ws = "ws" + config.orchestrator.url[4:]
    fake = FakeShellManager(reactor, load_private_key(config.auth.keys_dir, "manager"), ws)
    fake.add_site(SITE_ID, SITE)
    fake.add_user("bench", None, keys=(public_key,), sites=(SITE,))
    site = Site(fake.resource(component_verifier(reactor, config, "manager")))
    site.noisy = False
    TCP4ServerEndpoint(reactor, manager_port, interface="127.0.0.1").listen(site)
    shell = build_service(reactor, config)
    shell.privilegedStartService()
    shell.startService()
    print("ready", flush=True)
    profile = os.environ.get("BENCH_PROFILE")  # a path: cProfile the shell server into it
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        reactor.run()
        profiler.disable()
        profiler.dump_stats(profile)
    else:
        reactor.run()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {name: 0 for name in pids}
        self.stopped = False

    def run(self) -> None:
        while not self.stopped:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_kb(pid))
            time.sleep(0.02)

    def reset(self) -> None:
        self.peak = {name: 0 for name in self.pids}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    with BenchOrchestrator() as orchestrator:
        orchestrator.call("PUT", f"/v1/sites/{SITE_ID}", {"name": SITE, "type": "static"})
        key = orchestrator.base / "bench_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public_key = " ".join(Path(f"{key}.pub").read_text().split()[:2])
        shell_port, manager_port = free_port(), free_port()
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                str(orchestrator.base / "director.toml"),
                str(shell_port),
                str(manager_port),
                public_key,
            ],
            stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
            options = [
                "-F", "/dev/null",
                "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR",
                "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes",
                "-i", str(key),
            ]  # fmt: skip
            data = orchestrator.base / "big.bin"
            with data.open("wb") as f:
                for _ in range(args.megabytes):
                    f.write(os.urandom(1024 * 1024))
            digest = hashlib.sha256(data.read_bytes()).hexdigest()
            env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
            # warm up: the terminal container starts on first use
            warm = ["ssh", *options, "-p", str(shell_port), f"bench/{SITE}@127.0.0.1", "true"]
            subprocess.run(warm, check=True, env=env, timeout=120)
            pids = {"shell server": child.pid, "orchestrator": orchestrator.pid}
            idle = {name: rss_kb(pid) for name, pid in pids.items()}
            sampler = Sampler(pids)
            sampler.start()
            size = args.megabytes

            start = time.perf_counter()
            scp = ["scp", *options, "-P", str(shell_port), "-o", f"User=bench/{SITE}"]
            subprocess.run([*scp, str(data), "127.0.0.1:private/big.bin"], check=True, env=env)
            up = time.perf_counter() - start
            stored = orchestrator.site_dir(SITE_ID) / "private/big.bin"
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest, "upload corrupt"
            up_peak = dict(sampler.peak)
            sampler.reset()

            down_path = orchestrator.base / "down.bin"
            start = time.perf_counter()
            sftp = ["sftp", *options, "-P", str(shell_port), "-b", "-", f"bench/{SITE}@127.0.0.1"]
            batch = f"get private/big.bin {down_path}\n".encode()
            subprocess.run(sftp, input=batch, check=True, env=env, stdout=subprocess.DEVNULL)
            down = time.perf_counter() - start
            assert hashlib.sha256(down_path.read_bytes()).hexdigest() == digest, "download corrupt"
            down_peak = dict(sampler.peak)
            sampler.stopped = True

            print(f"scp upload of {size} MB:    {up:.2f} s = {size / up:.1f} MB/s")
            print(f"sftp download of {size} MB: {down:.2f} s = {size / down:.1f} MB/s")
            for name in pids:
                print(
                    f"{name}: idle {idle[name] / 1024:.0f} MB; growth during upload"
                    f" {(up_peak[name] - idle[name]) / 1024:.1f} MB, during download"
                    f" {(down_peak[name] - idle[name]) / 1024:.1f} MB"
                )
        finally:
            child.terminate()
            child.wait(30)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
