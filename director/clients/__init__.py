"""
Typed clients of the orchestrator's and the router's APIs (one method per route the manager
uses): every path a caller sends to another component is built here and nowhere else. What
both answer alike (whoami, the sites they serve) is L{director.clients.component.ComponentAPI}.
"""

from director.clients.orchestrator import OrchestratorClient
from director.clients.router import RouterClient

__all__ = ["OrchestratorClient", "RouterClient"]
