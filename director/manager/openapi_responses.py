"""
What the OpenAPI document says of each route besides its body: its answers (errors, other
successes, success schemas), its path parameters and its query parameters.
"""

from __future__ import annotations

from typing import Any

from director.manager import models
from director.manager.openapi_schemas import (
    DISK_USAGE,
    DOMAIN,
    ERROR,
    NAME,
    PATH,
    SITE,
    SITE_ERROR,
    USERNAME,
)

# Answers besides success, 400, 401 and 404 that a client should expect, by route.
EXTRA_RESPONSES: dict[tuple[str, str], dict[str, str]] = {
    ("post", "/api/v1/tokens"): {
        "403": "reauthenticate: no sign-in within manager.reauth_minutes and no right password",
    },
    ("post", "/api/v1/sites/{name}/domains"): {
        "409": "domain_taken, domain_exists, or domain_reserved (the dashboard's own host name)",
    },
}

PATH_PARAMETERS = {
    "name": NAME,
    "key_id": {"type": "integer"},
    "token_id": {"type": "integer"},
    "op_id": {"type": "integer"},
    "task_id": {"type": "integer"},
    "request_id": {"type": "integer"},
    "banner_id": {"type": "integer"},
    "host_id": {"type": "integer"},
    "username": USERNAME,
    "domain": DOMAIN,
    "path": PATH,
    "snapshot": {"type": "string", "pattern": "^[0-9a-f]{8,64}$"},
    "action": {"enum": ["approve", "reject", "create"]},
}


# The SQL console: a statement the database refuses is 422 with the database's words.
EXTRA_RESPONSES[("post", "/api/v1/sites/{name}/database/query")] = {
    "422": "query_failed or query_timeout: the database refused or cut off the statement",
}

# Writes that would take a site over its disk quota.
EXTRA_RESPONSES[("put", "/api/v1/sites/{name}/files/{path}")] = {
    "413": "too_large (the upload is over the size limit) or quota_exceeded (the site would "
    "pass its disk quota: the message says by how much and what to do)",
}
EXTRA_RESPONSES[("get", "/api/v1/admin/disk-usage")] = {"403": "forbidden: administrators only"}
EXTRA_RESPONSES[("post", "/api/v1/sites")] = {
    "503": "no_orchestrator: no orchestrator takes new sites now (none is active)",
}
EXTRA_RESPONSES[("get", "/api/v1/orchestrators")] = {"403": "forbidden: administrators only"}
EXTRA_RESPONSES[("post", "/api/v1/orchestrators/{name}/drain")] = {
    "403": "forbidden: administrators only",
}
EXTRA_RESPONSES[("post", "/api/v1/sites/{name}/move")] = {
    "403": "forbidden: administrators only",
}
ORCHESTRATOR = {
    "type": "object",
    "required": ["name", "url", "nginx", "state", "healthy", "sites"],
    "properties": {
        "name": {"type": "string"},
        "url": {"type": "string"},
        "nginx": {"type": "string", "description": "host:port routers forward its sites to"},
        "state": {"enum": ["active", "draining"]},
        "healthy": {"type": "boolean"},
        "sites": {"type": "integer", "minimum": 0},
        "created_at": {"type": ["string", "null"]},
    },
}

# Second success answers a route gives besides its usual one.
OTHER_SUCCESSES: dict[tuple[str, str], dict[str, str]] = {
    ("put", "/api/v1/sites/{name}/files/{path}"): {
        "201": "created: a directory (a path ending in /) or a new file with ?exclusive=1",
    },
}

# The JSON a successful answer carries, where the document describes it.
SUCCESS_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/api/v1/sites/{name}"): SITE,
    ("get", "/api/v1/sites"): {
        "type": "object",
        "required": ["sites"],
        "properties": {"sites": {"type": "array", "items": SITE}},
    },
    ("get", "/api/v1/admin/disk-usage"): DISK_USAGE,
    ("get", "/api/v1/orchestrators"): {
        "type": "object",
        "required": ["orchestrators"],
        "properties": {"orchestrators": {"type": "array", "items": ORCHESTRATOR}},
    },
    ("post", "/api/v1/orchestrators/{name}/drain"): {
        "type": "object",
        "required": ["orchestrator", "operations"],
        "properties": {
            "orchestrator": ORCHESTRATOR,
            "operations": {"type": "array", "items": {"type": "object"}},
        },
    },
}

