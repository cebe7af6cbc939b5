"""
Run a command with a throw-away PostgreSQL server: ``python tests/with_postgres.py CMD...``.

The server (the integration tests' L{services.PostgresServer}: fsync off, a free loopback
port, run as the postgres user, so as root; its time zone far from UTC) lives in a temporary
directory for as long as CMD runs; CMD sees its admin URL in C{DIRECTOR_TEST_DATABASE_URL}, so
the manager's tests give each test a database of its own on it
(L{director.testing.manager_database}). The exit status is CMD's; the server is stopped (by
PID) whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

from services import PostgresServer, ServiceError, Services

from director.testing.manager_database import ENVIRONMENT_VARIABLE

#: The server's time zone: a session that keeps it (not UTC) shows every timestamp that
#: depends on the server's zone.
TIME_ZONE = "Pacific/Auckland"


def _far_from_utc(server: PostgresServer) -> None:
    import psycopg

    with psycopg.connect(server.dsn(), autocommit=True, connect_timeout=10) as admin:
        admin.execute(f"ALTER SYSTEM SET timezone = '{TIME_ZONE}'")
        admin.execute("SELECT pg_reload_conf()")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="director-pg-", dir="/tmp"))
    base.chmod(0o755)
    started = time.monotonic()
    try:
        with Services(base) as services:
            try:
                server = services.start(PostgresServer(base, name="postgres-suite"))
            except ServiceError as exc:
                print(f"could not start PostgreSQL: {exc}", file=sys.stderr)
                return 1
            _far_from_utc(server)
            url = (
                f"postgresql+psycopg://{server.admin_user}:{server.admin_password}"
                f"@{server.host}:{server.port}/postgres"
            )
            print(
                f"PostgreSQL {server.host}:{server.port} up in {time.monotonic() - started:.1f} s",
                flush=True,
            )
            env = {**os.environ, ENVIRONMENT_VARIABLE: url}
            code = subprocess.call(argv, env=env)
            print(f"on PostgreSQL: {' '.join(argv)}: exit {code}, "
                  f"{time.monotonic() - started:.1f} s in all", flush=True)  # fmt: skip
            return code
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
