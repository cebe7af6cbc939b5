"""
Whether this orchestrator's Docker engine can run its sites now (C{GET /v1/health}): the
local engine answers a ping, its swarm node is active, and the swarm manager sees the node
ready. An orchestrator process that answers while its engine does not is no use to the
manager: it places no site there and tells the sites' users their server is unavailable.

L{probe_engine} asks (blocking, in the docker pool, with clients of a short timeout of their
own so that a hung engine holds a thread for seconds, not minutes); L{EngineHealth} bounds
the wait on the reactor and shares one probe between callers that ask at the same time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.logger import Logger

#: How long one call of a probe may take (each of ping, info and the node's inspection).
PROBE_CALL_TIMEOUT = 3.0
#: How long the health route waits for a probe before it says the engine does not answer.
PROBE_TIMEOUT = 4.0


def _short(e: BaseException) -> str:
    text = str(getattr(e, "explanation", None) or e) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def engine_report(
    engine_error: str | None,
    version: str | None = None,
    node: str | None = None,
    local_state: str | None = None,
    node_state: str | None = None,
    availability: str | None = None,
    swarm_error: str | None = None,
) -> dict[str, Any]:
    """
    The health route's answer. Healthy: the engine answers, its swarm node is active, and
    the swarm manager answered that the node is ready (a drained node still runs its
    sites, so availability is reported, not judged).
    """
    healthy = (
        engine_error is None
        and swarm_error is None
        and local_state == "active"
        and node_state == "ready"
    )
    return {
        "component": "orchestrator",
        "healthy": healthy,
        "engine": {"ok": engine_error is None, "version": version, "error": engine_error},
        "swarm": {
            "node": node,
            "local_state": local_state,
            "state": node_state,
            "availability": availability,
            "error": swarm_error,
        },
    }


def probe_engine(local: Any, manager: Any, node: str = "") -> dict[str, Any]:
    """
    (Blocking.) L{engine_report} of the local engine C{local} and the swarm manager's
    C{manager} (docker SDK low-level clients; the same one on a single machine). C{node}:
    the swarm node's hostname when configured (else the engine's own name).
    """
    try:
        local.ping()
        info = local.info()
    except Exception as e:
        return engine_report(f"the Docker engine does not answer: {_short(e)}", node=node or None)
    swarm = info.get("Swarm") or {}
    name = node or str(info.get("Name") or "") or None
    local_state = swarm.get("LocalNodeState") or None
    version = str(info.get("ServerVersion") or "") or None
    node_id = swarm.get("NodeID") or ""
    if local_state != "active" or not node_id:
        inactive = f"the engine's swarm node is {local_state or 'not in a swarm'}"
        return engine_report(None, version, name, local_state, swarm_error=inactive)
    try:
        found = manager.inspect_node(node_id)
    except Exception as e:
        error = f"the swarm manager does not answer: {_short(e)}"
        return engine_report(None, version, name, local_state, swarm_error=error)
    status = found.get("Status") or {}
    state = status.get("State") or None
    availability = (found.get("Spec") or {}).get("Availability") or None
    seen = None if state == "ready" else f"the swarm manager sees the node {state}"
    return engine_report(None, version, name, local_state, state, availability, seen)


class EngineHealth:
    """
    The engine's health for the route: C{probe} (a Deferred of an L{engine_report}, run in
    the docker pool) waited for at most C{timeout} seconds on C{reactor}; callers that ask
    while a probe is under way share it.
    """

    log = Logger()

    def __init__(
        self, reactor: Any, probe: Callable[[], Deferred[dict[str, Any]]], timeout: float
    ) -> None:
        self._reactor = reactor
        self._probe = probe
        self._timeout = timeout
        self._waiting: list[Deferred[dict[str, Any]]] | None = None

    def check(self) -> Deferred[dict[str, Any]]:
        mine: Deferred[dict[str, Any]] = Deferred()
        if self._waiting is not None:
            self._waiting.append(mine)
            return mine
        self._waiting = [mine]
        d = self._probe()
        d.addTimeout(self._timeout, self._reactor)
        d.addErrback(self._failed)
        d.addCallback(self._answer)
        return mine

    def _failed(self, failure: Any) -> dict[str, Any]:
        if failure.check(TimeoutError):
            return engine_report(f"the Docker engine did not answer within {self._timeout:g} s")
        self.log.failure("probing the Docker engine", failure)
        return engine_report(f"the Docker engine could not be asked: {_short(failure.value)}")

    def _answer(self, report: dict[str, Any]) -> None:
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.callback(report)


class EngineProbe:
    """
    (Blocking, callable.) L{probe_engine} with clients of their own, made on first use by
    C{make_local} and C{make_manager} (None: the swarm manager is the local engine).
    """

    def __init__(
        self,
        make_local: Callable[[], Any],
        make_manager: Callable[[], Any] | None = None,
        node: str = "",
    ) -> None:
        self._make_local = make_local
        self._make_manager = make_manager
        self._node = node
        self._local: Any = None
        self._manager: Any = None

    def __call__(self) -> dict[str, Any]:
        if self._local is None:
            self._local = self._make_local()
        manager = self._local
        if self._make_manager is not None:
            if self._manager is None:
                self._manager = self._make_manager()
            manager = self._manager
        return probe_engine(self._local, manager, self._node)
