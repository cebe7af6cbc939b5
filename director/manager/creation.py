"""
Waiting for a site's creation to end: actions on a site (API calls, the dashboard's terminal
and files) wait a bounded while for it, rather than failing on a site whose container does
not exist yet.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater

from director.manager.models import Operation
from director.manager.store import Store

POLL = 0.2


async def unfinished_creation(
    reactor: Any, store: Store, site_id: int, wait: float
) -> Operation | None:
    """
    None once the site's creation has succeeded (or if none is recorded), after waiting up
    to C{wait} seconds for it; otherwise the creation operation, still pending or running,
    or failed.
    """
    op = await store.active_operation(site_id)
    if op is None or op.type != "create_site":
        return None
    deadline = reactor.seconds() + wait
    while op.status in ("pending", "running") and reactor.seconds() < deadline:
        await deferLater(reactor, POLL, lambda: None)
        op = await store.get_operation(op.id)
    return op if op.status in ("pending", "running", "failed") else None
