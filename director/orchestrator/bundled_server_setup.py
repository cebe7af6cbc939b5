"""
How a bundled database server is laid out and started, without supervising it: its
settings and paths, the administrator's password file, its configuration (C{pg_hba.conf},
MariaDB's first SQL), the command lines that create and run it, and whether it runs (its pid
file, checked against /proc). L{bundled_databases} supervises the servers with these.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from director.common import pidfiles

KINDS = ("postgres", "mysql")
#: the administrator accounts (PostgreSQL's superuser; one made for Director in MariaDB)
ADMIN_USERS = {"postgres": "postgres", "mysql": "director"}
#: the system users the servers run as when Director runs as root
OS_USERS = {"postgres": "postgres", "mysql": "mysql"}
#: any Docker network (site containers come from the sites network, terminals too)
CONTAINER_NETWORKS = ("172.16.0.0/12",)
SETSID = "/usr/bin/setsid"


class BundledDatabaseError(Exception):
    """A bundled server cannot be set up or started; the message says why."""


def password_file(state_dir: Path, kind: str) -> Path:
    return state_dir / "secrets" / f"{kind}-admin-password"


def ensure_password(state_dir: Path, kind: str) -> str:
    """The administrator's password, made (0600) on first use. For `director init`."""
    path = password_file(state_dir, kind)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout)."""
    found = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        if (bindir / "postgres").exists() and (bindir / "initdb").exists():
            try:
                found.append((int(bindir.parent.name), bindir))
            except ValueError:
                continue
    return max(found)[1] if found else None


@dataclass(frozen=True)
class ServerSettings:
    """Where one bundled server lives and listens."""

    kind: str
    directory: Path
    port: int
    listen: tuple[str, ...]
    container_networks: tuple[str, ...] = CONTAINER_NETWORKS

    @property
    def admin_user(self) -> str:
        return ADMIN_USERS[self.kind]

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "run"

    @property
    def pid_file(self) -> Path:
        if self.kind == "postgres":
            return self.data_dir / "postmaster.pid"
        return self.directory / "run" / "mariadbd.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def initialised(self) -> Path:
        """Present once the data directory is complete (written last by the set-up)."""
        return self.directory / "initialised"


def pg_hba(settings: ServerSettings) -> str:
    """Who may log in: local sockets and this host with a password; containers as site users."""
    lines = [
        "# Written by Director at every start; changes here are lost.",
        "local all all trust",  # the socket directory is reachable by its owner only
        "host all all 127.0.0.1/32 scram-sha-256",
        "host all all ::1/128 scram-sha-256",
    ]
    for network in settings.container_networks:
        lines.append(f"host all {settings.admin_user} {network} reject")
        lines.append(f"host all all {network} scram-sha-256")
    return "\n".join(lines) + "\n"


def mysql_init_sql(settings: ServerSettings, password: str) -> str:
    """
    Run by mariadbd at every start (--init-file): the administrator, who may log in from
    this host only (never from a container), with the password from the secrets directory.
    """
    if not all(c.isalnum() or c in "-_" for c in password):
        raise BundledDatabaseError("the MySQL administrator password has unexpected characters")
    user = f"'{settings.admin_user}'@'127.0.0.1'"
    return (
        f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{password}';\n"
        f"ALTER USER {user} IDENTIFIED BY '{password}';\n"
        f"GRANT ALL PRIVILEGES ON *.* TO {user} WITH GRANT OPTION;\n"
    )


def server_argv(settings: ServerSettings, bindir: Path | None = None) -> list[str]:
    """The server's command line (it runs in the foreground; its output goes to the log)."""
    if settings.kind == "postgres":
        if bindir is None:
            raise BundledDatabaseError(
                "no PostgreSQL server installed (apt-get install postgresql)"
            )
        return [
            str(bindir / "postgres"),
            "-D", str(settings.data_dir),
            "-p", str(settings.port),
            "-k", str(settings.socket_dir),
            "-c", f"listen_addresses={','.join(settings.listen)}",
            "-c", f"hba_file={settings.directory / 'pg_hba.conf'}",
            "-c", "max_connections=200",
            "-c", "unix_socket_permissions=0700",
        ]  # fmt: skip
    return [
        _binary("mariadbd"),
        "--no-defaults",
        f"--datadir={settings.data_dir}",
        f"--socket={settings.socket_dir / 'mysqld.sock'}",
        f"--pid-file={settings.pid_file}",
        f"--port={settings.port}",
        f"--bind-address={','.join(settings.listen)}",
        f"--log-error={settings.log_file}",
        f"--tmpdir={settings.directory / 'tmp'}",
        f"--init-file={settings.directory / 'init.sql'}",
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=64M",
        "--max-connections=200",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
    ]


