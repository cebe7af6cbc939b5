"""
The OpenAPI 3 description of the REST API, served at /api/v1/openapi.json. Written by hand
(as documentation) and checked against the routes by tests/unit/test_manager_api.py, so a
route cannot be added without describing it.

Its parts: L{openapi_schemas}, the routes (L{openapi_site_routes},
L{openapi_admin_routes}) and what each answers (L{openapi_responses}).
"""

from __future__ import annotations

from typing import Any

from director.contract.terminals import TERMINAL_SHELLS
from director.manager.openapi_admin_routes import INSTALLATION_ROUTES
from director.manager.openapi_responses import (
    ALSO_SUCCEEDS,
    EXTRA_RESPONSES,
    FLAG,
    ORCHESTRATOR,
    OTHER_SUCCESSES,
    PATH_PARAMETERS,
    QUERY_PARAMETERS,
    REQUIRED_QUERY,
    SUCCESS_SCHEMAS,
    _responses,
)
from director.manager.openapi_schemas import (
    AGREEMENT,
    DISK_BYTES,
    DISK_USAGE,
    DOMAIN,
    ERROR,
    HOST,
    HOST_TEXT,
    LIMITS,
    MAIL,
    NAME,
    OPERATION,
    PASSWORD,
    PATH,
    PORT,
    RUN,
    SCHEDULE,
    SITE,
    SITE_ERROR,
    TEXT,
    USERNAME,
    _obj,
    task_fields,
)
from director.manager.openapi_site_routes import SITE_ROUTES

__all__ = [
    "AGREEMENT",
    "ALSO_SUCCEEDS",
    "DISK_BYTES",
    "DISK_USAGE",
    "DOMAIN",
    "ERROR",
    "EXTRA_RESPONSES",
    "FLAG",
    "HOST",
    "HOST_TEXT",
    "LIMITS",
    "MAIL",
    "NAME",
    "OPERATION",
    "ORCHESTRATOR",
    "OTHER_SUCCESSES",
    "PASSWORD",
    "PATH",
    "PATH_PARAMETERS",
    "PORT",
    "QUERY_PARAMETERS",
    "REQUIRED_QUERY",
    "ROUTES",
    "RUN",
    "SCHEDULE",
    "SITE",
    "SITE_ERROR",
    "SUCCESS_SCHEMAS",
    "TEXT",
    "USERNAME",
    "WEBSOCKETS",
    "document",
    "is_set",
    "task_fields",
]

#: Every route: (method, path, summary, request body schema or None, success status).
ROUTES: list[tuple[str, str, str, dict[str, Any] | None, int]] = SITE_ROUTES + INSTALLATION_ROUTES


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
        "x-websockets": WEBSOCKETS,
    }


#: The dashboard's websockets (signed-in session and the dashboard's Origin), outside
#: C{paths}: they are not REST routes. Documented here for the choice they take.
WEBSOCKETS: dict[str, Any] = {
    "/ws/sites/{name}/terminal": {
        "summary": "a terminal in the site's container (see docs/api.md)",
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": NAME},
            {
                "name": "shell",
                "in": "query",
                "required": False,
                "description": "login (default) or database: the site's psql or mysql",
                "schema": {"type": "string", "enum": list(TERMINAL_SHELLS)},
            },
        ],
        "responses": {
            "101": {"description": "the websocket"},
            "400": {"description": "bad_shell", "content": {"application/json": {"schema": ERROR}}},
            "409": {
                "description": "no_database: the database shell of a site without one",
                "content": {"application/json": {"schema": ERROR}},
            },
        },
    }
}
