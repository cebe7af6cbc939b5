"""
Shared test set-up: every test runs in its own temporary working directory, and gets its
manager database from L{director.testing.manager_database} (SQLite, or PostgreSQL when
C{DIRECTOR_TEST_DATABASE_URL} is set), dropped after it.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from director.testing import manager_database

#: The marker of test modules that use the manager's store: `make unit-postgres` runs them
#: (``-m manager_store``) on PostgreSQL too.
MARKER = "manager_store"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: uses the manager's store (also run on PostgreSQL)"
    )


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trial's mktemp() writes under the working directory: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _manager_databases(request: pytest.FixtureRequest) -> Iterator[None]:
    """
    Drop the test's manager databases after it; fail a test that made one without the
    ``manager_store`` marker, which would leave it out of the PostgreSQL run.
    """
    yield
    used = manager_database.uses()
    manager_database.release_test_databases()
    if used and request.node.get_closest_marker(MARKER) is None:
        pytest.fail(
            f"{request.node.nodeid} uses the manager's store: add "
            f"`pytestmark = pytest.mark.{MARKER}` to its module so it also runs on PostgreSQL",
            pytrace=False,
        )


@pytest.fixture(autouse=True, scope="session")
def _manager_database_template() -> Iterator[None]:
    yield
    manager_database.close()
