"""
C{director cluster status}: the cluster's nodes (from its state file, when there is one),
the pool's orchestrators (from the manager's store) with whether each answers the manager's
signature now, the managers (those the routers send the dashboard to) and the routers (the
managers' pool), each up or down. What an operator looks at first when a part is in doubt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def front_door(config: Config) -> tuple[list[str], list[tuple[str, str]]]:
    """
    The managers' URLs (C{router.manager_upstreams}, as the routers reach them) and the
    routers (name, URL) of C{router.urls}: the parts of the front door to look at.
    """
    from director.common.config_checks import router_urls
    from director.router.dashboard_front import manager_upstreams

    managers = manager_upstreams(config.router.manager_upstreams, config.manager.url)
    return [f"http://{m}" for m in managers], router_urls(config.router.urls, config.router.url)


async def health(
    reactor: Any,
    config: Config,
    records: list[Orchestrator],
    timeout: float,
    managers: Sequence[str] = (),
    routers: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """
    Each orchestrator's answer to the manager's signed C{GET /v1/health} ("ok", "engine
    down (...)" when the process answers but its Docker engine does not, or the error);
    C{whoami} for an orchestrator older than the route. Each manager's sign-in page and
    each router's C{/healthz} (keyed by URL): "ok", or "down (...)".
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
    checks = [(f"{m}/login", m) for m in managers]
    checks += [(f"{url}/healthz", url) for _, url in routers]
    for url, key in checks:
        try:
            d = http.get(url)
            d.addTimeout(timeout, reactor)
            response = await d
            await response.text()
            found[key] = "ok" if response.code == 200 else f"down (HTTP {response.code})"
        except Exception as e:
            found[key] = f"down ({e!r})"
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
    nodes: list[NodeLine] | None,
    records: list[Orchestrator],
    answers: dict[str, str],
    managers: Sequence[str],
    routers: Sequence[tuple[str, str]],
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
    lines.append("managers:")
    lines += [f"  {url:<28} {_up(answers.get(url, '?'))}" for url in managers]
    lines.append("routers:")
    lines += [f"  {name:<4} {url:<28} {_up(answers.get(url, '?'))}" for name, url in routers]
    return lines


def _up(answer: str) -> str:
    """C{up} for an "ok", else C{DOWN} and why."""
    return "up" if answer == "ok" else f"DOWN {answer.removeprefix('down ')}"
