"""
The orchestrator's per-site nginx files: staged, checked by what changed rather than by
everything, then published where nginx reads them.

L{NginxConfigDirectory} writes a batch of changes, runs its nginx's C{check()} (normally
`nginx -t`), and then reloads, or restores the old files if the check failed. Two things
about that are wrong for the orchestrator at scale, and L{StagedNginx} (the nginx process
the directory drives) fixes both without changing the directory:

 - A full `nginx -t` parses every site's file (about 0.4 s at 5,000 sites on the reference
   machine), and the reload parses them all again. Each site's file is self-contained (its
   upstream is named after the site id; nothing else in it is global), so checking the main
   configuration with only the changed files finds every error a full check would, in
   milliseconds at any number of sites.
 - A reload is a signal: the nginx master re-reads its files some time after it, while the
   directory may already be writing its next batch. A bad file written in that window
   makes the master's reload fail, and the change before it, already reported live, is
   not. So the directory writes to a I{staging} directory that nginx never reads; the check
   reads the staged files, and only files that passed are published (each atomically) to
   the directory nginx reads, just before the reload.

A change is "in flight" from L{SiteNginxFiles.apply} until its result fires: the directory
may write its staged file at any point in between (a failing batch is retried a change at a
time), so every check covers every name in flight, as its staged file is at that moment (a
file not written yet, or restored, is checked as it is, and is the same as what is live).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from director.common.atomic import atomic_write
from director.common.nginx import NginxConfigDirectory, NginxPaths, NginxProcess
from director.common.threads import Runner


class NginxFiles(Protocol):
    """Where the runtime sends nginx changes ({file name: text, or None to remove})."""

    def apply(self, changes: Mapping[str, str | None]) -> Deferred[None]: ...


@dataclass
class _CheckPaths(NginxPaths):
    """The nginx paths, but with the check configuration as the one `nginx -t` reads."""

    @property
    def conf(self) -> Path:
        return self.prefix / "check.conf"


@dataclass
class _AlonePaths(NginxPaths):
    """The nginx paths with a configuration of its own for one check of one file."""

    check_conf: Path = Path("check-alone.conf")

    @property
    def conf(self) -> Path:
        return self.check_conf


def _write_alone(directory: Path, name: str, text: str, conf: str, render: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    atomic_write(path, text)
    atomic_write(directory / conf, render([path]))
    return path


def _remove_alone(directory: Path, names: list[str]) -> None:
    for name in names:
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            pass


def _write_check_config(
    path: Path, staged: Path, names: list[str], render: Callable[[list[Path]], str]
) -> None:
    present = [staged / name for name in names if (staged / name).exists()]
    atomic_write(path, render(present))


def _publish(staged: Path, live: Path, names: list[str]) -> None:
    """Make each named live file what is staged (copied, or removed), one rename each."""
    for name in names:
        source = staged / name
        if source.exists():
            atomic_write(live / name, source.read_bytes())
        else:
            try:
                (live / name).unlink()
            except FileNotFoundError:
                pass


def sync_staging(staged: Path, live: Path) -> None:
    """
    At start-up, stage exactly what is live. Live files all passed a check; a staged change
    that never did (the orchestrator stopped mid-change) is dropped, which agrees with the
    runtime: it records a site as applied only after its nginx change went live.
    """
    staged.mkdir(parents=True, exist_ok=True)
    wanted = {path.name for path in live.glob("*.conf")}
    for path in staged.glob("*.conf"):
        if path.name not in wanted:
            path.unlink()
    _publish(live, staged, sorted(wanted))


def _master_pid(paths: NginxPaths, known: int | None) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return known


def serving_workers(master: int | None) -> set[int]:
    """
    The pids of the master's workers that accept connections (not those shutting down
    after a reload). Reads /proc only (memory, no disk).
    """
    if master is None:
        return set()
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return set()
    serving = set()
    for child in children:
        try:
            title = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"nginx: worker process") and b"shutting down" not in title:
            serving.add(int(child))
    return serving


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


class StagedNginx(NginxProcess):
    """
    The orchestrator's nginx process as its config directory sees it (the directory works
    in C{staged}): C{check()} runs `nginx -t` on the main configuration with just the staged
    files in flight and, when it passes, publishes them to the directory nginx reads;
    everything else, reloading included, is L{NginxProcess}'s.
    """

    def __init__(
        self,
        reactor: Any,
        paths: NginxPaths,
        what: str,
        files: Runner,
        render: Callable[[list[Path]], str],
        staged: Path,
    ) -> None:
        super().__init__(reactor, paths, what)
        self._files = files
        self._render = render
        self.staged = staged
        self._checker = NginxProcess(reactor, _CheckPaths(paths.prefix, paths.binary), what)
        self._in_flight: Counter[str] = Counter()
        self.checked: list[list[str]] = []  # the names each successful check covered
        #: the workers that were serving when the last reload was asked for
        self._before_reload: set[int] = set()

    def reload(self) -> None:
        self._before_reload |= serving_workers(_master_pid(self.paths, self.pid))
        super().reload()

    async def drained(self, timeout: float = 5.0) -> bool:
        """
        Wait until every worker that was serving when the last reload was asked for has
        exited (it finished its requests under the old configuration), C{timeout} at most.
        """
        waited = 0.0
        while True:
            self._before_reload = await self._files.run(_alive, self._before_reload)
            if not self._before_reload:
                return True
            if waited >= timeout:
                # shutting down, they take no new request: only their long ones (websockets)
                # are left, and later reloads need not wait for them again
                self._before_reload = set()
                return False
            await deferLater(self._reactor, 0.02, lambda: None)
            waited += 0.02

    def track(self, names: list[str], done: Deferred[None]) -> Deferred[None]:
        """Cover C{names} in every check until C{done} fires; fires with its result."""
        self._in_flight.update(names)

        def finished(result: Any) -> Any:
            self._in_flight.subtract(names)
            self._in_flight += Counter()  # drop the names that reached zero
            return result

        return done.addBoth(finished)

    async def check_alone(self, text: str) -> None:
        """
        `nginx -t` of the main configuration with only C{text} as a site's file, apart from
        every file in flight or live (nothing is published): L{NginxError} with nginx's
        message if it is refused.
        """
        directory = self.paths.prefix / "check-alone"
        token = uuid.uuid4().hex
        name, conf = f"{token}.conf", f"{token}.main"
        await self._files.run(_write_alone, directory, name, text, conf, self._render)
        try:
            paths = _AlonePaths(self.paths.prefix, self.paths.binary, directory / conf)
            await NginxProcess(self._reactor, paths, self.what).check()
        finally:
            await self._files.run(_remove_alone, directory, [name, conf])

    async def check(self) -> None:
        names = sorted(self._in_flight)
        await self._files.run(
            _write_check_config, self._checker.paths.conf, self.staged, names, self._render
        )
        await self._checker.check()
        await self._files.run(_publish, self.staged, self.paths.sites, names)
        self.checked.append(names)


class SiteNginxFiles:
    """The runtime's view: changes go to the config directory, their names to the check."""

    def __init__(self, directory: NginxConfigDirectory, nginx: StagedNginx) -> None:
        self._directory = directory
        self._nginx = nginx

    def apply(self, changes: Mapping[str, str | None]) -> Deferred[None]:
        return self._nginx.track(list(changes), self._directory.apply(changes))

    def check_alone(self, text: str) -> Deferred[None]:
        """Whether nginx takes C{text} as a site's file (see L{StagedNginx.check_alone})."""
        return Deferred.fromCoroutine(self._nginx.check_alone(text))

    def drained(self, timeout: float = 5.0) -> Deferred[bool]:
        """Fires once no nginx worker serves with a configuration older than the last reload."""
        return Deferred.fromCoroutine(self._nginx.drained(timeout))
