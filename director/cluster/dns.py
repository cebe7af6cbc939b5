"""
The name server a cluster node's dockerd forwards to: it answers every question with
NXDOMAIN at once. The nodes have no route out, so without it Docker's embedded DNS forwards
unknown names to the host's name server and each lookup stalls for 10 s.

Run as C{python -m director.cluster.dns ADDRESS} inside the node's network namespace.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.names import common, dns, error, server


class NoNames(common.ResolverBase):
    """A resolver that knows no name at all."""

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        return fail(error.DomainError(name))


def listen(reactor: Any, address: str, port: int = 53) -> tuple[Any, Any]:
    """Answer on C{address}:C{port}, UDP and TCP; returns both listening ports."""
    factory = server.DNSServerFactory(clients=[NoNames()])
    factory.noisy = False
    udp = reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface=address)
    tcp = reactor.listenTCP(port, factory, interface=address)
    return udp, tcp


def main(argv: list[str]) -> int:
    from twisted.internet import reactor

    if len(argv) != 1:
        print("usage: python -m director.cluster.dns ADDRESS", file=sys.stderr)
        return 2
    listen(reactor, argv[0])
    print(f"answering NXDOMAIN on {argv[0]}:53", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
