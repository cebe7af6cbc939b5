"""
The orchestrator's HTTP API and websocket routes (behind the component guard).

The routes are in layers that share one Klein app (L{director.orchestrator.web_base}):
L{SiteRoutes} (health, sites, websockets, images), L{DatabaseRoutes} (databases, backups) and
L{FileRoutes} (files, archives, disk use); L{OrchestratorAPI} is all of them.
"""

from __future__ import annotations

from director.orchestrator.web_base import BadRequest, OrchestratorAPIBase, app
from director.orchestrator.web_databases import DatabaseRoutes
from director.orchestrator.web_files import DIRECTORY_BYTES, FileRoutes
from director.orchestrator.web_sites import SiteRoutes

__all__ = [
    "DIRECTORY_BYTES",
    "BadRequest",
    "DatabaseRoutes",
    "FileRoutes",
    "OrchestratorAPI",
    "OrchestratorAPIBase",
    "SiteRoutes",
    "app",
]


class OrchestratorAPI(SiteRoutes, DatabaseRoutes, FileRoutes):
    """Routes for the manager (everything) and the shell server (/ws/shell-server/ only)."""
