"""
The schemas of the OpenAPI document (L{director.manager.openapi}): each field's constraint is
the one its route checks, so input the document allows is accepted and input it forbids is
refused.
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
