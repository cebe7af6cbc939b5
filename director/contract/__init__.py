"""
The contract between Director's components: the values the manager sends to orchestrators
and routers (a site's spec, its route, database servers and a site's database), each with
its validation and its JSON form. No I/O; imported by the manager, the orchestrator, the
router and the shell, so that every rule is written once (docs/contract.md).
"""

from director.contract.databases import (
    DATABASE_HOST_FIELDS,
    DATABASE_KINDS,
    HOST_ADDRESS,
    DatabaseHost,
    DatabaseKind,
    DatabaseSpec,
    SiteDatabase,
)
from director.contract.domains import is_within, normalize_domain
from director.contract.errors import ValidationError
from director.contract.sites import (
    AVAILABILITY,
    MAX_DISK_QUOTA_MB,
    SITE_NAME,
    SITE_TYPES,
    Limits,
    RouteSpec,
    SiteSpec,
    is_site_name,
    validate_site_name,
)

__all__ = [
    "AVAILABILITY",
    "DATABASE_HOST_FIELDS",
    "DATABASE_KINDS",
    "HOST_ADDRESS",
    "MAX_DISK_QUOTA_MB",
    "SITE_NAME",
    "SITE_TYPES",
    "DatabaseHost",
    "DatabaseKind",
    "DatabaseSpec",
    "Limits",
    "RouteSpec",
    "SiteDatabase",
    "SiteSpec",
    "ValidationError",
    "is_site_name",
    "is_within",
    "normalize_domain",
    "validate_site_name",
]
