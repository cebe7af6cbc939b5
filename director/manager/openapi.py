"""
The OpenAPI 3 description of the REST API, served at /api/v1/openapi.json. Written by hand
(as documentation) and checked against the routes by tests/unit/test_manager_api.py, so a
route cannot be added without describing it.
"""

from __future__ import annotations

from typing import Any

from director.contract.databases import HOST_ADDRESS
from director.contract.domains import domain_schema
from director.contract.sites import BODY_SIZE, LIMIT_RANGES
from director.manager import models
from director.manager.passwords import MAX_LENGTH, MIN_LENGTH

# Each constraint below is the one the route checks (models.py, api.py), so that input the
# document allows is accepted and input it forbids is refused (schemathesis -c all checks both).
NAME = {
    "type": "string",
    "pattern": models.SITE_NAME.pattern,
    "not": {"enum": sorted(models.RESERVED_SITE_NAMES)},
}
USERNAME = {"type": "string", "pattern": models.USERNAME.pattern}
PASSWORD = {"type": "string", "minLength": MIN_LENGTH, "maxLength": MAX_LENGTH}
TEXT = {"type": "string", "maxLength": 2000, "pattern": "^[^\\x00]*$"}  # no NUL
HOST_TEXT = {"type": "string", "minLength": 1, "maxLength": 253}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
# A database server's address: a host name or an IP address (the contract's HOST_ADDRESS).
HOST = {"type": "string", "pattern": f"^({HOST_ADDRESS.pattern})$"}
# A custom domain (the route lower-cases it), as far as ASCII input goes (the contract's rule).
DOMAIN = domain_schema()
# A path inside the site: no NUL or backslash, no "." or ".." segment.
PATH = {
    "type": "string",
    "pattern": "^(?!(.*/)?\\.\\.?(/|$))[^\\\\\\x00]*$",
    "minLength": 1,
    "maxLength": 1024,
}
ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
OPERATION = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "site": {"type": "string"},
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "running", "succeeded", "failed"]},
        "error": {"type": ["string", "null"]},
        # What was asked: a set_image's image and packages (kept there if the build fails).
        "params": {
            "type": "object",
            "properties": {
                "image": {"type": "string"},
                "packages": {"type": "array", "items": {"type": "string"}},
                "old_name": {"type": "string"},
            },
        },
        "actions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "status": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
        # Routers that were down when the change went to the others: they catch up when back.
        "degraded_routers": {"type": "array", "items": {"type": "string"}},
    },
}
# A refusal on a site: 403 site_disabled / forbidden, 409 site_creating / site_not_created
# (with the operation to wait for or retry), limit_reached, operation_running, ...
SITE_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "operation": OPERATION,
    },
}
LIMITS = {
    "type": "object",
    "properties": {
        **{
            key: {
                "type": "number" if key == "cpus" else "integer",
                "minimum": low,
                "maximum": high,
            }
            for key, (low, high) in LIMIT_RANGES.items()
        },
        "client_max_body_size": {"type": "string", "pattern": f"^{BODY_SIZE.pattern}$"},
        # The site's own disk quota; null: the orchestrator's default (orchestrator.disk_quota_mb)
        "disk_quota_mb": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": models.MAX_DISK_QUOTA_MB,
        },
    },
    "additionalProperties": False,
}
# Bytes, as last measured (in the background: a few seconds behind an upload); null: not
# measured yet, or (quota) no quota.
DISK_BYTES = {"type": ["integer", "null"], "minimum": 0}
# What every site's representation holds (more fields may follow; admins see admin_comments).
SITE = {
    "type": "object",
    "required": ["id", "name", "type", "limits", "disk_usage_bytes", "disk_quota_bytes"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "type": {"enum": ["static", "dynamic"]},
        "limits": {"type": "object"},
        "sftp_url": {"type": "string"},
        "git_url": {"type": "string"},
        "members": {"type": "array", "items": {"type": "string"}},
        # Added before they first signed in: members from their first sign-in.
        "pending_members": {"type": "array", "items": {"type": "string"}},
        "disk_usage_bytes": DISK_BYTES,
        "disk_quota_bytes": DISK_BYTES,
        # Admins only: the orchestrator that runs the site (null: not placed yet).
        "orchestrator": {"type": ["string", "null"]},
        # GET /api/v1/sites/{name} only: null, or node_unavailable while the site's
        # orchestrator does not answer (its operations wait until it does).
        "status": {"enum": [None, "node_unavailable"]},
    },
}
DISK_USAGE = {
    "type": "object",
    "required": ["sites"],
    "properties": {
        "sites": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "disk_usage_bytes", "disk_quota_bytes"],
                "properties": {
                    "name": {"type": "string"},
                    "type": {"enum": ["static", "dynamic"]},
                    "members": {"type": "array", "items": {"type": "string"}},
                    "disk_usage_bytes": DISK_BYTES,
                    "disk_quota_bytes": DISK_BYTES,
                },
            },
        }
    },
}

