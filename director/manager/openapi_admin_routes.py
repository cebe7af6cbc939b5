"""
The routes of the OpenAPI document for the installation: operations, users, notices,
images, database hosts, the audit log, backups, requests and the document itself.
"""

from __future__ import annotations

from typing import Any

from director.contract.images import SETUP_COMMAND_PATTERN
from director.manager import catalogue, models
from director.manager.openapi_schemas import (
    AGREEMENT,
    HOST,
    HOST_TEXT,
    MAIL,
    NAME,
    PASSWORD,
    PORT,
    TEXT,
    USERNAME,
    _obj,
)

# (method, path, summary, request body schema or None, success status)
INSTALLATION_ROUTES: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
    ("get", "/api/v1/operations", "All operations, failed first (admins)", None, 200),
    ("get", "/api/v1/operations/{op_id}", "An operation and its actions", None, 200),
    ("post", "/api/v1/operations/{op_id}/retry", "Retry a failed operation", None, 202),
    (
        "get",
        "/api/v1/admin/disk-usage",
        "The sites using the most disk, largest first (admins; ?limit=N, 1 to 1000)",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/orchestrators",
        "The orchestrators sites run on: url, nginx, state, healthy, sites (admins)",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/orchestrators/{name}/drain",
        "Give an orchestrator no new sites and move its sites to other orchestrators: one "
        "move_site operation per site, given back in operations (a site busy with another "
        "operation is moved once it ends) (admins)",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/sites/{name}/move",
        "Move the site to another orchestrator (admins): its files are copied while the source "
        "serves, copied again just before the target starts, then the router switches; the "
        "database is not touched. 409 same_orchestrator, orchestrator_draining, "
        "orchestrator_unavailable (the target), source_unavailable (the site's own "
        "orchestrator does not answer); 404 unknown_orchestrator",
        _obj({"orchestrator": NAME}, ("orchestrator",)),
        202,
    ),
    ("get", "/api/v1/users", "Users (teachers and admins)", None, 200),
    (
        "post",
        "/api/v1/users",
        "Create a user (admins)",
        _obj(
            {
                "username": USERNAME,
                "role": {"enum": ["student", "teacher", "admin"]},
                "password": {"oneOf": [PASSWORD, {"type": "null"}]},
                "full_name": {"type": "string", "maxLength": 200, "pattern": "^[^\\x00]*$"},
                "email": {"type": "string", "maxLength": 254, "pattern": "^[^\\x00]*$"},
                "is_service": {
                    "type": "boolean",
                    "description": "an account for scripts: API tokens only, no password",
                },
            },
            ("username",),
        ),
        201,
    ),
    (
        "post",
        "/api/v1/users/{username}/tokens",
        "Create an API token for a service account (admins; 409 not_service for a person)",
        _obj(
            {
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 3650},
            }
        ),
        201,
    ),
    (
        "get",
        "/api/v1/banners",
        "Notices shown to everyone (admins: ?all=1 with expired)",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/banners",
        "Show a notice at the top of every dashboard page (admins)",
        _obj(
            {
                "message": {"type": "string", "minLength": 1, "maxLength": 500},
                "level": {"enum": ["info", "warning"]},
                "expires_in_hours": {"type": "integer", "minimum": 1, "maximum": 8760},
            },
            ("message",),
        ),
        201,
    ),
    ("delete", "/api/v1/banners/{banner_id}", "Remove a notice (admins)", None, 200),
    (
        "post",
        "/api/v1/mail",
        "E-mail everyone of a role, or a site's members, each on their own (admins)",
        {
            "oneOf": [
                _obj(
                    {"role": {"enum": ["student", "teacher", "admin", "everyone"]}, **MAIL},
                    ("role", "subject", "body"),
                ),
                _obj({"site": NAME, **MAIL}, ("site", "subject", "body")),
            ]
        },
        202,
    ),
    (
        "patch",
        "/api/v1/users/{username}",
        "Change a user's role, active flag or password (admins)",
        _obj(
            {
                "role": {"enum": ["student", "teacher", "admin"]},
                "is_active": {"type": "boolean"},
                "password": PASSWORD,
            }
        )
        | {"minProperties": 1},
        200,
    ),
    (
        "get",
        "/api/v1/images",
        "The image catalogue: the images you may choose (admins: every image)",
        None,
        200,
    ),
    (
        "delete",
        "/api/v1/images",
        "Take ?name= out of the catalogue (admins; 409 while the default or in use)",
        None,
        200,
    ),
    (
        "delete",
        "/api/v1/database-hosts/{host_id}",
        "Forget a database host (admins; 409 host_in_use while site databases are on it)",
        None,
        200,
    ),
    (
        "put",
        "/api/v1/images",
        "Add or change a catalogue image (admins); fields left out keep their value; 409 "
        "default_visibility when the default image would not be visible to everyone",
        _obj(
            {
                "name": {
                    "type": "string",
                    "pattern": "^" + models.IMAGE_REFERENCE.pattern + "$",
                },
                "friendly_name": {"type": "string", "minLength": 1, "maxLength": 100},
                "description": TEXT,
                "logo": {"enum": [*catalogue.LOGOS, None]},
                "visibility": {"enum": list(catalogue.VISIBILITY)},
                "setup_commands": {
                    "type": "array",
                    "items": {"type": "string", "pattern": SETUP_COMMAND_PATTERN},
                    "maxItems": 20,
                    "description": "one-line shell commands, each one RUN step of a site's "
                    "image build on this image",
                },
                "run_template": {"type": ["string", "null"], "maxLength": 10000},
                "is_default": {"type": "boolean"},
            },
            ("name",),
        ),
        200,
    ),
    ("get", "/api/v1/database-hosts", "Database servers (admins; passwords hidden)", None, 200),
    (
        "put",
        "/api/v1/database-hosts",
        "Add or change a database server (admins)",
        _obj(
            {
                "kind": {"enum": ["postgres", "mysql"]},
                "admin_host": HOST,
                "admin_port": PORT,
                "admin_user": HOST_TEXT,
                "admin_password": HOST_TEXT,
                "container_host": {"oneOf": [HOST, {"type": "null"}]},
                "container_port": {"oneOf": [PORT, {"type": "null"}]},
            },
            ("kind", "admin_host", "admin_port", "admin_user", "admin_password"),
        ),
        200,
    ),
    ("get", "/api/v1/audit", "Who changed what (admins)", None, 200),
    ("get", "/api/v1/backups", "Backup runs, failures and the last success (admins)", None, 200),
    ("post", "/api/v1/backups", "Back up the manager and every site now (admins)", None, 202),
    ("get", "/api/v1/requests", "Site requests you made, sponsor, or (admins) all", None, 200),
    (
        "patch",
        "/api/v1/requests/{request_id}",
        "Comment on a request (admins): public_comment its student and teacher see, "
        "admin_comment for administrators",
        _obj({"public_comment": TEXT, "admin_comment": TEXT}) | {"minProperties": 1},
        200,
    ),
    (
        "post",
        "/api/v1/requests",
        "Request an activity site, naming a sponsoring teacher",
        _obj(
            {
                "name": NAME,
                "activity": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": TEXT,
                "teacher": USERNAME,
                "agreement": AGREEMENT,
            },
            ("name", "activity", "teacher"),
        ),
        201,
    ),
    (
        "post",
        "/api/v1/requests/{request_id}/{action}",
        "approve or reject (the teacher), create or reject (admins)",
        None,
        200,
    ),
    ("get", "/api/v1/openapi.json", "This document", None, 200),
]
