"""
Databases for a cluster, on the host: the managers' store and Redis, and the sites'
databases. One PostgreSQL, listening on 127.0.0.1 and on the host's hub address
10.77.<octet>.254, where the nodes' orchestrators log in as its administrator (they create
the sites' databases) and site containers on every node reach it (their traffic leaves the
node masqueraded as the node's address, the same address the orchestrator's has: so the hub
network may log in as any user, with a password; the administrator's is random). Registered
with C{director database-host add}.

The nodes' orchestrators run no bundled servers (those are one machine's); this is the same
server set-up (L{director.orchestrator.bundled_databases}: data directory, access rules,
the system user), run as a process of the cluster, recorded in its state file. The two
managers keep their store in a database of its own on the same server (L{manager_store}: its
own role, not the administrator), and fan their events out through a Redis on 127.0.0.1
(L{start_redis}), as several managers on real machines do.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from director.cluster.layout import Layout
from director.orchestrator.bundled_databases import (
    ADMIN_USERS,
    ServerSettings,
    _initialised,
    _owner,
    _ready,
    ensure_password,
    init_argv,
    postgres_bin_dir,
    prepare,
    server_argv,
)

POSTGRES_START_TIMEOUT = 60.0
REDIS_START_TIMEOUT = 30.0
#: the managers' store: its database and role on the cluster's PostgreSQL
MANAGER_STORE = "director_manager"


def postgres_settings(layout: Layout, directory: Path, port: int) -> ServerSettings:
    return ServerSettings(
        "postgres",
        directory / "postgres",
        port,
        ("127.0.0.1", layout.host_address),
        (layout.hub_network,),
    )


def pg_hba(layout: Layout) -> str:
    """Who may log in: local sockets; the host and the cluster's nodes with a password."""
    return (
        "# Written by director.cluster at every start; changes here are lost.\n"
        "local all all trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        f"host all all {layout.hub_network} scram-sha-256\n"
    )


def _as_owner(argv: list[str], settings: ServerSettings, log: Path, wait: bool) -> int:
    owner = _owner(settings.kind)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    if owner is not None:
        env.update(HOME=owner.pw_dir, USER=owner.pw_name, LOGNAME=owner.pw_name)
    with open(log, "ab") as out:
        if owner is not None:
            os.fchown(out.fileno(), owner.pw_uid, owner.pw_gid)
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(settings.directory),
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            start_new_session=True,
        )
    if wait:
        return process.wait(120)
    return process.pid


def start_postgres(layout: Layout, directory: Path, port: int, secrets: Path) -> ServerSettings:
    """Set up (once) and start the sites' PostgreSQL; wait until it is ready."""
    from director.cluster.processes import ClusterError, State, _connects

    if _connects("127.0.0.1", port):
        raise ClusterError(
            f"port {port} on 127.0.0.1 is taken (another PostgreSQL?): the sites' server "
            "of the cluster needs it"
        )
    settings = postgres_settings(layout, directory, port)
    password = ensure_password(secrets, "postgres")
    _listen, needs_init = prepare(settings, password)
    # The nodes' orchestrators log in as administrator (creating sites' databases) from the
    # nodes' addresses, which are also what site containers leave their node as: the hub
    # network may log in as anyone, with a password (the administrator's is random).
    (settings.directory / "pg_hba.conf").write_text(pg_hba(layout))
    bindir = postgres_bin_dir()
    if needs_init:
        code = _as_owner(init_argv(settings, bindir), settings, settings.log_file, wait=True)
        if code != 0:
            raise ClusterError(f"initdb failed ({code}); see {settings.log_file}")
        _initialised(settings)
    pid = _as_owner(server_argv(settings, bindir), settings, settings.log_file, wait=False)
    State.load(layout.state_file).process("host-postgres", pid, str(settings.data_dir))
    deadline = time.monotonic() + POSTGRES_START_TIMEOUT
    while not (_ready(settings, pid) and _connects(layout.host_address, port)):
        if time.monotonic() > deadline:
            raise ClusterError(f"the sites' PostgreSQL did not start; see {settings.log_file}")
        time.sleep(0.2)
    return settings


def stop_postgres(layout: Layout) -> None:
    from director.cluster.processes import State, end_process

    state = State.load(layout.state_file)
    entry = state.data["processes"].get("host-postgres")
    if entry is not None:
        # SIGINT: PostgreSQL's fast shutdown
        end_process(int(entry["pid"]), entry["marker"], 30, signal.SIGINT)
        state.forget("host-postgres")


def admin_user() -> str:
    return ADMIN_USERS["postgres"]


def manager_store(port: int, secrets: Path) -> str:
    """
    The managers' database and its owner (a role of its own, its password in C{secrets}),
    made once on the running server: the SQLAlchemy URL both managers use.
    """
    import psycopg
    from psycopg import sql

    admin = ensure_password(secrets, "postgres")
    password = ensure_password(secrets, "manager-store")
    dsn = f"host=127.0.0.1 port={port} dbname=postgres user={admin_user()} connect_timeout=10"
    with psycopg.connect(dsn, password=admin, autocommit=True) as conn:
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MANAGER_STORE,))
        if role.fetchone() is None:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(MANAGER_STORE), sql.Literal(password)
                )
            )
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (MANAGER_STORE,))
        if found.fetchone() is None:
            name = sql.Identifier(MANAGER_STORE)
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, name))
    # token_urlsafe: nothing in it needs quoting in a URL
    return f"postgresql+psycopg://{MANAGER_STORE}:{password}@127.0.0.1:{port}/{MANAGER_STORE}"


def redis_conf(directory: Path, port: int) -> str:
    """Redis for the managers' events: loopback only, nothing kept on disk."""
    return (
        "# Written by director.cluster at every start.\n"
        # its command line keeps naming this file, so `down` knows its pid runs it
        "set-proc-title no\n"
        f"bind 127.0.0.1\nport {port}\nprotected-mode yes\ndaemonize no\n"
        f'dir {directory}\nsave ""\nappendonly no\n'
    )


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(layout: Layout, directory: Path, port: int) -> str:
    """Start the managers' Redis (recorded as C{host-redis}); its URL once it answers."""
    from director.cluster.processes import ClusterError, State, _connects, _spawn, _wait

    if _connects("127.0.0.1", port):
        raise ClusterError(f"port {port} on 127.0.0.1 is taken: the managers' Redis needs it")
    directory.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server")
    if binary is None:
        raise ClusterError("no redis-server: run `make deps` (scripts/install-deps.sh)")
    conf = directory / "redis.conf"
    conf.write_text(redis_conf(directory, port))
    log = directory / "redis.log"
    pid = _spawn([binary, str(conf)], log)
    State.load(layout.state_file).process("host-redis", pid, str(conf))
    _wait("the managers' Redis", lambda: _redis_answers(port), REDIS_START_TIMEOUT, log)
    return f"redis://127.0.0.1:{port}"


def stop_redis(layout: Layout) -> None:
    from director.cluster.processes import State, end_process

    state = State.load(layout.state_file)
    entry = state.data["processes"].get("host-redis")
    if entry is not None:
        end_process(int(entry["pid"]), entry["marker"], 10)
        state.forget("host-redis")
