"""Real service instances for the integration tests.

Each service lives in its own subdirectory of a base directory, listens on free loopback
ports, is waited for with a deadline, records every PID it runs in ``<base>/pids/<name>.pid``
and is stopped by that PID (SIGTERM, wait, then SIGKILL). Nothing here touches the system
instances of these services (/var/lib/postgresql, /var/lib/mysql, /etc/nginx, ...).

Typical use::

    with Services(base_dir) as services:
        redis = services.start(RedisServer(base_dir))
        pg = services.start(PostgresServer(base_dir))
        ...  # everything started is stopped on exit, even if a later start failed

Every start needs root (PostgreSQL and MariaDB run as their own system users).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

__all__ = [
    "DOCKER_BRIDGE_IP",
    "DockerSwarm",
    "MariaDBServer",
    "NginxConfigError",
    "NginxServer",
    "PebbleServer",
    "PostgresServer",
    "RedisServer",
    "Service",
    "ServiceError",
    "Services",
    "check_docker_swarm",
    "docker_bridge_ip",
    "free_port",
    "pid_alive",
]

DOCKER_BRIDGE_IP = "172.17.0.1"
INSTALL_HINT = "run `make deps` (scripts/install-deps.sh) as root"
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def api_request(
    base_url: str,
    token: str,
    method: str,
    path: str,
    body: object = None,
    raw: bytes | None = None,
    timeout: float = 60,
) -> tuple[int, bytes]:
    """One call to Director's JSON API with a bearer token: (status, body), errors included."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        base_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def front_get(
    port: int, host: str, path: str = "/", timeout: float = 10, address: str = "127.0.0.1"
) -> tuple[int, bytes]:
    """GET through a front nginx on C{address}:C{port} as a browser would: (status, body);
    (0, b"") when nothing answers."""
    request = urllib.request.Request(f"http://{address}:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


class ServiceError(RuntimeError):
    """A service could not be started, was not ready in time, or a binary is missing."""


class NginxConfigError(ServiceError):
    """``nginx -t`` rejected a configuration."""


# --------------------------------------------------------------------------- helpers

_handed_out_ports: set[int] = set()


def free_port(host: str = "127.0.0.1", *, udp: bool = False, also_bind: Sequence[str] = ()) -> int:
    """Return a port that is currently free on ``host`` (TCP, and UDP when ``udp``).

    The port is picked by binding port 0 on ``host``. ``also_bind`` lists further local
    addresses on which the same port must be free (e.g. the docker bridge address). Ports
    already returned by this process are never returned twice.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port in _handed_out_ports:
            continue
        if udp and not _can_bind(host, port, socket.SOCK_DGRAM):
            continue
        if not all(_can_bind(addr, port, socket.SOCK_STREAM) for addr in also_bind):
            continue
        _handed_out_ports.add(port)
        return port
    raise ServiceError(f"could not find a free port on {host}")


def _can_bind(host: str, port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def docker_bridge_ip() -> str | None:
    """172.17.0.1 when the docker0 interface exists and holds that address, else None."""
    if not Path("/sys/class/net/docker0").exists():
        return None
    if not _can_bind(DOCKER_BRIDGE_IP, 0, socket.SOCK_STREAM):
        return None
    return DOCKER_BRIDGE_IP


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def find_binary(name: str, extra_dirs: Iterable[str] = ()) -> str:
    """Absolute path of ``name`` searched on PATH, ``extra_dirs`` and the sbin dirs."""
    path = os.pathsep.join([*extra_dirs, os.environ.get("PATH", ""), *_SBIN_DIRS])
    found = shutil.which(name, path=path)
    if found is None:
        raise ServiceError(f"required binary {name!r} not found; {INSTALL_HINT}")
    return found


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it does not exist."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log file {path})"
    return "\n".join(data.splitlines()[-lines:])


def _tcp_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _run(argv: Sequence[str], *, what: str, timeout: float = 60.0, **kwargs: object) -> str:
    """Run a short command; raise ServiceError with its output if it fails."""
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"{what}: timed out after {timeout}s: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        raise ServiceError(
            f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{proc.stdout}"
        )
    out: str = proc.stdout
    return out


def _require_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ServiceError(f"system user {user!r} does not exist; {INSTALL_HINT}") from None


def _child_pids(parent: int) -> list[int]:
    """PIDs whose parent is ``parent`` (from /proc)."""
    children = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            children.append(int(entry.name))
    return children


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _ensure_traversable(path: Path, stop_at: Path) -> None:
    """Make ``path`` and its parents up to ``stop_at`` 0755-ish; check the rest.

    System users (postgres, mysql, nginx's nobody) must be able to reach their directory.
    Directories above ``stop_at`` are only checked, never changed.
    """
    path = path.resolve()
    stop_at = stop_at.resolve()
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if directory == stop_at or stop_at in directory.parents:
            if mode & 0o005 != 0o005:
                directory.chmod(stat.S_IMODE(mode) | 0o755)
        elif not mode & 0o001:
            raise ServiceError(
                f"{directory} is not traversable by other users (mode {oct(mode)}); "
                f"put the service base dir somewhere like /tmp"
            )


# --------------------------------------------------------------------------- base class


class Service:
    """A service made of one or more processes, each recorded in ``<base>/pids/``."""

    #: the default name, and so the subdirectory and the pid file name
    default_name = "service"

    def __init__(
        self,
        base_dir: Path | str,
        name: str | None = None,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.name = name or self.default_name
        self.dir = self.base_dir / self.name
        self.pid_dir = self.base_dir / "pids"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        #: label -> pid, in start order; the main process is labelled with ``self.name``
        self.pids: dict[str, int] = {}
        #: seconds the last start() took
        self.start_seconds: float | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started = False

    # -- public API

    @property
    def pid(self) -> int | None:
        """PID of the main process, while it is recorded."""
        return self.pids.get(self.name)

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    def start(self: _S) -> _S:
        """Start and wait until ready; on any failure stop whatever was started, then raise."""
        if self._started:
            return self
        started = time.monotonic()
        self._started = True
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            # the start failure is the interesting error, not a failure to clean up
            with contextlib.suppress(Exception):
                self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop every process of the service (idempotent)."""
        errors: list[str] = []
        try:
            self._before_stop()
        except Exception as exc:
            errors.append(f"{self.name}: graceful stop failed: {exc}")
        for label in reversed(list(self.pids)):
            pid = self.pids[label]
            if not self._terminate(label, pid):
                errors.append(f"{label}: pid {pid} survived SIGKILL")
            self._pid_file(label).unlink(missing_ok=True)
            del self.pids[label]
        self._procs.clear()
        self._started = False
        if errors:
            raise ServiceError("; ".join(errors))

    def all_pids(self) -> list[int]:
        return list(self.pids.values())

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for subclasses

    def _start(self) -> None:
        raise NotImplementedError

    def _before_stop(self) -> None:
        """Hook for a graceful stop before the signals (e.g. ``pg_ctl stop``)."""

    def _pid_file(self, label: str) -> Path:
        return self.pid_dir / f"{label}.pid"

    def _record_pid(self, label: str, pid: int) -> None:
        self.pids[label] = pid
        self._pid_file(label).write_text(f"{pid}\n")

    def _spawn(
        self,
        label: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a foreground process in its own session, output appended to ``log_path``.

        With ``user`` the process runs as that system user (uid, gid, no extra groups).
        It stays a direct child either way, so stopping it also reaps it.
        """
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        uid = gid = None
        extra_groups: list[int] | None = None
        if user is not None:
            entry = pwd.getpwnam(user)
            uid, gid, extra_groups = entry.pw_uid, entry.pw_gid, []
            full_env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=str(cwd or self.dir),
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=extra_groups,
            )
        self._procs[label] = proc
        self._record_pid(label, proc.pid)
        return proc

    def _wait_until(
        self,
        ready: Callable[[], bool],
        what: str,
        log_path: Path,
        *,
        label: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Poll ``ready`` until true; fail early if process ``label`` exits."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.start_timeout)
        delay = 0.01
        proc = self._procs.get(label) if label else None
        last_error = ""
        while True:
            try:
                if ready():
                    return
            except Exception as exc:  # keep polling, report the last one
                last_error = f" (last error: {exc!r})"
            if proc is not None and proc.poll() is not None:
                raise ServiceError(
                    f"{self.name}: {label} exited with {proc.returncode} before {what}"
                    f"{last_error}\n--- last lines of {log_path} ---\n{tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name}: {what} not reached within "
                    f"{timeout if timeout is not None else self.start_timeout}s{last_error}"
                    f"\n--- last lines of {log_path} ---\n{tail(log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _terminate(self, label: str, pid: int) -> bool:
        """SIGTERM ``pid``, wait ``stop_timeout``, then SIGKILL it (and its process group)."""
        proc = self._procs.get(label)

        def gone() -> bool:
            if proc is not None:
                return proc.poll() is not None
            return not pid_alive(pid)

        if gone():
            return True
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        if self._wait_gone(gone, self.stop_timeout):
            return True
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass
        return self._wait_gone(gone, 5.0)

    @staticmethod
    def _wait_gone(gone: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not gone():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


_S = TypeVar("_S", bound=Service)


# --------------------------------------------------------------------------- Redis


class RedisServer(Service):
    """redis-server with its own config on a free loopback port."""

    default_name = "redis"

    def __init__(
        self, base_dir: Path | str, name: str | None = None, *, port: int | None = None,
        start_timeout: float = 30.0, stop_timeout: float = 10.0,
    ) -> None:  # fmt: skip
        super().__init__(base_dir, name, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.host = "127.0.0.1"
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _start(self) -> None:
        binary = find_binary("redis-server")
        conf = self.dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    f"bind {self.host}",
                    f"port {self.port}",
                    "protected-mode yes",
                    "daemonize no",
                    f"dir {self.dir}",
                    f"pidfile {self.dir / 'redis.pid'}",
                    f"logfile {self.log_path}",
                    'save ""',
                    "appendonly no",
                    "",
                ]
            )
        )
        self._spawn(self.name, [binary, str(conf)], self.dir / "stdout.log")
        self._wait_until(self.ping, "PONG", self.log_path, label=self.name)

    def ping(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_bin_dir() -> Path:
    preferred = Path("/usr/lib/postgresql/15/bin")
    if (preferred / "initdb").exists():
        return preferred
    candidates = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        try:
            candidates.append((int(bindir.parent.name), bindir))
        except ValueError:
            continue
    candidates = [c for c in candidates if (c[1] / "initdb").exists()]
    if not candidates:
        raise ServiceError(f"no PostgreSQL server under /usr/lib/postgresql; {INSTALL_HINT}")
    return max(candidates)[1]


def _libpq_quote(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PostgresServer(Service):
    """A throw-away PostgreSQL cluster run as the postgres user (fsync off)."""

    default_name = "postgres"
    os_user = "postgres"

    def __init__(
        self, base_dir: Path | str, name: str | None = None, *, port: int | None = None,
        admin_password: str | None = None, start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
    ) -> None:  # fmt: skip
        super().__init__(base_dir, name, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.host = "127.0.0.1"
        #: 172.17.0.1 when docker0 existed at construction time (containers reach it there)
        self.bridge_host = docker_bridge_ip()
        extra = [self.bridge_host] if self.bridge_host else []
        self.port = port or free_port(also_bind=extra)
        self.admin_user = "postgres"
        self.admin_password = admin_password or secrets.token_hex(16)
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "run"
        self.bin_dir: Path | None = None

    @property
    def listen_addresses(self) -> list[str]:
        return [self.host, *([self.bridge_host] if self.bridge_host else [])]

    def dsn(
        self,
        dbname: str = "postgres",
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
    ) -> str:
        """A libpq key/value DSN over TCP with password auth (admin user by default)."""
        user = user or self.admin_user
        if password is None and user == self.admin_user:
            password = self.admin_password
        parts = {"host": host or self.host, "port": str(self.port), "user": user}
        if password is not None:
            parts["password"] = password
        parts["dbname"] = dbname
        return " ".join(f"{k}={_libpq_quote(v)}" for k, v in parts.items())

    def _as_postgres(self, *argv: str) -> list[str]:
        return [find_binary("runuser"), "-u", self.os_user, "--", *argv]

    def _start(self) -> None:
        self.bin_dir = bindir = _postgres_bin_dir()
        _require_user(self.os_user)
        _ensure_traversable(self.dir, self.base_dir)
        self.socket_dir.mkdir(exist_ok=True)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.admin_password + "\n")
        _chown_tree(self.dir, self.os_user)
        try:
            _run(
                self._as_postgres(
                    str(bindir / "initdb"), "-D", str(self.data_dir), "-U", self.admin_user,
                    f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
                ),
                what="initdb",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data_dir / "pg_hba.conf", "a") as hba:
            hba.write(
                # Containers (any Docker network, 172.16.0.0/12) may log in as site users,
                # never as the administrator.
                f"host all {self.admin_user} 172.16.0.0/12 reject\n"
                "host all all 172.16.0.0/12 scram-sha-256\n"
            )
        # postgres runs as a direct child (not daemonized by pg_ctl start), so that
        # stop() reaps it and no zombie is left for init to collect
        self._spawn(
            self.name,
            [
                str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-k", str(self.socket_dir),
                "-c", f"listen_addresses={','.join(self.listen_addresses)}",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ],
            self.log_path,
            cwd=self.data_dir,
            user=self.os_user,
        )  # fmt: skip
        self._wait_until(self._ready, "ready to accept connections", self.log_path, label=self.name)

    def _ready(self) -> bool:
        # postmaster.pid line 8 is the postmaster status ("ready" once it accepts connections)
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        if len(lines) < 8 or lines[0].strip() != str(self.pid) or lines[7].strip() != "ready":
            return False
        return _tcp_ready(self.host, self.port)

    def _before_stop(self) -> None:
        if self.pid is None or self.bin_dir is None or not pid_alive(self.pid):
            return
        _run(
            self._as_postgres(
                str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                "-t", str(int(self.stop_timeout)), "stop",
            ),
            what="pg_ctl stop",
            timeout=self.stop_timeout + 10,
        )  # fmt: skip


# --------------------------------------------------------------------------- MariaDB


class MariaDBServer(Service):
    """mariadbd with --no-defaults and its own datadir/socket/pid file."""

    default_name = "mariadb"
    os_user = "mysql"

    def __init__(
        self, base_dir: Path | str, name: str | None = None, *, port: int | None = None,
        admin_user: str = "admin", admin_password: str | None = None,
        start_timeout: float = 60.0, stop_timeout: float = 20.0,
    ) -> None:  # fmt: skip
        super().__init__(base_dir, name, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.host = "127.0.0.1"
        self.bridge_host = docker_bridge_ip()
        extra = [self.bridge_host] if self.bridge_host else []
        self.port = port or free_port(also_bind=extra)
        self.admin_user = admin_user
        self.admin_password = admin_password or secrets.token_hex(16)
        self.data_dir = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"

    @property
    def bind_addresses(self) -> list[str]:
        return [self.host, *([self.bridge_host] if self.bridge_host else [])]

    def client_argv(self, *args: str) -> list[str]:
        """``mariadb`` CLI connected as root over the unix socket."""
        return [
            find_binary("mariadb"), "--no-defaults", f"--socket={self.socket}", "-u", "root",
            *args,
        ]  # fmt: skip

    def _start(self) -> None:
        install_db = find_binary("mariadb-install-db")
        mariadbd = find_binary("mariadbd")
        find_binary("mariadb")
        _require_user(self.os_user)
        _ensure_traversable(self.dir, self.base_dir)
        (self.dir / "tmp").mkdir(exist_ok=True)
        _chown_tree(self.dir, self.os_user)
        _run(
            [
                install_db, "--no-defaults", f"--datadir={self.data_dir}", f"--user={self.os_user}",
                "--auth-root-authentication-method=socket", "--skip-test-db",
            ],
            what="mariadb-install-db",
            cwd=str(self.dir),
        )  # fmt: skip
        self._spawn(
            self.name,
            [
                mariadbd, "--no-defaults", f"--datadir={self.data_dir}", f"--user={self.os_user}",
                f"--socket={self.socket}", f"--pid-file={self.dir / 'mysqld.pid'}",
                f"--port={self.port}", f"--bind-address={','.join(self.bind_addresses)}",
                f"--log-error={self.log_path}", f"--tmpdir={self.dir / 'tmp'}",
                "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M", "--max-connections=200",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
            ],
            self.dir / "stdout.log",
        )  # fmt: skip

        def ready() -> bool:
            if not self.socket.exists() or not _tcp_ready(self.host, self.port):
                return False
            _run(self.client_argv("-e", "SELECT 1"), what="mariadb ping", timeout=10)
            return True

        self._wait_until(ready, "accepting connections", self.log_path, label=self.name)
        password = self.admin_password.replace("\\", "\\\\").replace("'", "\\'")
        user = self.admin_user.replace("'", "")
        _run(
            self.client_argv(
                "-e",
                # The administrator may log in from this host only, never from a container.
                f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1' WITH GRANT OPTION; "
                "FLUSH PRIVILEGES;",
            ),
            what="create MariaDB admin user",
        )


# --------------------------------------------------------------------------- Pebble


def _write_ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """Write ca.pem, localhost.pem and localhost-key.pem; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)
    not_after = now + datetime.timedelta(days=3650)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Director test pebble CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_path = directory / "ca.pem"
    cert_path = directory / "localhost.pem"
    key_path = directory / "localhost-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class PebbleServer(Service):
    """Pebble (ACME test CA) doing real HTTP-01 validation against ``http_port``.

    ``pebble-challtestsrv`` is its DNS server and answers 127.0.0.1 for every name, so an
    HTTP-01 challenge for any domain is fetched from ``http://127.0.0.1:<http_port>``.
    """

    default_name = "pebble"

    def __init__(
        self, base_dir: Path | str, name: str | None = None, *, http_port: int | None = None,
        tls_port: int | None = None, env: Mapping[str, str] | None = None,
        start_timeout: float = 30.0, stop_timeout: float = 10.0,
    ) -> None:  # fmt: skip
        super().__init__(base_dir, name, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.management_port = free_port()
        self.http_port = http_port or free_port()
        self.tls_port = tls_port or free_port()
        self.dns_port = free_port(udp=True)
        self.challtestsrv_management_port = free_port()
        self.extra_env = dict(env or {})
        self.ca_cert_path = self.dir / "ca.pem"
        self.config_path = self.dir / "pebble-config.json"

    @property
    def directory_url(self) -> str:
        return f"https://{self.host}:{self.port}/dir"

    @property
    def management_url(self) -> str:
        """Pebble's management API (``/roots/0`` is the issuing root, new every start)."""
        return f"https://{self.host}:{self.management_port}"

    @property
    def challtestsrv_management_url(self) -> str:
        """pebble-challtestsrv's management API (``/add-a``, ``/set-default-ipv4``...)."""
        return f"http://{self.host}:{self.challtestsrv_management_port}"

    @property
    def dns_server(self) -> str:
        return f"{self.host}:{self.dns_port}"

    @property
    def challtestsrv_label(self) -> str:
        return f"{self.name}-challtestsrv"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting ``ca_cert_path`` (pebble's listener certificate)."""
        return ssl.create_default_context(cafile=str(self.ca_cert_path))

    def get(self, url: str) -> bytes:
        """GET an https URL of pebble's, trusting ``ca_cert_path``."""
        if not url.startswith("https://"):
            raise ValueError(f"not an https URL: {url}")
        context = self.ssl_context()
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            data: bytes = resp.read()
        return data

    def get_json(self, url: str) -> object:
        return json.loads(self.get(url))

    def issuing_root_pem(self) -> str:
        """PEM of the root that signs issued certificates (regenerated on every start)."""
        return self.get(f"{self.management_url}/roots/0").decode()

    def _start(self) -> None:
        pebble = find_binary("pebble")
        challtestsrv = find_binary("pebble-challtestsrv")
        _ca, cert, key = _write_ca_and_cert(self.dir)
        self.config_path.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"{self.host}:{self.port}",
                        "managementListenAddress": f"{self.host}:{self.management_port}",
                        "certificate": str(cert),
                        "privateKey": str(key),
                        "httpPort": self.http_port,
                        "tlsPort": self.tls_port,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                },
                indent=2,
            )
        )
        ctlog = self.dir / "challtestsrv.log"
        self._spawn(
            self.challtestsrv_label,
            [
                challtestsrv, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                "-dns01", self.dns_server, "-http01", "", "-https01", "", "-tlsalpn01", "",
                "-management", f"{self.host}:{self.challtestsrv_management_port}",
            ],
            ctlog,
        )  # fmt: skip
        self._wait_until(
            lambda: (
                _tcp_ready(self.host, self.challtestsrv_management_port)
                and _tcp_ready(self.host, self.dns_port)
            ),
            "challtestsrv listening",
            ctlog,
            label=self.challtestsrv_label,
        )
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", **self.extra_env}
        self._spawn(
            self.name,
            [pebble, "-config", str(self.config_path), "-dnsserver", self.dns_server],
            self.log_path,
            env=env,
        )

        def ready() -> bool:
            directory = self.get_json(self.directory_url)
            return isinstance(directory, dict) and "newOrder" in directory

        self._wait_until(ready, "ACME directory served", self.log_path, label=self.name)


# --------------------------------------------------------------------------- nginx

#: Placeholders replaced in nginx configuration text: @PREFIX@ (the service dir),
#: @PORT@ (``NginxServer.port``), @ROOT@ (the static root), @MAIN@ (main-context
#: directives: daemon off, pid, error_log) and @HTTP@ (http-context temp paths, access log).
DEFAULT_NGINX_CONF = """\
@MAIN@
worker_processes 1;
events { worker_connections 256; }
http {
    @HTTP@
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:@PORT@ default_server;
        server_name _;
        root @ROOT@;
        location / { try_files $uri $uri/ =404; }
    }
    include @PREFIX@/conf.d/*.conf;
}
"""


class NginxServer(Service):
    """nginx in the foreground with its own prefix, pid file and temp paths.

    ``conf_text`` is an nginx.conf with the placeholders documented at DEFAULT_NGINX_CONF;
    without it a minimal config serves ``root_dir`` on ``port``. Extra server blocks can be
    dropped into ``conf_d`` (included by the default config).
    """

    default_name = "nginx"

    def __init__(
        self, base_dir: Path | str, name: str | None = None, *, conf_text: str | None = None,
        port: int | None = None, start_timeout: float = 15.0, stop_timeout: float = 10.0,
    ) -> None:  # fmt: skip
        super().__init__(base_dir, name, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.conf_text = conf_text if conf_text is not None else DEFAULT_NGINX_CONF
        self.conf_path = self.dir / "nginx.conf"
        self.error_log = self.dir / "logs" / "error.log"
        self.pid_path = self.dir / "nginx.pid"
        self.root_dir = self.dir / "www"
        self.conf_d = self.dir / "conf.d"
        self.temp_dir = self.dir / "tmp"

    @property
    def log_path(self) -> Path:
        return self.error_log

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def main_directives(self) -> str:
        return f"daemon off;\npid {self.pid_path};\nerror_log {self.error_log} warn;\n"

    def http_directives(self) -> str:
        t = self.temp_dir
        return " ".join(
            [
                f"client_body_temp_path {t}/client_body;",
                f"proxy_temp_path {t}/proxy;",
                f"fastcgi_temp_path {t}/fastcgi;",
                f"uwsgi_temp_path {t}/uwsgi;",
                f"scgi_temp_path {t}/scgi;",
                f"access_log {self.dir}/logs/access.log;",
            ]
        )

    def render(self, conf_text: str) -> str:
        replacements = {
            "@MAIN@": self.main_directives(),
            "@HTTP@": self.http_directives(),
            "@PREFIX@": str(self.dir),
            "@ROOT@": str(self.root_dir),
            "@PORT@": str(self.port),
        }
        for key, value in replacements.items():
            conf_text = conf_text.replace(key, value)
        return conf_text

    def write_config(self, conf_text: str | None = None) -> None:
        """(Re)write nginx.conf from ``conf_text`` (default: the current text)."""
        if conf_text is not None:
            self.conf_text = conf_text
        self.conf_path.write_text(self.render(self.conf_text))

    def _nginx_argv(self, *args: str) -> list[str]:
        return [
            find_binary("nginx"), "-p", str(self.dir), "-c", str(self.conf_path),
            "-e", str(self.error_log), *args,
        ]  # fmt: skip

    def test_config(self) -> tuple[bool, str]:
        """Run ``nginx -t``; return (ok, output)."""
        proc = subprocess.run(
            self._nginx_argv("-t"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )
        return proc.returncode == 0, proc.stdout

    def worker_pids(self) -> set[int]:
        """PIDs of the master's live children (workers, and cache helpers if any)."""
        return {pid for pid in _child_pids(self.pid) if pid_alive(pid)} if self.pid else set()

    def reload(self, *, wait: bool = True, timeout: float = 15.0) -> None:
        """``nginx -t`` then ``nginx -s reload``; NginxConfigError if the test fails.

        nginx reloads asynchronously: old workers keep accepting connections for a
        moment. With ``wait`` this returns only once every old worker has exited, so the
        next request is answered by the new configuration. An old worker held up by a
        long-lived connection makes this raise ServiceError after ``timeout``.
        """
        ok, output = self.test_config()
        if not ok:
            raise NginxConfigError(f"nginx -t rejected {self.conf_path}:\n{output}")
        old_workers = self.worker_pids()
        _run(self._nginx_argv("-s", "reload"), what="nginx -s reload")
        if not wait:
            return

        def reloaded() -> bool:
            current = self.worker_pids()
            return bool(current - old_workers) and not current & old_workers

        self._wait_until(
            reloaded,
            "old workers replaced after reload",
            self.error_log,
            label=self.name,
            timeout=timeout,
        )

    def _start(self) -> None:
        find_binary("nginx")
        for sub in ("logs", "tmp", "www", "conf.d"):
            (self.dir / sub).mkdir(exist_ok=True)
        _ensure_traversable(self.root_dir, self.base_dir)
        self.write_config()
        ok, output = self.test_config()
        if not ok:
            raise NginxConfigError(f"nginx -t rejected {self.conf_path}:\n{output}")
        self._spawn(self.name, self._nginx_argv(), self.dir / "stdout.log")

        def ready() -> bool:
            # nginx writes its pid file only after it has bound every listen socket
            try:
                if int(self.pid_path.read_text().strip() or 0) != self.pid:
                    return False
            except FileNotFoundError:
                return False
            return "@PORT@" not in self.conf_text or _tcp_ready(self.host, self.port)

        self._wait_until(ready, "pid file written and port open", self.error_log, label=self.name)


# --------------------------------------------------------------------------- docker


@dataclass(frozen=True)
class DockerSwarm:
    server_version: str
    node_id: str
    node_state: str
    bridge_ip: str | None


def check_docker_swarm() -> DockerSwarm:
    """Facts about the local dockerd; ServiceError unless it is up with an active swarm."""
    hint = "start it with `make test` or `bash scripts/start-docker.sh` (as root)"
    try:
        docker = find_binary("docker")
    except ServiceError as exc:
        raise ServiceError(f"{exc}; then {hint}") from None
    try:
        out = _run(
            [
                docker, "info", "--format",
                "{{.ServerVersion}}|{{.Swarm.NodeID}}|{{.Swarm.LocalNodeState}}",
            ],
            what="docker info",
            timeout=30,
        )  # fmt: skip
    except ServiceError as exc:
        raise ServiceError(f"dockerd is not reachable: {exc}\n{hint}") from None
    fields = (out.strip().splitlines() or [""])[-1].split("|")
    if len(fields) != 3:
        raise ServiceError(f"unexpected `docker info` output: {out!r}")
    version, node_id, state = fields
    if state != "active":
        raise ServiceError(f"docker swarm is not active (state {state!r}); {hint}")
    return DockerSwarm(version, node_id, state, docker_bridge_ip())


# --------------------------------------------------------------------------- Services


class Services:
    """Starts services under one base dir and stops all of them, even after a failed start."""

    def __init__(self, base_dir: Path | str) -> None:
        self.base_dir = Path(base_dir)
        self.started: list[Service] = []

    def start(self, service: _S) -> _S:
        """Start ``service`` (registered first, so stop_all covers a half-started one)."""
        if service not in self.started:
            self.started.append(service)
        return service.start()

    def redis(self, **kwargs: object) -> RedisServer:
        return self.start(RedisServer(self.base_dir, **kwargs))  # type: ignore[arg-type]

    def postgres(self, **kwargs: object) -> PostgresServer:
        return self.start(PostgresServer(self.base_dir, **kwargs))  # type: ignore[arg-type]

    def mariadb(self, **kwargs: object) -> MariaDBServer:
        return self.start(MariaDBServer(self.base_dir, **kwargs))  # type: ignore[arg-type]

    def pebble(self, **kwargs: object) -> PebbleServer:
        return self.start(PebbleServer(self.base_dir, **kwargs))  # type: ignore[arg-type]

    def nginx(self, **kwargs: object) -> NginxServer:
        return self.start(NginxServer(self.base_dir, **kwargs))  # type: ignore[arg-type]

    def stop(self, service: Service) -> None:
        try:
            service.stop()
        finally:
            if service in self.started:
                self.started.remove(service)

    def stop_all(self) -> None:
        """Stop in reverse start order; raise one ServiceError listing all failures."""
        errors: list[str] = []
        while self.started:
            service = self.started.pop()
            try:
                service.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{service.name}: {exc}")
        if errors:
            raise ServiceError("failed to stop: " + "; ".join(errors))

    def __enter__(self) -> Services:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
