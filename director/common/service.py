"""
Service plumbing shared by the components: listening on a configured address, loading the
credentials a component needs, and turning start-up errors into one line.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from director.common.config import Config
from director.common.errors import StartupError
from director.common.keys import load_private_key, load_public_keys
from director.common.signing import RequestSigner, RequestVerifier


class ListeningService(StreamServerEndpointService):
    """
    Listens on C{host}:C{port} for C{what} (a person-readable name such as "manager
    HTTP"); a port that cannot be bound stops start-up naming the config key to change.
    """

    log = Logger()

    def __init__(
        self, reactor: Any, what: str, host: str, port: int, factory: Any, config_key: str
    ) -> None:
        try:
            v6 = ipaddress.ip_address(host).version == 6
        except ValueError:
            v6 = False
        endpoint: Any = (TCP6ServerEndpoint if v6 else TCP4ServerEndpoint)(
            reactor, port, interface=host
        )
        super().__init__(endpoint, factory)
        self._raiseSynchronously = True
        self.what = what
        self.host = host
        self.requested_port = port
        self.config_key = config_key
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise StartupError(
                f"{self.what}: cannot listen on {self.host}:{self.requested_port}: {reason} "
                f"(stop whatever uses it, or set {self.config_key} in the config)"
            ) from None
        assert self._waitingForPort is not None
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        address: Any = port.getHost()
        self.log.info(
            "{what} listening on {host}:{port}",
            what=self.what,
            host=address.host,
            port=address.port,
        )
        return port


def component_signer(reactor: Any, config: Config, component: str) -> RequestSigner:
    """The identity C{component} presents when it calls others."""
    return RequestSigner(component, load_private_key(config.auth.keys_dir, component), reactor)


def component_verifier(reactor: Any, config: Config, component: str) -> RequestVerifier:
    """Checks signed requests arriving at C{component}."""
    keys = load_public_keys(config.auth.keys_dir)
    if not keys:
        raise StartupError(
            f"{config.auth.keys_dir}: no component public keys (*.pub) found "
            "(run `director init`, or set auth.keys_dir)"
        )
    return RequestVerifier(component, keys, reactor, config.auth.max_clock_skew)


class ExitOnStartupError(MultiService):
    """
    The top service under twistd: a L{StartupError} while binding ports prints its one-line
    message and exits with status 1 instead of a traceback.
    """

    def __init__(self, child: IService) -> None:
        super().__init__()
        child.setServiceParent(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except StartupError as e:
            sys.stderr.write(f"director: {e}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None


def guarded_http_service(
    reactor: Any, config: Config, component: str, what: str, resource: Any
) -> ListeningService:
    """
    Serve C{resource} for C{component} on the host and port its config section names,
    behind the access check (L{ComponentGuard}).
    """
    from twisted.web.server import Site

    from director.common.guard import ComponentGuard

    section = getattr(config, component)
    site = Site(ComponentGuard(component, resource, component_verifier(reactor, config, component)))
    site.noisy = False
    return ListeningService(
        reactor, f"{component} {what}", section.host, section.port, site, f"{component}.port"
    )