# A scheduled task's fields (schedules.py checks them). A schedule is a five-field cron
# expression or a shorthand like @daily; no regular expression says which ones come round,
# so it is a format of its own (tests/integration/schemathesis_hooks.py generates them).
SCHEDULE = {
    "type": "string",
    "format": "cron",
    "maxLength": 100,
    "description": "minute hour day-of-month month day-of-week (UTC), e.g. */15 * * * *; "
    "or @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually",
}
RUN = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "task_id": {"type": "integer"},
        "trigger": {"enum": ["schedule", "manual"]},
        "status": {
            "enum": ["running", "succeeded", "failed", "timed_out", "skipped", "interrupted"]
        },
        "exit_code": {"type": ["integer", "null"]},
        "output": {"type": "string"},
        "output_truncated": {"type": "boolean"},
        "message": {"type": "string"},
        "started_at": {"type": "string"},
        "finished_at": {"type": ["string", "null"]},
        "duration": {"type": ["number", "null"]},
    },
}


def task_fields(max_timeout: int) -> dict[str, Any]:
    return {
        "name": {"type": "string", "maxLength": 100, "pattern": "^[^\\x00]*$"},
        "schedule": SCHEDULE,
        "command": {
            "type": "string",
            "minLength": 1,
            "maxLength": 10000,
            # not blank (ASCII white space only, which every regex engine agrees on), no NUL
            "pattern": "^[^\\x00]*[^\\x00\\x09-\\x0d ][^\\x00]*$",
            "description": "run with sh -c in the site's container, in /site, as the site",
        },
        "timeout": {
            "type": "integer",
            "minimum": 1,
            "maximum": max_timeout,
            "description": "seconds before the run is stopped (manager.task_max_timeout at most)",
        },
        "enabled": {"type": "boolean"},
    }


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


MAIL = {
    "subject": {"type": "string", "minLength": 1, "maxLength": 200},
    "body": {"type": "string", "minLength": 1, "maxLength": 20000},
}

# Students tick the school's agreement (manager.student_agreement) when there is one.
AGREEMENT = {"type": "boolean", "description": "the student agreement is ticked"}

