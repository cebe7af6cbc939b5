"""Composition root of the orchestrator."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from director.common.config import Config
from director.common.service import guarded_http_service
from director.orchestrator.web import OrchestratorAPI


def build_service(reactor: Any, config: Config) -> MultiService:
    """The orchestrator: its guarded API and websockets on orchestrator.host:port."""
    top = MultiService()
    top.setName("orchestrator")
    guarded_http_service(
        reactor, config, "orchestrator", "API", OrchestratorAPI().app.resource()
    ).setServiceParent(top)
    return top
