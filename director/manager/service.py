"""Composition root of the manager."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from director.common.config import Config
from director.common.service import guarded_http_service
from director.manager.web import ManagerWeb


def build_service(reactor: Any, config: Config) -> MultiService:
    """The manager: dashboard, API and websockets on manager.host:port."""
    top = MultiService()
    top.setName("manager")
    guarded_http_service(
        reactor, config, "manager", "web", ManagerWeb().app.resource()
    ).setServiceParent(top)
    return top
