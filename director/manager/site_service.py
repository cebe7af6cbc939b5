"""
What a new site is: the one place that turns a validated request (the API's create, an
approved site request) into a site record and its pending C{create_site} operation.
"""

from __future__ import annotations

from director.manager import models
from director.manager.models import Operation, Site, User
from director.manager.operations import OPERATIONS
from director.manager.store import Store

#: The image of a new site when the catalogue has no default.
FALLBACK_IMAGE = "director/python:3"


class SiteService:
    """Builds sites over C{store}; the caller audits and wakes the operation engine."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record_new(
        self,
        actor: User,
        name: str,
        kind: str,
        purpose: str,
        description: str,
        members: list[str],
    ) -> tuple[Site, Operation]:
        """
        Record the site (enabled, the catalogue's default image, no packages, the default
        limits) with C{members} and its C{create_site} operation, started by C{actor}.
        Its input is already validated; L{Conflict} if the name is taken.
        """
        image = await self.store.default_image() or FALLBACK_IMAGE
        site, op = await self.store.create_site(
            {
                "name": name,
                "type": kind,
                "purpose": purpose,
                "availability": "enabled",
                "description": description,
                "image": image,
                "packages": [],
                "limits": dict(models.DEFAULT_LIMITS),
            },
            members,
            ("create_site", OPERATIONS["create_site"]),
            actor.id,
        )
        return site, op
