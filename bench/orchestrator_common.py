"""
What the orchestrator benchmarks share: an orchestrator of their own (``twistd -n
director-orchestrator`` in a child process, with a fresh config and state under /tmp, on
free loopback ports), a blocking client that signs its requests as the manager, and GETs
through the orchestrator's nginx. Not a benchmark itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from services import free_port, front_get  # noqa: E402

from director.cli import main as director_main  # noqa: E402
from director.common.config import Config, load_config  # noqa: E402
from director.common.keys import load_private_key  # noqa: E402
from director.common.signing import RequestSigner  # noqa: E402

#: Site ids the benchmarks use (their swarm services are removed when they stop).
BENCH_SITE_IDS = range(250, 300)

RUN_SH = b'#!/bin/sh\nexec python3 -m http.server "$PORT" --directory /site/public\n'


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class BenchOrchestrator:
    """One orchestrator process for a benchmark run."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="director-bench-", dir="/tmp"))
        self.base.chmod(0o755)
        config_path = self.base / "director.toml"
        api_port = free_port()
        code = director_main(
            [
                "init",
                "--config",
                str(config_path),
                "--state-dir",
                str(self.base / "var"),
                "--set",
                f"orchestrator.port={api_port}",
                "--set",
                f'orchestrator.url="http://127.0.0.1:{api_port}"',
                "--set",
                f"orchestrator.nginx_port={free_port()}",
            ]
        )
        assert code == 0, "director init failed"
        (self.base / "var").chmod(0o755)
        self.config: Config = load_config(config_path)
        clock: Any = types.SimpleNamespace(seconds=time.time)
        self.signer = RequestSigner(
            "manager", load_private_key(self.config.auth.keys_dir, "manager"), clock
        )
        self.log_path = self.base / "orchestrator.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "twistd"),
                "-n",
                "--pidfile=",
                f"--logfile={self.log_path}",
                "director-orchestrator",
                "--config",
                str(config_path),
            ],
            cwd=self.base,
            env=env,
        )
        self._wait_healthy()

    @property
    def url(self) -> str:
        return self.config.orchestrator.url

    @property
    def nginx_port(self) -> int:
        return self.config.orchestrator.nginx_port

    @property
    def pid(self) -> int:
        return self.process.pid

    def site_dir(self, site_id: int) -> Path:
        return self.base / "var" / "sites" / str(site_id)

    def _wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"orchestrator exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    # the API is up; the runtime connects to Docker just after
                    time.sleep(0.5)
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"orchestrator not healthy after {timeout}s; see {self.log_path}")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> Any:
        """A signed request as the manager; the decoded JSON answer (errors raise)."""
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        payload = data if data is not None else b""
        headers = {}
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        headers.update(self.signer.headers("orchestrator", method, target, payload))
        request = urllib.request.Request(
            self.url + target,
            data=payload if payload or method in ("PUT", "POST", "PATCH") else None,
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None
        return json.loads(text) if text else None

    def ws_headers(self, path: str) -> dict[str, str]:
        return self.signer.headers("orchestrator", "GET", path)

    def get(self, name: str, path: str = "/", timeout: float = 2) -> tuple[int, bytes]:
        """GET through the orchestrator's nginx (as the router would)."""
        host = f"{name}.{self.config.director.sites_domain}"
        return front_get(self.nginx_port, host, path, timeout)

    def rss_kb(self) -> tuple[int, int]:
        """The orchestrator process's resident set now and at its peak (VmRSS, VmHWM), KiB."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        names = [f"site_{i}" for i in BENCH_SITE_IDS]
        existing = subprocess.run(
            ["docker", "service", "ls", "--format", "{{.Name}}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        doomed = [n for n in names if n in existing]
        if doomed:
            subprocess.run(["docker", "service", "rm", *doomed], capture_output=True, check=False)
        terminals = [f"site_{i}_terminal" for i in BENCH_SITE_IDS]
        subprocess.run(["docker", "rm", "-f", *terminals], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> BenchOrchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
