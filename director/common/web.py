"""Small helpers for the components' Klein apps."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.web.iweb import IRequest


def render_json(request: IRequest, payload: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode("utf-8")


def healthz(request: IRequest, component: str) -> bytes:
    """The public liveness answer: says the component is up and nothing else."""
    request.setHeader(b"cache-control", b"no-store")
    return render_json(request, {"status": "ok", "component": component})


def path_after(request: IRequest, prefix: str) -> str:
    """
    What follows C{prefix} (and its slashes) in the request's path, percent-decoded: a
    site-relative file path, exactly as sent ("" when the path does not start with it).

    @raise UnicodeDecodeError: the decoded path is not UTF-8 (each API says so its own way).
    """
    encoded = prefix.encode()
    raw: bytes = request.path
    rest = raw[len(encoded) :].lstrip(b"/") if raw.startswith(encoded) else b""
    return unquote_to_bytes(rest).decode("utf-8")
