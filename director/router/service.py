"""Composition root of the router."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from director.common.config import Config
from director.common.service import guarded_http_service
from director.router.web import RouterAPI


def build_service(reactor: Any, config: Config) -> MultiService:
    """The router: its guarded API on router.host:port."""
    top = MultiService()
    top.setName("router")
    guarded_http_service(
        reactor, config, "router", "API", RouterAPI().app.resource()
    ).setServiceParent(top)
    return top
