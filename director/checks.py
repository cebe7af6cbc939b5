"""
`director check`: is each component up, and does it accept this machine's credentials?

Uses the same signed clients the components use, so a passing check means the keys and
the access table work end to end.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.web.client import Agent, HTTPConnectionPool

from director.clients import OrchestratorClient, RouterClient
from director.common.client import ComponentClient, connect_websocket
from director.common.config import Config, router_urls
from director.common.errors import StartupError
from director.common.service import component_signer


class _Banner(Protocol):
    def __init__(self) -> None:
        from twisted.internet.defer import Deferred

        self.received: Deferred[bytes] = Deferred()
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" in self._buffer and not self.received.called:
            self.received.callback(self._buffer.split(b"\n", 1)[0].strip())
            self.transport.loseConnection()  # type: ignore[union-attr]


async def ssh_banner(reactor: Any, host: str, port: int, timeout: float) -> bytes:
    """The identification line an SSH server sends first."""
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    d = endpoint.connect(Factory.forProtocol(_Banner))
    d.addTimeout(timeout, reactor)
    proto: Any = await d
    proto.received.addTimeout(timeout, reactor)
    return await proto.received


async def run_checks(
    reactor: Any, config: Config, results: list[tuple[str, bool, str]], timeout: float
) -> None:
    """Append (check, passed, detail) for every component to C{results}."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=timeout))
    try:
        signer = component_signer(reactor, config, "manager")
    except StartupError as e:
        signer = None
        results.append(("manager credentials", False, str(e)))

    # Every router the manager drives (router.urls), each named when there are several.
    routers = router_urls(config.router.urls, config.router.url)
    named = [("router" if len(routers) == 1 else f"router {n}", u) for n, u in routers]
    targets = [("manager", config.manager.url), ("orchestrator", config.orchestrator.url)]
    for component, url in [*targets, *named]:
        try:
            d = http.get(f"{url}/healthz")
            d.addTimeout(timeout, reactor)
            response = await d
            body = await response.json()
            ok = response.code == 200 and body.get("status") == "ok"
            results.append((f"{component} {url}/healthz", ok, f"HTTP {response.code}"))
        except Exception as e:
            results.append((f"{component} {url}/healthz", False, repr(e)))

    if signer is not None:
        for component, url in [targets[1], *named]:
            kind = component.split()[0]
            caller = ComponentClient(reactor, signer, kind, url, http, timeout)
            client = OrchestratorClient(caller) if kind == "orchestrator" else RouterClient(caller)
            try:
                answer = await client.whoami()
                ok = answer.get("caller") == "manager"
                results.append((f"{component} accepts the manager's signature", ok, str(answer)))
            except Exception as e:
                results.append((f"{component} accepts the manager's signature", False, str(e)))
        ws_url = OrchestratorClient.websocket_url(
            config.orchestrator.url, OrchestratorClient.whoami_path()
        )
        try:
            proto = await connect_websocket(
                reactor, signer, "orchestrator", ws_url, timeout=timeout
            )
            message = await proto.next_message(timeout)
            ok = json.loads(message).get("caller") == "manager"
            results.append(("orchestrator websocket", ok, message))
        except Exception as e:
            results.append(("orchestrator websocket", False, repr(e)))

    host = urlsplit(f"ssh://{config.shell.host}").hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # noqa: S104
        host = "127.0.0.1"
    try:
        line = await ssh_banner(reactor, host, config.shell.port, timeout)
        results.append(
            (
                f"shell ssh {host}:{config.shell.port}",
                line.startswith(b"SSH-2.0-"),
                line.decode("ascii", "replace"),
            )
        )
    except Exception as e:
        results.append((f"shell ssh {host}:{config.shell.port}", False, repr(e)))
    await pool.closeCachedConnections()
