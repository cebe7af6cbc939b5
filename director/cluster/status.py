"""
C{director cluster status}: the cluster's nodes (from its state file, when there is one),
the pool's orchestrators (from the manager's store) with whether each answers the manager's
signature now, and the router. What an operator looks at first when a node is in doubt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool

from director.clients import OrchestratorClient
from director.common.client import ComponentCallError, ComponentClient
from director.common.config import Config
from director.common.service import component_signer
from director.manager.models import Orchestrator
from director.manager.orchestrator_pool import health_problem


@dataclass(frozen=True)
class NodeLine:
    number: int
    hostname: str
    address: str
    engine_running: bool
    orchestrator_running: bool


def nodes_from_state(state_file: Path) -> list[NodeLine]:
    """The nodes a cluster's state file records, and whether their processes still run."""
    from director.cluster.processes import State, _alive

    state = State.load(state_file)
    layout = state.layout

    def running(key: str) -> bool:
        pid = state.pid(key)
        return pid is not None and _alive(pid)

    return [
        NodeLine(
            n,
            layout.hostname(n),
            layout.address(n),
            running(f"dockerd-{n}"),
            running(f"orchestrator-{n}"),
        )
        for n in layout.numbers
    ]


async def health(
    reactor: Any, config: Config, records: list[Orchestrator], timeout: float
) -> dict[str, str]:
    """
    Each orchestrator's answer to the manager's signed C{GET /v1/health} ("ok", "engine
    down (...)" when the process answers but its Docker engine does not, or the error);
    C{whoami} for an orchestrator older than the route.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=timeout))
    signer = component_signer(reactor, config, "manager")
    found: dict[str, str] = {}
    for record in records:
        client = OrchestratorClient(
            ComponentClient(reactor, signer, "orchestrator", record.url, http, timeout)
        )
        try:
            found[record.name] = await _orchestrator_health(client, timeout)
        except Exception as e:
            found[record.name] = f"down ({e})"
    router = config.router.url
    try:
        d = http.get(f"{router}/healthz")
        d.addTimeout(timeout, reactor)
        response = await d
        found["router"] = "ok" if response.code == 200 else f"HTTP {response.code}"
    except Exception as e:
        found["router"] = f"down ({e!r})"
    await pool.closeCachedConnections()
    return found


async def _orchestrator_health(client: OrchestratorClient, timeout: float) -> str:
    try:
        report = await client.health(timeout=timeout)
    except ComponentCallError as e:
        if e.status != 404:
            raise
        answer = await client.whoami(timeout=timeout)
        return "ok" if answer.get("caller") == "manager" else json.dumps(answer)
    problem = health_problem(report)
    return "ok" if problem is None else f"engine down ({problem})"


def render(
    nodes: list[NodeLine] | None, records: list[Orchestrator], answers: dict[str, str], router: str
) -> list[str]:
    """The lines C{director cluster status} prints."""
    lines: list[str] = []
    if nodes is not None:
        lines.append("nodes:")
        for node in nodes:
            engine = "running" if node.engine_running else "STOPPED"
            orchestrator = "running" if node.orchestrator_running else "STOPPED"
            lines.append(
                f"  node {node.number}  {node.hostname:<16} {node.address:<15} "
                f"engine {engine:<8} orchestrator {orchestrator}"
            )
    lines.append("orchestrators:")
    if not records:
        lines.append("  (none registered yet: the manager registers its own when it starts)")
    for r in records:
        lines.append(
            f"  {r.name:<12} {r.state:<9} {r.sites:>4} site(s)  {answers.get(r.name, '?'):<8} "
            f"{r.url}  sites through {r.nginx}"
        )
    lines.append("routers:")
    lines.append(f"  {router}  {answers.get('router', '?')}")
    return lines
