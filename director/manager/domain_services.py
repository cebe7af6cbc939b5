"""
The manager's services: the rules over the store that the API's routes (and the dashboard)
call, built once by the manager's builder and handed to the API.
"""

from __future__ import annotations

from dataclasses import dataclass

from director.manager.catalogue_service import CatalogueService
from director.manager.mail import Mailer
from director.manager.models import UserLimits
from director.manager.orchestrator_pool import OrchestratorPool
from director.manager.passwords import Passwords
from director.manager.request_service import RequestService
from director.manager.site_service import SiteService
from director.manager.store import Store
from director.manager.user_service import UserService


@dataclass(frozen=True)
class ManagerServices:
    """One of each service, sharing one store."""

    sites: SiteService
    users: UserService
    requests: RequestService
    catalogue: CatalogueService

    @classmethod
    def build(
        cls,
        store: Store,
        pool: OrchestratorPool,
        passwords: Passwords,
        mailer: Mailer,
        limits: UserLimits,
    ) -> ManagerServices:
        """The services over C{store}: sites placed by C{pool}, mail through C{mailer}."""
        sites = SiteService(store, pool)
        return cls(
            sites=sites,
            users=UserService(store, passwords),
            requests=RequestService(store, sites, mailer, limits),
            catalogue=CatalogueService(store),
        )
