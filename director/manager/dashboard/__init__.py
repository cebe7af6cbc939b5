"""The web dashboard: pages, the user guide, and metrics for operators."""

from __future__ import annotations

from pathlib import Path

from director.manager.dashboard.pages import Dashboard

# docs/guide/ beside the package (the repository's user guide).
GUIDE_DIR = Path(__file__).resolve().parents[3] / "docs" / "guide"

__all__ = ["GUIDE_DIR", "Dashboard"]
