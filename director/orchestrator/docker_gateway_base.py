"""
What every call of L{director.orchestrator.docker_gateway.DockerGateway} goes through: the
docker SDK clients (the local engine's and the swarm manager's, made on first use) and the
thread pool the blocking calls run in, their errors turned into L{DockerError}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from director.common.threads import Runner
from director.orchestrator.docker_builds import BuildLimits
from director.orchestrator.docker_interface import (
    DockerError,
)
from director.orchestrator.docker_sdk import (
    _default_client,
)
from director.orchestrator.engine_health import PROBE_CALL_TIMEOUT, EngineProbe


class DockerGatewayBase:
    """The gateway's clients and thread pool (see L{DockerGateway} for the two engines)."""

    def __init__(
        self,
        runner: Runner,
        client_factory: Callable[[], Any] | None = None,
        builds: BuildLimits | None = None,
        docker_url: str = "",
        manager_url: str = "",
        node: str = "",
        tls: Any = None,
    ) -> None:
        self._runner = runner
        self._url = docker_url
        #: a docker.tls.TLSConfig for tcp:// engines (None: plain)
        self._tls = tls
        self._factory = client_factory or (lambda: _default_client(base_url=docker_url, tls=tls))
        self._manager_factory = (
            (lambda: _default_client(base_url=manager_url, tls=tls)) if manager_url else None
        )
        # health probes have clients of their own, with a short timeout
        self._probe = EngineProbe(
            client_factory
            or (lambda: _default_client(PROBE_CALL_TIMEOUT, base_url=docker_url, tls=tls)),
            (lambda: _default_client(PROBE_CALL_TIMEOUT, base_url=manager_url, tls=tls))
            if manager_url
            else None,
            node,
        )
        self._client: Any = None
        self._manager: Any = None
        self._node = node
        self._builds = builds or BuildLimits(runner)
        self._build_client: Any = None
        self._default_factory = client_factory is None

    def _c(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def _m(self) -> Any:
        """The swarm manager's client (the local one unless manager_url was given)."""
        if self._manager_factory is None:
            return self._c()
        if self._manager is None:
            self._manager = self._manager_factory()
        return self._manager

    def _node_name(self) -> str:
        """The node site services go to (blocking: asks the local engine once)."""
        if not self._node:
            self._node = str(self._c().info()["Name"])
        return self._node

    def _run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return self._run_on(lambda: (self._c(),), f, *args)

    def _run_manager(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return self._run_on(lambda: (self._m(),), f, *args)

    def _run_both(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """C{f(local, manager, *args)}."""
        return self._run_on(lambda: (self._c(), self._m()), f, *args)

    def _run_on(
        self, clients: Callable[[], tuple[Any, ...]], f: Callable[..., Any], *args: Any
    ) -> Deferred[Any]:
        def call() -> Any:
            import docker.errors

            try:
                return f(*clients(), *args)
            except docker.errors.APIError as e:
                raise DockerError(str(e.explanation or e)) from None
            except docker.errors.DockerException as e:
                raise DockerError(str(e)) from None

        return self._runner.run(call)
