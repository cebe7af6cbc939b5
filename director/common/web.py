"""Small helpers for the components' Klein apps."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest


def render_json(request: IRequest, payload: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode("utf-8")


def healthz(request: IRequest, component: str) -> bytes:
    """The public liveness answer: says the component is up and nothing else."""
    request.setHeader(b"cache-control", b"no-store")
    return render_json(request, {"status": "ok", "component": component})
