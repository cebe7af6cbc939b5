"""
How components call each other: signed HTTP requests (treq) and signed websockets (Autobahn).

Every call carries the caller's signature and a timeout. The connection pool belongs to an
L{HTTPPoolService}, which closes it when the service stops.
"""

from __future__ import annotations

import hashlib
import json as jsonlib
from typing import Any
from typing import Protocol as TypingProtocol
from urllib.parse import urlencode, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import Cooperator
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from director.common.signing import RequestSigner
from director.common.websocket import MAX_MESSAGE_SIZE

DEFAULT_TIMEOUT = 30.0


class ComponentCallError(Exception):
    """Another component answered with an error status; carries its JSON error if any."""

    def __init__(self, url: str, status: int, body: bytes) -> None:
        self.url = url
        self.status = status
        self.body = body
        try:
            payload = jsonlib.loads(body)
            self.code = str(payload.get("error", "error"))
            self.detail = str(payload.get("message", ""))
        except (ValueError, AttributeError):
            self.code, self.detail = "error", body[:200].decode("utf-8", "replace")
        super().__init__(f"{url}: HTTP {status} {self.code}: {self.detail}")


class Caller(TypingProtocol):
    """What code calling another component needs (L{ComponentClient}, or a test fake)."""

    async def json(self, method: str, path: str, **kwargs: Any) -> Any: ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        body_file: Any = None,
        body_digest: str | None = None,
        stream: bool = False,
    ) -> IResponse: ...


class HTTPPoolService(Service):
    """Owns the persistent HTTP connection pool shared by a process's component clients."""

    def __init__(self, reactor: Any, connect_timeout: float = 10.0) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.http = HTTPClient(Agent(reactor, pool=self.pool, connectTimeout=connect_timeout))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.pool.closeCachedConnections()


