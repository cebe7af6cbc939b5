"""
The way a cluster node's image builds reach the Debian mirror: the nodes have no route out,
so an HTTP proxy on the host's hub address forwards their apt requests (the nodes'
orchestrators set it as C{orchestrator.build_proxy}). It forwards only plain-HTTP GET and
HEAD requests to the mirror hosts the images' apt sources name; anything else is refused.

Run as C{python -m director.cluster.mirror ADDRESS PORT} on the host.
"""

from __future__ import annotations

import re
import sys
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import HTTPChannel, HTTPFactory, PotentialDataLoss, Request
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from director.orchestrator.images import SOURCES

log = Logger()

#: the hosts the base images' apt sources name (deb.debian.org)
MIRROR_HOSTS = frozenset(re.findall(r"^deb https?://([^/\s]+)/", SOURCES, re.MULTILINE))
#: seconds to connect to the mirror, and without a byte either way before giving up
CONNECT_TIMEOUT = 30
IDLE_TIMEOUT = 120
#: headers not passed on, either way (hop by hop, the proxy's own, or the body's framing,
#: which the agent has undone and twisted.web redoes)
DROPPED = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
        b"transfer-encoding", b"te", b"trailer", b"upgrade",
    }
)  # fmt: skip


def allowed(method: bytes, uri: bytes) -> str | None:
    """Why a proxied request is refused (None: it may go to the mirror). No I/O."""
    if method not in (b"GET", b"HEAD"):
        return "only GET and HEAD"
    try:
        parts = urlsplit(uri.decode("ascii"))
        port = parts.port
    except (UnicodeDecodeError, ValueError):
        return "not a URL"
    if parts.scheme != "http" or parts.hostname not in MIRROR_HOSTS or port not in (None, 80):
        return f"only http://{'|'.join(sorted(MIRROR_HOSTS))}/"
    return None


def passed_on(headers: Headers) -> Headers:
    """C{headers} without the hop-by-hop ones (L{DROPPED})."""
    kept = Headers()
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in DROPPED:
            kept.setRawHeaders(name, values)
    return kept


class _Relay(Protocol):
    """The mirror's answer's body, written to the proxied request as it comes."""

    def __init__(self, request: MirrorRequest, done: Deferred[None]) -> None:
        self._request = request
        self._done = done

    def dataReceived(self, data: bytes) -> None:
        self._request.touch()
        if not self._request.gone:
            self._request.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if reason is not None and not reason.check(ResponseDone, PotentialDataLoss):
            self._done.errback(reason)
        else:
            self._done.callback(None)


class MirrorRequest(Request):
    """A proxied request: refused unless L{allowed}; else forwarded with time limits."""

    reactor: Any = None
    agent: Any = None

    def process(self) -> None:
        refused = allowed(self.method, self.uri)
        if refused is not None:
            self.setResponseCode(403)
            self.setHeader(b"content-type", b"text/plain")
            self.write(f"refused: {refused}\n".encode())
            self.finish()
            return
        self._idle = self.reactor.callLater(IDLE_TIMEOUT, self._give_up)
        d = Deferred.fromCoroutine(self._forward())
        d.addErrback(self._failed)

    @property
    def gone(self) -> bool:
        return bool(self.finished or self._disconnected)

    def touch(self) -> None:
        if self._idle.active():
            self._idle.reset(IDLE_TIMEOUT)

    def _give_up(self) -> None:
        log.warn("{uri}: no byte from the mirror in {s} s", uri=self.uri, s=IDLE_TIMEOUT)
        if self.channel is not None:
            self.channel.loseConnection()

    async def _forward(self) -> None:
        headers = passed_on(self.requestHeaders)
        headers.removeHeader(b"host")
        response: IResponse = await self.agent.request(self.method, self.uri, headers)
        self.touch()
        log.info("{method} {uri}: {code}", method=self.method, uri=self.uri, code=response.code)
        self.setResponseCode(response.code, response.phrase)
        for name, values in passed_on(response.headers).getAllRawHeaders():
            self.responseHeaders.setRawHeaders(name, values)
        done: Deferred[None] = Deferred()
        response.deliverBody(_Relay(self, done))
        await done
        if self._idle.active():
            self._idle.cancel()
        if not self.gone:
            self.finish()

    def _failed(self, failure: Any) -> None:
        if self._idle.active():
            self._idle.cancel()
        log.warn("{uri}: {why}", uri=self.uri, why=failure.getErrorMessage())
        if self.gone:
            return
        if self.startedWriting:
            self.channel.loseConnection()  # half an answer: the client must see it failed
            return
        self.setResponseCode(502)
        self.write(b"the mirror did not answer\n")
        self.finish()


def listen(reactor: Any, address: str, port: int) -> Any:
    """Proxy on C{address}:C{port}; returns the listening port."""

    class Requests(MirrorRequest):
        pass

    Requests.reactor = reactor
    Requests.agent = Agent(reactor, connectTimeout=CONNECT_TIMEOUT)

    class Channel(HTTPChannel):
        requestFactory = Requests

    factory = HTTPFactory(timeout=IDLE_TIMEOUT, reactor=reactor)
    factory.protocol = Channel  # type: ignore[assignment]
    return reactor.listenTCP(port, factory, interface=address)


def main(argv: list[str]) -> int:
    from twisted.internet import reactor

    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m director.cluster.mirror ADDRESS PORT", file=sys.stderr)
        return 2
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    listen(reactor, argv[0], int(argv[1]))
    print(f"proxying to {', '.join(sorted(MIRROR_HOSTS))} on {argv[0]}:{argv[1]}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
