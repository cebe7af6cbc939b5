"""
restic, the backup engine: encrypted, deduplicated snapshots in a repository that is a local
directory by default and any restic backend (S3, SFTP, REST server) by configuration.

L{Restic} runs the C{restic} command as a child process of the reactor (never waiting on it),
with a time limit on every run (the process is killed when it is over), C{--json} output for
what is parsed, and the repository's password in a file (0600, made on first use). The
credentials of a remote backend come from the environment given in the settings.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from director.common.errors import CodedError

log = Logger()

#: one repository is initialised by one L{Restic} at a time (see L{Restic.ensure_repository})
_INIT_LOCKS: dict[str, DeferredLock] = {}

#: the most of a child's stderr kept (for messages); stdout is kept whole (JSON answers)
STDERR_LIMIT = 64 * 1024


class ResticError(CodedError):
    """A restic run failed; C{code} is stable (C{locked}, C{timeout}, C{not_found}, C{failed})."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class ResticSettings:
    """Where the repository is and how to open it."""

    repository: str
    password_file: Path
    cache_dir: Path | None = None
    #: the backend's credentials and options (AWS_ACCESS_KEY_ID, RESTIC_REST_USERNAME, ...)
    environment: Mapping[str, str] = field(default_factory=dict)
    binary: str = "restic"


