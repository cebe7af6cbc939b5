"""All four components in one reactor: the single-machine default (`twistd -n director`)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from director.common.config import Config
from director.manager.service import build_service as build_manager
from director.orchestrator.service import build_service as build_orchestrator
from director.router.service import build_service as build_router
from director.shell.service import build_service as build_shell


def build_service(reactor: Any, config: Config) -> MultiService:
    """
    Each component is built exactly as its own plugin builds it; they still call each other
    over HTTP and websockets, so one machine and many share one code path.
    """
    top = MultiService()
    top.setName("director")
    for build in (build_orchestrator, build_router, build_manager, build_shell):
        build(reactor, config).setServiceParent(top)
    return top
