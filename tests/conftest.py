"""Shared test set-up: every test runs in its own temporary working directory."""

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trial's mktemp() writes under the working directory: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)