def ensure_password_file(path: Path) -> None:
    """Make the repository password (0600) if there is none yet."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")


class _Collect(ProcessProtocol):
    def __init__(self, done: Deferred[tuple[bytes, bytes, int]], keep_stdout: bool) -> None:
        self._done = done
        self._out: list[bytes] = []
        self._err = bytearray()
        self._keep = keep_stdout

    def outReceived(self, data: bytes) -> None:
        if self._keep:
            self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        self._err += data
        if len(self._err) > STDERR_LIMIT:
            del self._err[: len(self._err) - STDERR_LIMIT]

    def processEnded(self, reason: Failure) -> None:
        code = 0
        if reason.check(ProcessTerminated):
            value: Any = reason.value
            code = value.exitCode if value.exitCode is not None else -(value.signal or 1)
        elif not reason.check(ProcessDone):
            code = -1
        self._done.callback((b"".join(self._out), bytes(self._err), code))


async def run_process(
    reactor: Any,
    argv: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    cwd: str | None = None,
    stdin_path: Path | None = None,
    stdout_path: Path | None = None,
) -> tuple[bytes, bytes, int]:
    """
    Run C{argv} as a child process in its own session; its (stdout, stderr, exit code). At
    C{timeout} seconds the whole process group is killed and L{ResticError} C{timeout} raised.
    C{stdin_path} / C{stdout_path} connect a file to the child's stdin / stdout (opened here,
    on the reactor thread: an open is not a wait).
    """
    done: Deferred[tuple[bytes, bytes, int]] = Deferred()
    fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
    opened: list[int] = []
    if stdin_path is not None:
        opened.append(os.open(stdin_path, os.O_RDONLY))
        fds[0] = opened[-1]
    if stdout_path is not None:
        opened.append(os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        fds[1] = opened[-1]
    protocol = _Collect(done, keep_stdout=stdout_path is None)
    try:
        transport = reactor.spawnProcess(
            protocol,
            "/usr/bin/setsid",
            ["setsid", *argv],
            env=dict(env),
            path=cwd,
            childFDs=fds,
        )
    finally:
        for fd in opened:
            os.close(fd)
    if stdin_path is None:
        transport.closeStdin()
    timed_out = []

    def kill() -> None:
        timed_out.append(True)
        pid = transport.pid
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    call = reactor.callLater(timeout, kill)

    def stopping() -> None:  # a stopping daemon leaves no backup process behind
        pid = transport.pid
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    trigger = reactor.addSystemEventTrigger("before", "shutdown", stopping)
    try:
        result = await done
    finally:
        if call.active():
            call.cancel()
        reactor.removeSystemEventTrigger(trigger)
    if timed_out:
        raise ResticError("timeout", f"{argv[0]} did not finish within {timeout:.0f} seconds")
    return result


def _message(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    # restic's --json progress goes to stdout; stderr holds the errors, the last says most
    useful = [line for line in lines if not line.startswith("{")]
    return (useful[-1] if useful else (lines[-1] if lines else "no output")).strip()[:500]


class Restic:
    """The C{restic} command on one repository."""

    def __init__(
        self,
        reactor: Any,
        settings: ResticSettings,
        timeout: float = 6 * 3600,
        lock_retries: int = 60,
        lock_wait: float = 5.0,
    ) -> None:
        self._reactor = reactor
        self.settings = settings
        self._timeout = timeout
        self._lock_retries = lock_retries
        self._lock_wait = lock_wait
        self._initialised = False

    def environment(self) -> dict[str, str]:
        s = self.settings
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "RESTIC_REPOSITORY": s.repository,
            "RESTIC_PASSWORD_FILE": str(s.password_file),
            "RESTIC_PROGRESS_FPS": "0.2",
        }
        if s.cache_dir is not None:
            env["RESTIC_CACHE_DIR"] = str(s.cache_dir)
        env.update(s.environment)
        return env

    async def run(
        self,
        args: Sequence[str],
        cwd: str | None = None,
        timeout: float | None = None,
        stdout_path: Path | None = None,
    ) -> bytes:
        """Run C{restic ARGS}; its stdout. A locked repository is waited for (a prune runs)."""
        await self.ensure_repository()
        return await self._run(args, cwd, timeout, stdout_path)

    async def _run(
        self,
        args: Sequence[str],
        cwd: str | None = None,
        timeout: float | None = None,
        stdout_path: Path | None = None,
    ) -> bytes:
        attempts = 0
        while True:
            out, err, code = await run_process(
                self._reactor,
                [self.settings.binary, *args],
                self.environment(),
                timeout or self._timeout,
                cwd=cwd,
                stdout_path=stdout_path,
            )
            if code == 0:
                return out
            message = _message(err)
            if "already locked" in message or "unable to create lock" in message:
                attempts += 1
                if attempts <= self._lock_retries:
                    await deferLater(self._reactor, self._lock_wait, lambda: None)
                    continue
                raise ResticError("locked", f"the backup repository stays locked: {message}")
            if "no matching ID found" in message or "not found" in message.lower():
                raise ResticError("not_found", message)
            raise ResticError("failed", f"restic {args[0]} failed: {message}")

    async def ensure_repository(self) -> None:
        """
        The password file, and the repository (C{restic init}) if it is not there yet. Two
        C{restic init} at once would leave a repository no key opens: every L{Restic} of
        this process, and (by a lock file next to the password) every process, takes turns.
        """
        if self._initialised:
            return
        lock = _INIT_LOCKS.setdefault(self.settings.repository, DeferredLock())
        await lock.acquire()
        try:
            if self._initialised:
                return
            ensure_password_file(self.settings.password_file)
            lock_path = self.settings.password_file.with_name(
                self.settings.password_file.name + ".lock"
            )
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for _ in range(3000):
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await deferLater(self._reactor, 0.1, lambda: None)
                await self._init_repository()
            finally:
                os.close(fd)  # releases the lock
        finally:
            lock.release()

    async def _init_repository(self) -> None:
        if self.settings.cache_dir is not None:
            self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
        _, _, code = await run_process(
            self._reactor,
            [self.settings.binary, "cat", "config"],
            self.environment(),
            120,
        )
        if code != 0:
            _, err, code = await run_process(
                self._reactor, [self.settings.binary, "init"], self.environment(), 300
            )
            if code != 0 and "already" not in _message(err):
                raise ResticError("failed", f"cannot create the backup repository: {_message(err)}")
            log.info("created the backup repository {repo}", repo=self.settings.repository)
        self._initialised = True

    async def backup(
        self, cwd: Path, paths: Sequence[str], group: str, tags: Sequence[str] = ()
    ) -> dict[str, Any]:
        """
        Back up C{paths} (relative to C{cwd}, and stored so) as a snapshot of C{group} (restic's
        host field: retention keeps snapshots per group); restic's summary.
        """
        args = ["backup", "--json", "--quiet", "--host", group]
        for tag in tags:
            args += ["--tag", tag]
        out = await self.run([*args, "--", *paths], cwd=str(cwd))
        summary: dict[str, Any] = {}
        for line in out.splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("message_type") == "summary":
                summary = message
        # restic 0.14 gives the short id (8 hex digits), which restic takes everywhere; the
        # full one would cost another run of restic, and so another key derivation (about
        # half of a small site's backup time)
        if not summary.get("snapshot_id"):
            raise ResticError("failed", "restic backup gave no snapshot")
        return summary

    async def snapshots(
        self, group: str | None = None, tags: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """
        The snapshots (of C{group}, with every tag of C{tags}), oldest first. Read without
        a lock: a listing (a page, a request naming a snapshot) never waits out a prune.
        """
        args = ["snapshots", "--json", "--no-lock"]
        if group is not None:
            args += ["--host", group]
        if tags:
            args += ["--tag", ",".join(tags)]
        found = json.loads(await self.run(args, timeout=600) or b"[]")
        return list(found or [])

    async def restore(self, snapshot: str, target: Path, includes: Sequence[str] = ()) -> None:
        args = ["restore", snapshot, "--target", str(target)]
        for include in includes:
            args += ["--include", include]
        await self.run(args)

    async def dump(self, snapshot: str, path: str, into: Path) -> None:
        """Write the file at C{path} of C{snapshot} to C{into}."""
        await self.run(["dump", snapshot, path], stdout_path=into)

    async def forget(
        self, keep_daily: int, keep_weekly: int, keep_monthly: int, keep_last: int = 1
    ) -> bytes:
        """Apply the retention policy to each group (one site: same host field), and prune."""
        return await self.run(
            [
                "forget",
                "--json",
                "--group-by",
                "host",
                "--keep-last",
                str(keep_last),
                "--keep-daily",
                str(keep_daily),
                "--keep-weekly",
                str(keep_weekly),
                "--keep-monthly",
                str(keep_monthly),
                "--prune",
            ]
        )

    async def stats(self) -> dict[str, Any]:
        """The repository's size on disk (C{raw-data} mode)."""
        out = await self.run(["stats", "--json", "--mode", "raw-data"], timeout=600)
        answer: dict[str, Any] = json.loads(out)
        return answer


def read_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep and key.strip():
            env[key.strip()] = value.strip()
    return env


def settings_from_config(config: Any, repository: str | None = None) -> ResticSettings:
    """The repository of C{config}'s [backup] section (or C{repository} instead)."""
    section = config.backup
    state: Path = config.director.state_dir
    environment: dict[str, str] = {}
    if section.environment_file:
        environment = read_environment_file(Path(section.environment_file))
    return ResticSettings(
        repository=repository or section.repository or str(state / "backups" / "restic"),
        password_file=Path(section.password_file or state / "secrets" / "restic-password"),
        cache_dir=state / "backups" / "cache",
        environment=environment,
    )
