"""Session fixtures that run real services for the integration tests.

Services start lazily (on first use) and stop at the end of the session. A missing binary
or a service that does not come up is a test *error*, never a skip.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from services import (
    DockerSwarm,
    MariaDBServer,
    PebbleServer,
    PostgresServer,
    RedisServer,
    Service,
    ServiceError,
    Services,
    check_docker_swarm,
)
from sites_network import firewall_installed, remove_firewall

from director.common.config import OrchestratorSection
from director.manager.store import make_engine
from director.testing.manager_database import Schema

_S = TypeVar("_S", bound=Service)

#: service name -> seconds its start() took, shown in the terminal summary
START_TIMES: dict[str, float] = {}


def start_service(services: Services, service: _S) -> _S:
    """Start ``service`` via ``services``; turn a ServiceError into a test failure."""
    try:
        started = services.start(service)
    except ServiceError as exc:
        pytest.fail(f"could not start {service.name}: {exc}", pytrace=False)
    if started.start_seconds is not None:
        START_TIMES[started.name] = started.start_seconds
    return started


@pytest.fixture(scope="session")
def service_dir() -> Iterator[Path]:
    """A temporary directory under /tmp (traversable by postgres/mysql/nobody)."""
    path = Path(tempfile.mkdtemp(prefix="director-it-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def services(service_dir: Path) -> Iterator[Services]:
    """Owner of every session service; stops whatever is still running at the end."""
    with Services(service_dir) as svc:
        yield svc


@pytest.fixture(scope="session")
def redis_server(services: Services) -> Iterator[RedisServer]:
    server = start_service(services, RedisServer(services.base_dir))
    yield server
    services.stop(server)


@pytest.fixture(scope="session")
def postgres_server(services: Services) -> Iterator[PostgresServer]:
    server = start_service(services, PostgresServer(services.base_dir))
    yield server
    services.stop(server)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """
    A new, empty database on the session's PostgreSQL server for one test, dropped after it
    (connections still open included): its SQLAlchemy URL.
    """
    name = f"director_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            f"postgresql+psycopg://{postgres_server.admin_user}:{postgres_server.admin_password}"
            f"@{postgres_server.host}:{postgres_server.port}/{name}"
        )
    finally:
        with psycopg.connect(postgres_server.dsn(), autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_schema(postgres_database: str) -> Iterator[Schema]:
    """
    The manager's store on L{postgres_database}, not migrated yet (C{upgrade()}, or to a
    revision): its engine disposed before the database is dropped.
    """
    schema = Schema(make_engine(postgres_database))
    try:
        yield schema
    finally:
        schema.engine.dispose()


@pytest.fixture(scope="session")
def mariadb_server(services: Services) -> Iterator[MariaDBServer]:
    server = start_service(services, MariaDBServer(services.base_dir))
    yield server
    services.stop(server)


@pytest.fixture(scope="session")
def pebble_server(services: Services) -> Iterator[PebbleServer]:
    server = start_service(services, PebbleServer(services.base_dir))
    yield server
    services.stop(server)


@pytest.fixture(scope="session")
def docker_swarm() -> Iterator[DockerSwarm]:
    """
    dockerd reachable and swarm active, or the test fails (it never skips). Orchestrators
    started on the default sites network install its firewall; at the end of the session
    it is removed again unless it was there before (`make run`'s).
    """
    try:
        swarm = check_docker_swarm()
    except ServiceError as exc:
        pytest.fail(
            f"{exc}\nThe integration tests need dockerd with an active swarm: run `make test`, "
            "or `bash scripts/start-docker.sh` as root first.",
            pytrace=False,
        )
    default_subnet = OrchestratorSection().sites_subnet
    had_firewall = firewall_installed(default_subnet)
    yield swarm
    if not had_firewall:
        remove_firewall(default_subnet)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if START_TIMES:
        terminalreporter.write_sep("-", "integration service start times")
        for name, seconds in START_TIMES.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f} s")


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """
    A temporary directory every user can traverse (mode 0755 up to /tmp): the daemon's nginx
    workers run as nobody and must reach site files under it, which pytest's own tmp_path
    (under a 0700 directory) does not allow.
    """
    path = Path(tempfile.mkdtemp(prefix="director-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
