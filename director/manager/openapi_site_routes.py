"""
The routes of the OpenAPI document that a user's own account and sites answer: who they are,
tokens, keys, sites and their files, domains, databases, logs and scheduled tasks.
"""

from __future__ import annotations

from typing import Any

from director.manager import models
from director.manager.openapi_schemas import (
    AGREEMENT,
    DOMAIN,
    LIMITS,
    NAME,
    PASSWORD,
    PATH,
    TEXT,
    USERNAME,
    _obj,
)
from director.manager.passwords import MAX_LENGTH

# (method, path, summary, request body schema or None, success status)
SITE_ROUTES: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
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
                "image": {
                    "type": "string",
                    "maxLength": 200,
                    "description": "a catalogue image you may choose (else the default); "
                    "409 unknown_image otherwise",
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
        "availability, limits, comments and nginx_snippet (raw nginx directives for the "
        "site's server block, checked with nginx -t first: 400 with nginx's message)",
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
                "nginx_snippet": {"type": ["string", "null"], "maxLength": 10000},
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
]
