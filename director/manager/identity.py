"""
Who holds an operation's lease: a manager's stable identity and its process's incarnation.

The identity is kept in C{<state_dir>/manager-identity}, so a manager restarted on the same
state directory (after a crash, a C{kill -9}, an upgrade) knows which leases were its own and
takes them back at once instead of waiting for them to expire. The file is C{flock}ed for the
process's lifetime: a second manager started on the same state directory while the first
still runs does not share its identity (it gets one of its own for that run), so it can never
take over a live manager's operations. The kernel drops the lock when the process dies, however
it dies.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from twisted.logger import Logger

log = Logger()

FILE_NAME = "manager-identity"
_VALID = re.compile(r"^manager-[0-9a-f]{12}$")


def new_identity() -> str:
    return f"manager-{secrets.token_hex(6)}"


def new_incarnation() -> str:
    return secrets.token_hex(4)


def worker_name(identity: str, incarnation: str) -> str:
    """The value a lease's C{claimed_by} holds: C{<identity>/<incarnation>}."""
    return f"{identity}/{incarnation}"


def lease_identity(claimed_by: str) -> str:
    """The identity part of a C{claimed_by} value (all of it for an older, plain name)."""
    return claimed_by.partition("/")[0]


@dataclass
class ManagerIdentity:
    """A manager's identity and, if it came from the state directory, the lock that holds it."""

    name: str
    persistent: bool
    _lock: IO[bytes] | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def claim_identity(state_dir: Path) -> ManagerIdentity:
    """
    The identity stored under C{state_dir} (created on first use), locked for this process;
    a fresh, unstored one if another live process holds it or the file cannot be used
    (blocking: called at start-up, before the reactor runs).
    """
    path = state_dir / FILE_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
    except OSError as e:
        log.warn("cannot use {path} ({error}): this run's leases are its own", path=path, error=e)
        return ManagerIdentity(new_identity(), persistent=False)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        log.warn(
            "another manager runs with {path}: this one takes an identity of its own", path=path
        )
        return ManagerIdentity(new_identity(), persistent=False)
    name = handle.read(64).decode("ascii", "replace").strip()
    if not _VALID.fullmatch(name):
        name = new_identity()
        handle.seek(0)
        handle.truncate()
        handle.write(name.encode("ascii") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return ManagerIdentity(name, persistent=True, _lock=handle)
