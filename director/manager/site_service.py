"""
What a new site is: the one place that turns a validated request (the API's create, an
approved site request) into a site record and its pending C{create_site} operation.
"""

from __future__ import annotations

from typing import Any

from director.manager import models
from director.manager.models import Operation, Site, User, UserLimits, ValidationError
from director.manager.operations import OPERATIONS
from director.manager.orchestrator_pool import OrchestratorPool
from director.manager.store import Store

#: The image of a new site when the catalogue has no default.
FALLBACK_IMAGE = "director/python:3"


def check_name_and_agreement(
    limits: UserLimits, user: User, name: str, purpose: str, agreed: object
) -> None:
    """
    The school's name rules (C{limits}), and its student agreement, for a new site or site
    request C{name} of C{user}'s: L{ValidationError} if refused.
    """
    refusal = limits.names.refusal(user, name, purpose)
    if refusal:
        raise ValidationError("name", refusal)
    if agreed is not None and not isinstance(agreed, bool):
        raise ValidationError("agreement", "true when the agreement is ticked")
    refusal = limits.agreement_refusal(user, agreed)
    if refusal:
        raise ValidationError("agreement", refusal)


class SiteService:
    """
    Builds sites over C{store}, each placed on an orchestrator of C{pool}; the caller
    audits and wakes the operation engine.
    """

    def __init__(self, store: Store, pool: OrchestratorPool) -> None:
        self.store = store
        self.pool = pool

    async def record_new(
        self,
        actor: User,
        name: str,
        kind: str,
        purpose: str,
        description: str,
        members: list[str],
        orchestrator: str | None = None,
        image: str | None = None,
    ) -> tuple[Site, Operation]:
        """
        Record the site (enabled, the catalogue's default image, no packages, the default
        limits) with C{members}, placed on C{orchestrator} (an administrator's choice) or
        on the pool's choice, and its C{create_site} operation, started by C{actor}.
        C{image}: a catalogue image the caller checked C{actor} may choose (else the default).
        Its input is already validated; L{Conflict} if the name is taken,
        L{PlacementError} if no orchestrator (or not the one named) can take it.
        """
        image = image or await self.store.default_image() or FALLBACK_IMAGE
        fields: dict[str, Any] = {
            "name": name,
            "type": kind,
            "purpose": purpose,
            "availability": "enabled",
            "description": description,
            "image": image,
            "packages": [],
            "limits": dict(models.DEFAULT_LIMITS),
        }
        placement = await self.pool.place(orchestrator)
        if self.pool.records is not None:
            fields["orchestrator_id"] = placement.id
        site, op = await self.store.create_site(
            fields,
            members,
            ("create_site", OPERATIONS["create_site"]),
            actor.id,
        )
        return site, op
