"""
Site databases for a cluster: one PostgreSQL on the host, listening on 127.0.0.1 and on the
host's hub address 10.77.<octet>.254, where the nodes' orchestrators log in as its
administrator (they create the sites' databases) and site containers on every node reach it
(their traffic leaves the node masqueraded as the node's address, the same address the
orchestrator's has: so the hub network may log in as any user, with a password; the
administrator's is random). Registered with C{director database-host add}.

The nodes' orchestrators run no bundled servers (those are one machine's); this is the same
server set-up (L{director.orchestrator.bundled_databases}: data directory, access rules,
the system user), run as a process of the cluster, recorded in its state file.
"""

from __future__ import annotations

import os
import signal
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
