"""
The cluster's state file (L{State}: what was made, and the processes started, by pid) and the
helpers that run commands and start, wait for and end processes. Blocking, like
L{director.cluster.nodes}.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from director.cluster.layout import Layout

#: How long an engine, an orchestrator or a command may take before we give up.
ENGINE_START_TIMEOUT = 60.0
ENGINE_STOP_TIMEOUT = 40.0
ORCHESTRATOR_START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 120.0


class ClusterError(Exception):
    """The cluster cannot be brought up (or is up already); the message says why."""


# -- the state file ------------------------------------------------------------------------


class State:
    """What exists of a cluster, written through to its state file at every change."""

    def __init__(self, layout: Layout, data: dict[str, Any] | None = None) -> None:
        self.layout = layout
        self.data: dict[str, Any] = data or {
            "prefix": layout.prefix,
            "nodes": layout.nodes,
            "octet": layout.octet,
            "root": str(layout.root),
            "run": str(layout.run),
            "netns": [],
            "host_link": False,
            "processes": {},
        }

    @classmethod
    def load(cls, state_file: Path) -> State:
        data = json.loads(state_file.read_text())
        layout = Layout(
            data["prefix"], data["nodes"], data["octet"], Path(data["root"]), Path(data["run"])
        )
        return cls(layout, data)

    def save(self) -> None:
        path = self.layout.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        # a tmp file per thread: `down` stops the engines from several threads at once
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(path)

    def netns_made(self, name: str) -> None:
        self.data["netns"].append(name)
        self.save()

    def process(self, key: str, pid: int, marker: str) -> None:
        """Process C{key} runs as C{pid}; its command line contains C{marker}."""
        self.data["processes"][key] = {"pid": pid, "marker": marker}
        self.save()

    def pid(self, key: str) -> int | None:
        entry = self.data["processes"].get(key)
        return int(entry["pid"]) if entry else None

    def forget(self, key: str) -> None:
        self.data["processes"].pop(key, None)
        self.save()


# -- small helpers -------------------------------------------------------------------------


def _run(argv: list[str], timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{' '.join(argv)}: no answer within {timeout:g} s") from None
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def docker(layout: Layout, n: int, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """The docker CLI against node C{n}'s engine."""
    return _run(["docker", "-H", layout.docker_url(n), *args], timeout=timeout)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Whether C{pid} runs (a zombie does not; our own children are reaped here)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def end_process(pid: int, marker: str, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """
    Send C{sig} to C{pid} if it still runs a command containing C{marker}, wait up to
    C{timeout} s for it to end, then kill it. False if it was not running.
    """
    if not _alive(pid) or marker not in _cmdline(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    return True


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(log.parent),
        )
    return process.pid


def _wait(what: str, ready: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "; last lines of " + str(log) + ":\n" + "\n".join(log.read_text().splitlines()[-15:])
    raise ClusterError(f"waited {timeout:g} s for {what}, in vain{tail}")


def _connects(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _in_netns(layout: Layout, n: int) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{layout.netns(n)}"]


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