class ComponentClient:
    """
    Calls one component (C{audience}) at C{base_url} as the component C{signer} names.

    C{http} is a treq L{HTTPClient} (a real one from L{HTTPPoolService}, or C{StubTreq}
    in tests).
    """

    def __init__(
        self,
        clock: IReactorTime,
        signer: RequestSigner,
        audience: str,
        base_url: str,
        http: Any,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._signer = signer
        self._audience = audience
        self._base = base_url.rstrip("/")
        self._http = http
        self._timeout = timeout

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        body_file: Any = None,
        body_digest: str | None = None,
        stream: bool = False,
    ) -> IResponse:
        """
        Send a signed request and return the response, whatever its status; its body is
        not read. A large body comes as C{body_file} (a file at its start) with its
        L{body_digest}, and is streamed from the file, never held whole. With C{stream},
        the response's body is not buffered either: pass it to L{stream_body} at once.
        """
        target = path + ("?" + urlencode(params) if params else "")
        body = data if data is not None else b""
        headers = {}
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
            headers["Content-Type"] = "application/json"
        payload: Any = body if body or method.upper() in ("POST", "PUT", "PATCH") else None
        if body_file is not None:
            if body_digest is None:
                raise ValueError("a streamed body needs its digest")
            headers.update(self._signer.headers(self._audience, method, target, digest=body_digest))
            clock: Any = self._clock
            payload = FileBodyProducer(
                body_file, Cooperator(scheduler=lambda f: clock.callLater(0, f))
            )
        else:
            headers.update(self._signer.headers(self._audience, method, target, body))
        d = self._http.request(
            method,
            self._base + target,
            data=payload,
            headers={k: [v] for k, v in headers.items()},
            unbuffered=stream,
        )
        d.addTimeout(timeout if timeout is not None else self._timeout, self._clock)
        response: IResponse = await d
        return response

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a signed request and decode its JSON answer; an error status raises."""
        timeout = kwargs.get("timeout")
        response = await self.request(method, path, **kwargs)
        d = response.content()  # type: ignore[attr-defined]
        d.addTimeout(timeout if timeout is not None else self._timeout, self._clock)
        body: bytes = await d
        if response.code >= 400:
            raise ComponentCallError(self._base + path, response.code, body)
        return jsonlib.loads(body) if body else None


async def file_digest(clock: Any, stream: Any, chunk: int = 256 * 1024) -> str:
    """
    L{body_digest} of an open file, read from its start in chunks, a few per reactor turn
    (a large upload never blocks the reactor, nor sits in memory); leaves it at its start.
    """
    h = hashlib.sha256()
    stream.seek(0)

    def steps() -> Any:
        while True:
            data = stream.read(chunk)
            if not data:
                return
            h.update(data)
            yield None

    await Cooperator(scheduler=lambda f: clock.callLater(0, f)).coiterate(steps())
    stream.seek(0)
    return h.hexdigest()


class _BodyForwarder(Protocol):
    """
    Writes a response body to a twisted.web request as it arrives. The request's connection
    pauses the body's connection while its client reads slowly (the forwarder is that
    connection's producer), so nothing piles up in between; after C{idle_timeout} seconds
    without data while not paused, the transfer is given up.
    """

    def __init__(self, request: Any, clock: Any, idle_timeout: float) -> None:
        self.request = request
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.done: Deferred[None] = Deferred()
        self.paused = False
        self._idle: Any = None
        self._finished = False

    def connectionMade(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._arm()

    def _arm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if not self.paused and not self._finished:
            self._idle = self.clock.callLater(self.idle_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._idle = None
        self.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        self.request.write(data)
        self._arm()

    # IPushProducer, for the request's connection
    def pauseProducing(self) -> None:
        self.paused = True
        self._arm()
        transport: Any = self.transport
        if transport is not None:
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self._arm()
        transport: Any = self.transport
        if transport is not None:
            transport.resumeProducing()

    def stopProducing(self) -> None:
        transport: Any = self.transport
        if transport is not None and not self._finished:
            transport.stopProducing()

    def connectionLost(self, reason: Any = None) -> None:
        self._finished = True
        self._arm()
        self.request.unregisterProducer()
        if self.done.called:  # the request was cancelled (its client went away)
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


async def stream_body(
    response: IResponse, request: Any, clock: Any, idle_timeout: float = 60.0
) -> None:
    """
    Copy C{response}'s body into the twisted.web C{request} as it arrives, at the pace its
    client reads (a download is never held whole); fails if the transfer breaks off.
    """
    forwarder = _BodyForwarder(request, clock, idle_timeout)
    response.deliverBody(forwarder)
    await forwarder.done


class SignedClientProtocol(WebSocketClientProtocol):
    """
    A websocket client protocol whose C{opened} fires when the handshake completes;
    received messages queue up for L{next_message} unless a subclass overrides C{onMessage}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[SignedClientProtocol] = Deferred()
        self.closed: Deferred[tuple[bool, int | None, str | None]] = Deferred()
        self._messages: DeferredQueue[Any] = DeferredQueue(backlog=1)

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self._messages.put(payload if isBinary else payload.decode("utf-8"))

    async def next_message(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The next message (str for text, bytes for binary); times out after C{timeout}."""
        d = self._messages.get()
        d.addTimeout(timeout, self.factory.reactor)
        return await d

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"websocket closed before opening: {reason}"))
        if not self.closed.called:
            self.closed.callback((wasClean, code, reason))


async def connect_websocket(
    reactor: Any,
    signer: RequestSigner,
    audience: str,
    url: str,
    protocol: type[SignedClientProtocol] = SignedClientProtocol,
    timeout: float = DEFAULT_TIMEOUT,
) -> SignedClientProtocol:
    """
    Open a signed websocket to C{url} (ws:// or wss://) on component C{audience} and return
    the protocol once the handshake is done.
    """
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    headers = signer.headers(audience, "GET", target)
    factory = WebSocketClientFactory(url, headers=headers, reactor=reactor)
    factory.protocol = protocol
    factory.setProtocolOptions(
        openHandshakeTimeout=timeout,
        closeHandshakeTimeout=5,
        maxFramePayloadSize=MAX_MESSAGE_SIZE,
        maxMessagePayloadSize=MAX_MESSAGE_SIZE,
    )
    host = parts.hostname or "127.0.0.1"
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if secure:
        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    d = endpoint.connect(factory)
    d.addTimeout(timeout, reactor)
    proto: SignedClientProtocol = await d
    opened = proto.opened
    opened.addTimeout(timeout, reactor)
    try:
        await opened
    except Exception:
        transport: Any = proto.transport
        if transport is not None:
            transport.abortConnection()
        raise
    return proto
