"""
The manager's database: SQLite under var/ by default, PostgreSQL by config, migrated with
Alembic. Every query runs in the store's own bounded thread pool, never on the reactor
thread; each public method is one transaction.

L{Store} is one facade over the concerns, each in its own module: accounts (L{users}),
credentials, notices, the catalogue, sites and their members, operations, scheduled tasks
and site requests.
"""

from __future__ import annotations

from director.manager.store.base import KEEP, Conflict, Keep, NotFound, now
from director.manager.store.catalogue import CatalogueStore
from director.manager.store.credentials import TOKEN_PREFIX, TOKEN_USE_GRANULARITY, CredentialStore
from director.manager.store.engine import make_engine, migrate
from director.manager.store.notices import NoticeStore
from director.manager.store.operations import OperationStore
from director.manager.store.requests import RequestStore
from director.manager.store.sites import SiteStore
from director.manager.store.tasks import TaskStore
from director.manager.store.users import UserStore

__all__ = [
    "KEEP",
    "TOKEN_PREFIX",
    "TOKEN_USE_GRANULARITY",
    "Conflict",
    "Keep",
    "NotFound",
    "Store",
    "make_engine",
    "migrate",
    "now",
]


class Store(
    UserStore,
    CredentialStore,
    NoticeStore,
    CatalogueStore,
    SiteStore,
    OperationStore,
    TaskStore,
    RequestStore,
):
    """Typed access to the manager's data; every method returns a Deferred."""
