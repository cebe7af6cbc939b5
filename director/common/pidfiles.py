"""
Servers that outlive the daemon that started them (nginx, the bundled database servers):
found again through their pid file, and stopped by pid on a deliberate stop.

A pid file names a process only if that process still runs the same server: its command
line must contain C{marker} (the server's own config or data path), so a stale pid file
whose number now belongs to something else is never adopted or signalled.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from twisted.internet.task import deferLater


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in C{pid_file} if that process runs and its command line contains C{marker}."""
    try:
        pid = int(pid_file.read_text().split()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    if marker not in command or not alive(pid):
        return None
    return pid


def alive(pid: int) -> bool:
    """Running and not a zombie (a child not reaped yet counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return ""


async def stop_pid(reactor: Any, pid: int, first: int, timeout: float) -> bool:
    """
    Send C{first}, wait (without blocking the reactor) until C{pid} is gone, then SIGKILL
    after C{timeout} seconds. False if the process had to be killed.
    """
    try:
        os.kill(pid, first)
    except ProcessLookupError:
        return True
    waited = 0.0
    while alive(pid):
        if waited >= timeout:
            _kill(pid)
            return False
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05
    return True


def stop_pid_blocking(pid: int, first: int, timeout: float) -> bool:
    """L{stop_pid} for command-line tools (blocks)."""
    try:
        os.kill(pid, first)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            _kill(pid)
            return False
        time.sleep(0.05)
    return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