# Backups: the repository may be out of reach for a while.
for _route in (
    ("get", "/api/v1/sites/{name}/backups"),
    ("post", "/api/v1/sites/{name}/backups"),
    ("post", "/api/v1/sites/{name}/backups/{snapshot}/restore"),
    ("get", "/api/v1/backups"),
    ("post", "/api/v1/backups"),
):
    EXTRA_RESPONSES[_route] = {
        "503": "unavailable or backups_unavailable: the backup repository cannot be reached now"
    }

# Routes that also answer a second success (PATCH of a site's records only: 200, no operation).
ALSO_SUCCEEDS = {("patch", "/api/v1/sites/{name}"): 200}


def _responses(method: str, path: str, status: int, has_body: bool) -> dict[str, Any]:
    """Every answer a route can give: each holds for every authenticated route unless noted."""
    error = {"application/json": {"schema": ERROR}}
    site_error = {"application/json": {"schema": SITE_ERROR}}
    on_site = path.startswith("/api/v1/sites/{name}")
    responses: dict[str, Any] = {
        str(status): {"description": "success"},
        "400": {"description": "bad input: the message (and field) say what", "content": error},
        "401": {"description": "not signed in, or the token is unknown or expired"},
        "403": {
            "description": "not allowed: inactive (a deactivated account), csrf (a dashboard "
            "session without its token), forbidden (a rule of roles or purposes), "
            "site_disabled (an administrator disabled the site)",
            "content": site_error if on_site else error,
        },
        "404": {"description": "no such thing, or not yours", "content": error},
    }
    if (method, path) in ALSO_SUCCEEDS:
        responses[str(ALSO_SUCCEEDS[method, path])] = {"description": "success"}
    if method != "get" or on_site:
        responses["409"] = {
            "description": "conflict with what exists: site_creating (still being set up "
            "after the wait; wait for the operation given), site_not_created, "
            "operation_running, limit_reached, name_taken, unknown_user, being_moved (a "
            "file write while the site is moved to another orchestrator), ...",
            "content": site_error if on_site else error,
        }
    if on_site:
        responses["503"] = {
            "description": "node_unavailable: the orchestrator the site runs on does not "
            "answer now; try again soon",
            "content": error,
        }
    if has_body or method == "put":
        responses["413"] = {"description": "too_large: the body is over the limit"}
    if method != "get":
        responses["429"] = {"description": "rate_limited: too many changes at once"}
    return responses


# A yes-or-no query parameter.
FLAG: dict[str, Any] = {"type": "string", "enum": ["0", "1", "true", "false"]}

# Query parameters a route takes (name, schema); those named here are required. The API reads
# requests against this same table (director.manager.query_args).
REQUIRED_QUERY = {("delete", "/api/v1/images", "name")}
QUERY_PARAMETERS: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {
    ("delete", "/api/v1/images"): [
        (
            "name",
            {
                "type": "string",
                "pattern": "^" + models.IMAGE_REFERENCE.pattern + "$",
                "description": "a local image reference like director/python:3",
            },
        ),
    ],
    ("get", "/api/v1/sites"): [
        ("q", {"type": "string", "maxLength": 1000}),
        ("all", FLAG),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 5000}),
        ("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}),
    ],
    ("get", "/api/v1/banners"): [("all", FLAG)],
    ("get", "/api/v1/admin/disk-usage"): [
        ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
    ],
    ("get", "/api/v1/sites/{name}/logs"): [
        ("tail", {"type": "integer", "minimum": 1, "maximum": 5000}),
    ],
    ("get", "/api/v1/sites/{name}/files/{path}"): [("zip", FLAG)],
    ("put", "/api/v1/sites/{name}/files/{path}"): [
        (
            "mode",
            {
                "type": "string",
                "pattern": "^0?[0-7]{3}$",
                "description": "permission bits in octal, like 644 or 0755",
            },
        ),
        ("exclusive", FLAG),
    ],
    ("delete", "/api/v1/sites/{name}/files/{path}"): [("recursive", FLAG)],
}
