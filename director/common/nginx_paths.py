"""
One nginx of ours, from outside: where its configuration, pid file and logs are
(L{NginxPaths}) and its command line, the error it refuses a configuration with, values
quoted for its configuration (L{nginx_string}), and the blocking checks and stop that the
CLI and start-up use.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from director.common import pidfiles
from director.common.errors import StartupError

SETSID = "/usr/bin/setsid"  # util-linux, on every Debian system
#: ``DIRECTOR_NGINX=supervised`` in the daemon's environment (the systemd units set it): each
#: nginx runs under a service of its own (`director nginx run`), which starts and stops it;
#: the daemon adopts it, reloads it, and never starts or stops it itself.
SUPERVISED_ENV = "DIRECTOR_NGINX"
#: nginx's access and error logs are rotated past this size, and this many old ones kept.
LOG_MAX_BYTES = 16 * 1024 * 1024
LOG_KEEP = 3
SAFE_FILENAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,120}\.conf$")


class NginxError(Exception):
    """nginx refused a configuration; C{output} is what `nginx -t` said."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def nginx_string(value: str) -> str:
    """
    A value as a double-quoted nginx string. Callers validate values first; this refuses
    anything that could still change the meaning of the config.
    """
    if re.search(r'["\\$;{}\s\x00-\x1f\x7f]', value):
        raise ValueError(f"refusing to put {value!r} into nginx config")
    return f'"{value}"'


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.done: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.done.callback(code if code is not None else -1)


@dataclass
class NginxPaths:
    """Where one nginx instance keeps its files (all under one prefix directory)."""

    prefix: Path
    binary: str = "/usr/sbin/nginx"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def sites(self) -> Path:
        return self.prefix / "sites"

    @property
    def temp(self) -> Path:
        return self.prefix / "tmp"

    def create(self) -> None:
        for path in (self.prefix, self.error_log.parent, self.sites, self.temp):
            path.mkdir(parents=True, exist_ok=True)

    def argv(self, *extra: str) -> list[str]:
        return [self.binary, "-c", str(self.conf), "-e", str(self.error_log), *extra]


def check_blocking(paths: NginxPaths, what: str) -> None:
    """`nginx -t` at start-up (blocks): a broken configuration stops the daemon."""
    import subprocess

    try:
        result = subprocess.run(
            paths.argv("-t", "-q"), capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StartupError(f"{what}: cannot run {paths.binary}: {e}") from None
    if result.returncode != 0:
        output = (result.stderr + result.stdout).strip()
        raise StartupError(f"{what}: nginx refused the configuration: {output}")


def stop_instance(paths: NginxPaths, timeout: float = 10) -> int | None:
    """
    Stop the nginx running C{paths}' configuration, found by its pid file (blocks; for
    `director stop` and test harnesses). The pid it stopped, or None if none ran.
    """
    pid = pidfiles.running_pid(paths.pid, str(paths.conf))
    if pid is not None:
        pidfiles.stop_pid_blocking(pid, signal.SIGQUIT, timeout)
    return pid