def _binary(name: str) -> str:
    for directory in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found is None:
        raise BundledDatabaseError(f"{name} not found (apt-get install mariadb-server)")
    return found


def running_pid(settings: ServerSettings) -> int | None:
    """The pid of this server if it runs (from its pid file, checked against /proc)."""
    return pidfiles.running_pid(settings.pid_file, str(settings.data_dir))


def _bindable(address: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            probe.bind((address, 0))
        return True
    except OSError:
        return False


def _owner(kind: str) -> pwd.struct_passwd | None:
    """The system user to run as (only when Director runs as root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USERS[kind])
    except KeyError:
        raise BundledDatabaseError(
            f"there is no {OS_USERS[kind]} system user (install the server's Debian package)"
        ) from None


def _chown(paths: list[Path], owner: pwd.struct_passwd | None) -> None:
    """Give what Director wrote to the server's user (the server makes the rest itself)."""
    if owner is None:
        return
    for path in paths:
        if path.exists():
            os.lchown(path, owner.pw_uid, owner.pw_gid)


def prepare(settings: ServerSettings, password: str) -> tuple[list[str], bool]:
    """
    Blocking (run in a pool): make the directories, write the access rules, and say which
    listen addresses exist now (the bridge appears with dockerd) and whether the data
    directory still has to be created.
    """
    owner = _owner(settings.kind)
    for path in (settings.directory, settings.socket_dir, settings.directory / "tmp"):
        path.mkdir(parents=True, exist_ok=True)
    settings.directory.chmod(0o700)
    if settings.kind == "postgres":
        (settings.directory / "pg_hba.conf").write_text(pg_hba(settings))
    else:
        init = settings.directory / "init.sql"
        fd = os.open(init, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(mysql_init_sql(settings, password))
    if not settings.initialised.exists() and settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)  # a set-up that did not finish: start again
    if settings.kind == "postgres" and not settings.initialised.exists():
        pwfile = settings.directory / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
    _chown(
        [
            settings.directory,
            settings.socket_dir,
            settings.directory / "tmp",
            settings.directory / "pg_hba.conf",
            settings.directory / "init.sql",
            settings.directory / "pwfile",
            settings.log_file,
        ],
        owner,
    )
    listen = [a for a in settings.listen if _bindable(a) or a in ("127.0.0.1", "::1")]
    return listen, not settings.initialised.exists()


def init_argv(settings: ServerSettings, bindir: Path | None) -> list[str]:
    """The command that creates the data directory."""
    if settings.kind == "postgres":
        if bindir is None:
            raise BundledDatabaseError(
                "no PostgreSQL server installed (apt-get install postgresql)"
            )
        return [
            str(bindir / "initdb"), "-D", str(settings.data_dir), "-U", settings.admin_user,
            f"--pwfile={settings.directory / 'pwfile'}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
        ]  # fmt: skip
    return [
        _binary("mariadb-install-db"),
        "--no-defaults",
        f"--datadir={settings.data_dir}",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
    ]


def _initialised(settings: ServerSettings) -> None:
    (settings.directory / "pwfile").unlink(missing_ok=True)
    settings.initialised.write_text("")


def _read_password(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise BundledDatabaseError(f"{path}: {e.strerror}; run `director init`") from None


def _ready(settings: ServerSettings, pid: int) -> bool:
    """Blocking, quick: the server answers on 127.0.0.1 and says it is ready."""
    if settings.kind == "postgres":
        try:
            lines = settings.pid_file.read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[0].strip() != str(pid) or lines[7].strip() != "ready":
            return False
    elif not (settings.socket_dir / "mysqld.sock").exists():
        return False
    try:
        socket.create_connection(("127.0.0.1", settings.port), timeout=1).close()
        return True
    except OSError:
        return False


def bundled_settings(config: Any) -> list[ServerSettings]:
    """The bundled servers C{config} asks for (none when C{bundled_databases} is off)."""
    section = config.orchestrator
    if not section.bundled_databases:
        return []
    base = config.director.state_dir / "databases"
    listen = ("127.0.0.1", section.databases_bridge_host)
    networks: tuple[str, ...] = CONTAINER_NETWORKS
    subnet = ipaddress.IPv4Network(section.sites_subnet)
    if not any(subnet.subnet_of(ipaddress.IPv4Network(n)) for n in networks):
        networks = (*networks, str(subnet))  # the sites network lies elsewhere
    return [
        ServerSettings("postgres", base / "postgres", section.postgres_port, listen, networks),
        ServerSettings("mysql", base / "mysql", section.mysql_port, listen, networks),
    ]
