"""
The manager's REST API v1 (JSON), authenticated by `Authorization: Bearer <token>` or the
dashboard session (with a CSRF token on writes). Members act on their sites, admins on all;
a non-member gets 404 for another user's site, and nothing changes.

The routes live in one module per concern, each a mixin of L{ManagerBase} registering on
the one Klein app; L{ManagerAPI} composes them.
"""

from __future__ import annotations

from director.manager.api.accounts import AccountRoutes
from director.manager.api.backups import BackupRoutes
from director.manager.api.base import APIError as APIError
from director.manager.api.base import ManagerBase
from director.manager.api.base import parse_public_key as parse_public_key
from director.manager.api.base import read_object as read_object
from director.manager.api.catalogue import CatalogueRoutes
from director.manager.api.databases import DatabaseRoutes
from director.manager.api.domains import DomainRoutes
from director.manager.api.files import FileRoutes
from director.manager.api.operations import OperationRoutes
from director.manager.api.orchestrators import OrchestratorRoutes
from director.manager.api.requests import RequestRoutes
from director.manager.api.sites import SiteRoutes
from director.manager.api.tasks import TaskRoutes
from director.manager.api.users import UserRoutes


class ManagerAPI(
    AccountRoutes,
    SiteRoutes,
    DomainRoutes,
    TaskRoutes,
    DatabaseRoutes,
    BackupRoutes,
    FileRoutes,
    OperationRoutes,
    OrchestratorRoutes,
    UserRoutes,
    CatalogueRoutes,
    RequestRoutes,
    ManagerBase,
):
    """Routes under /api/v1/; mounted by L{director.manager.web}."""
