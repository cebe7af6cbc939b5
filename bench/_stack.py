"""Start a real manager + orchestrator + router (separate twistd processes) for benchmarks."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """The three HTTP components on free loopback ports, with an admin API token."""

    def __init__(self, *extra: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="director-bench-", dir="/tmp"))
        self.base.chmod(0o755)
        self.ports = {c: free_port() for c in ("manager", "orchestrator", "router")}
        self.nginx_port = free_port()
        self.http_port = free_port()
        settings = [
            *(f"{c}.port={p}" for c, p in self.ports.items()),
            *(f'{c}.url="http://127.0.0.1:{p}"' for c, p in self.ports.items()),
            f"orchestrator.nginx_port={self.nginx_port}",
            f'router.upstreams="127.0.0.1:{self.nginx_port}"',
            f"router.http_port={self.http_port}",
            f"router.https_port={free_port()}",
            'router.public_host="127.0.0.1"',
            "manager.bcrypt_rounds=4",
            *extra,
        ]
        self.config = self.base / "director.toml"
        args = [
            str(BIN / "director"),
            "init",
            "--config",
            str(self.config),
            "--state-dir",
            str(self.base / "var"),
        ]
        for setting in settings:
            args += ["--set", setting]
        subprocess.run(args, check=True, capture_output=True)
        (self.base / "var").chmod(0o755)
        self.token = subprocess.run(
            [str(BIN / "director"), "token", "create", "admin", "--config", str(self.config)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, components: tuple[str, ...] = ("orchestrator", "router", "manager")) -> None:
        for component in components:
            log = (self.base / f"{component}.log").open("ab")
            self.processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "twistd"),
                        "-n",
                        "--pidfile=",
                        f"director-{component}",
                        "--config",
                        str(self.config),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.base,
                )
            )
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.ports[component]), 0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{component} did not start") from None
                    time.sleep(0.05)

    def api(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['manager']}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def front(self, host: str) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/", headers={"Host": host}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def close(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait(30)
        applied = self.base / "var" / "orchestrator" / "applied"
        for path in applied.glob("*.json"):
            subprocess.run(["docker", "service", "rm", f"site_{path.stem}"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