# (method, path, summary, request body schema or None, success status, extra parameters)
ROUTES: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
    ("get", "/api/v1/me", "The signed-in user", None, 200),
    (
        "patch",
        "/api/v1/me",
        "Accept the guidelines or change your password",
        _obj(
            {
                "accepted_guidelines": {"const": True},
                "password": PASSWORD,
                "current_password": {"type": "string", "maxLength": MAX_LENGTH},
            }
        ),
        200,
    ),
    ("get", "/api/v1/tokens", "Your API tokens (never their secrets)", None, 200),
    (
        "post",
        "/api/v1/tokens",
        "Create an API token for yourself (needs a recent sign-in or your password: else 403)",
        _obj(
            {
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 3650},
                "password": {"type": "string", "maxLength": MAX_LENGTH},
            }
        ),
        201,
    ),
    ("delete", "/api/v1/tokens/{token_id}", "Revoke one of your API tokens", None, 200),
    ("get", "/api/v1/me/keys", "Your SSH public keys", None, 200),
    (
        "post",
        "/api/v1/me/keys",
        "Register an SSH public key (for the shell server)",
        _obj(
            {
                "public_key": {
                    "type": "string",
                    "format": "ssh-public-key",
                    "description": "an OpenSSH public key line: ssh-ed25519, ECDSA, or RSA of "
                    "2048 bits or more",
                    "maxLength": 16384,
                }
            },
            ("public_key",),
        ),
        201,
    ),
    ("delete", "/api/v1/me/keys/{key_id}", "Remove an SSH key", None, 200),
    (
        "get",
        "/api/v1/sites",
        'Your sites (admins: ?all=1); ?q= terms, all matching: words, "quoted words", '
        "name:, user:, desc:, id:; ?limit= and ?offset= page through",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/sites",
        "Create a site (202: an operation sets it up)",
        _obj(
            {
                "name": NAME,
                "type": {"enum": ["static", "dynamic"]},
                "description": TEXT,
                "purpose": {"enum": ["personal", "project", "activity", "other"]},
                "users": {"type": "array", "items": USERNAME, "maxItems": 50},
                "agreement": AGREEMENT,
                "orchestrator": {
                    "type": "string",
                    "maxLength": 32,
                    "description": "admins only: the orchestrator to place the site on (else "
                    "the healthy active one with the fewest sites); 409 if it is unknown, "
                    "draining or unavailable",
                },
            },
            ("name",),
        ),
        202,
    ),
    ("get", "/api/v1/sites/{name}", "One site, with its active operation", None, 200),
    (
        "patch",
        "/api/v1/sites/{name}",
        "Change a site: name, description, type, members, image and packages; admins also "
        "availability, limits and comments",
        _obj(
            {
                "name": NAME,
                "description": TEXT,
                "type": {"enum": ["static", "dynamic"]},
                "purpose": {"enum": ["personal", "project", "activity", "other"]},
                "users": {"type": "array", "items": USERNAME, "minItems": 1, "maxItems": 50},
                "image": {"type": "string", "maxLength": 200},
                "packages": {
                    "type": "array",
                    "items": {"type": "string", "pattern": models.PACKAGE.pattern},
                    "maxItems": 100,
                },
                "availability": {"enum": ["enabled", "not-served", "disabled"]},
                "limits": LIMITS,
                "admin_comments": TEXT,
                "public_comment": TEXT,
            }
        )
        # a rename goes alone: the image and packages change in an operation of their own
        | {"not": {"anyOf": [{"required": ["name", "image"]}, {"required": ["name", "packages"]}]}},
        202,
    ),
    (
        "delete",
        "/api/v1/sites/{name}",
        "Delete a site, its service, config, database and files",
        None,
        202,
    ),
    ("post", "/api/v1/sites/{name}/restart", "Restart the site's process", None, 202),
    (
        "post",
        "/api/v1/sites/{name}/repair",
        "Re-apply the site's configuration everywhere",
        None,
        202,
    ),
    ("post", "/api/v1/sites/{name}/regenerate-secrets", "New database password", None, 202),
    (
        "get",
        "/api/v1/sites/{name}/status",
        "Running, starting, start time, run.sh present",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/sites/{name}/domains",
        "Add a custom domain",
        _obj({"domain": DOMAIN}, ("domain",)),
        202,
    ),
    (
        "get",
        "/api/v1/sites/{name}/domains",
        "Custom domains and their certificate state",
        None,
        200,
    ),
    ("delete", "/api/v1/sites/{name}/domains/{domain}", "Remove a custom domain", None, 202),
    (
        "post",
        "/api/v1/sites/{name}/database",
        "Create the site's database (admins may choose the server with host_id)",
        _obj(
            {
                "type": {"enum": ["postgres", "mysql"]},
                "host_id": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": 2147483647,
                    "description": "a database host of that type (admins only); "
                    "null or absent: the first registered",
                },
            },
            ("type",),
        ),
        202,
    ),
    ("get", "/api/v1/sites/{name}/database", "The site's database and its credentials", None, 200),
    ("delete", "/api/v1/sites/{name}/database", "Delete the site's database", None, 202),
    (
        "post",
        "/api/v1/sites/{name}/database/query",
        "Run one SQL statement as the site",
        _obj(
            {"sql": {"type": "string", "pattern": "[^\\x09-\\x0d ]", "maxLength": 100000}}, ("sql",)
        ),
        200,
    ),
    (
        "get",
        "/api/v1/sites/{name}/backups",
        "The site's backups (snapshots, newest first, with time and size) and latest runs",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/sites/{name}/backups",
        "Back the site up now (its files and database)",
        None,
        202,
    ),
    (
        "post",
        "/api/v1/sites/{name}/backups/{snapshot}/restore",
        "Restore the site's files (all, or one path) and/or database from a backup",
        {
            "type": "object",
            "properties": {
                "files": {"type": "boolean"},
                "path": PATH,
                "database": {"type": "boolean"},
            },
            "additionalProperties": False,
            "allOf": [
                # a path is restored with the files
                {"not": {"required": ["path", "files"], "properties": {"files": {"const": False}}}},
                # something must be restored
                {
                    "not": {
                        "required": ["files", "database"],
                        "properties": {"files": {"const": False}, "database": {"const": False}},
                    }
                },
            ],
        },
        202,
    ),
    (
        "get",
        "/api/v1/sites/{name}/files/{path}",
        "A file's bytes, a directory's entries (JSON), or with ?zip=1 a directory as a zip",
        None,
        200,
    ),
    (
        "put",
        "/api/v1/sites/{name}/files/{path}",
        "Create or replace a file (raw body; ?mode=755); a path ending in / makes a directory",
        None,
        200,
    ),
    (
        "patch",
        "/api/v1/sites/{name}/files/{path}",
        "Change mode and/or move",
        _obj({"mode": {"type": "string", "pattern": "^0?[0-7]{3}$"}, "move_to": PATH})
        | {"minProperties": 1},
        200,
    ),
    (
        "delete",
        "/api/v1/sites/{name}/files/{path}",
        "Delete a file, or a directory with ?recursive=1",
        None,
        200,
    ),
    ("get", "/api/v1/sites/{name}/logs", "The last ?tail=N lines of the site's log", None, 200),
    ("get", "/api/v1/sites/{name}/tasks", "The site's scheduled tasks", None, 200),
    (
        "post",
        "/api/v1/sites/{name}/tasks",
        "Add a scheduled task (at most manager.max_tasks_per_site: else 409 limit_reached)",
        {"$task_fields": ("schedule", "command")},
        201,
    ),
    ("get", "/api/v1/sites/{name}/tasks/{task_id}", "A scheduled task", None, 200),
    (
        "patch",
        "/api/v1/sites/{name}/tasks/{task_id}",
        "Change a task's schedule, command, name, time limit, or pause it (enabled: false)",
        {"$task_fields": ()},
        200,
    ),
    ("delete", "/api/v1/sites/{name}/tasks/{task_id}", "Delete a task and its runs", None, 200),
    (
        "get",
        "/api/v1/sites/{name}/tasks/{task_id}/runs",
        "The task's last runs, newest first: status, exit code, output",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/sites/{name}/tasks/{task_id}/run",
        "Run the task now (409 task_running while its previous run goes on, "
        "site_not_served for a disabled or not-served site)",
        None,
        202,
    ),
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
    ("get", "/api/v1/images", "The image catalogue", None, 200),
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
        "Add or change a catalogue image (admins)",
        _obj(
            {
                "name": {
                    "type": "string",
                    "pattern": "^" + models.IMAGE_REFERENCE.pattern + "$",
                },
                "friendly_name": {"type": "string", "minLength": 1, "maxLength": 100},
                "description": TEXT,
                "setup_command": {"type": ["string", "null"], "maxLength": 10000},
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


def is_set(flag: str | None) -> bool:
    """A FLAG parameter's value as a yes or no (absent is no)."""
    return flag in ("1", "true")


def document(task_max_timeout: int = 3600) -> dict[str, Any]:
    """The document; C{task_max_timeout} is manager.task_max_timeout."""
    paths: dict[str, Any] = {}
    for method, path, summary, body, status in ROUTES:
        if body is not None and "$task_fields" in body:
            required = body["$task_fields"]
            body = _obj(task_fields(task_max_timeout), required)
            if not required:
                body["minProperties"] = 1
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": PATH_PARAMETERS[p]}
            for p in PATH_PARAMETERS
            if "{" + p + "}" in path
        ]
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": (method, path, name) in REQUIRED_QUERY,
                "schema": schema,
            }
            for name, schema in QUERY_PARAMETERS.get((method, path), [])
        ]
        operation: dict[str, Any] = {
            "summary": summary,
            "parameters": parameters,
            "responses": _responses(method, path, status, body is not None),
        }
        for code, description in EXTRA_RESPONSES.get((method, path), {}).items():
            operation["responses"][code] = {
                "description": description,
                "content": {"application/json": {"schema": ERROR}},
            }
        for code, description in OTHER_SUCCESSES.get((method, path), {}).items():
            operation["responses"][code] = {"description": description}
        if (method, path) in SUCCESS_SCHEMAS:
            operation["responses"][str(status)]["content"] = {
                "application/json": {"schema": SUCCESS_SCHEMAS[method, path]}
            }
        if path == "/api/v1/openapi.json":
            operation["security"] = []  # public, like the dashboard's guide
            operation["responses"] = {"200": {"description": "this document"}}
        if status == 202:
            operation["responses"]["202"] = {
                "description": "accepted: an operation applies the change",
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "properties": {"operation": OPERATION}}
                    }
                },
            }
        if path.endswith("/tasks/{task_id}/run"):
            operation["responses"]["202"] = {
                "description": "accepted: the run started; follow it in the task's runs",
                "content": {
                    "application/json": {"schema": {"type": "object", "properties": {"run": RUN}}}
                },
            }
        if body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Director API",
            "version": "1",
            "description": "Sites, files, domains and databases. See docs/api.md.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
