"""
The resource every component's HTTP and websocket traffic passes through first.

It applies the access table (L{director.common.access}) to every request: protected paths
need a request signed by a component the table allows, checked before the wrapped
application sees anything. Wrapping the whole resource, rather than decorating routes,
means a route added later cannot forget the check.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from director.common.access import BadPath, normalized_path, rule_for
from director.common.client import file_digest
from director.common.signing import AuthenticationError, RequestVerifier, stream_digest

# Bodies up to this size are hashed at once; larger ones (spooled uploads) cooperatively.
HASH_INLINE_UP_TO = 1024 * 1024

CALLER_ATTRIBUTE = "director_caller"


def caller_of(request: IRequest) -> str | None:
    """The authenticated component that sent C{request}, if it was a signed request."""
    return getattr(request, CALLER_ATTRIBUTE, None)


def render_error(request: IRequest, status: int, code: str, message: str) -> bytes:
    """Set C{status} and return the JSON error body every Director API uses."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps({"error": code, "message": message}).encode("utf-8")


@implementer(IResource)
class ComponentGuard:
    """Wraps C{inner}, the component C{target}'s resource, with the access check."""

    isLeaf = True
    log = Logger()

    def __init__(self, target: str, inner: IResource, verifier: RequestVerifier) -> None:
        self._target = target
        self._inner = inner
        self._verifier = verifier

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        # isLeaf: twisted.web never traverses below this resource.
        raise NotImplementedError()

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError()

    def render(self, request: Any) -> Any:
        uri = request.uri.decode("latin-1")
        peer = getattr(request.getClientAddress(), "host", "?")
        try:
            path = normalized_path(uri)
        except BadPath as e:
            return render_error(request, 400, "bad_path", str(e))
        rule = rule_for(self._target, path)
        if rule is None:
            return self._inner.render(request)
        # The body (an upload may be large; twisted.web spools it to a file) is hashed in
        # chunks, never read into memory whole; a large one a few chunks per reactor turn.
        content = request.content
        if content is None:
            return self._checked(request, uri, path, rule, peer, None)
        content.seek(0, io.SEEK_END)
        large = content.tell() > HASH_INLINE_UP_TO
        content.seek(0)
        if not large:
            digest = stream_digest(content)
            content.seek(0)
            return self._checked(request, uri, path, rule, peer, digest)
        d = Deferred.fromCoroutine(file_digest(self._verifier.clock, content))
        d.addCallback(lambda digest: self._checked(request, uri, path, rule, peer, digest))
        d.addCallback(_finish_render, request)
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _failed(self, failure: Any, request: Any) -> None:
        self.log.failure("checking a signed request", failure)
        if not request.finished and not request._disconnected:
            request.write(
                render_error(request, 500, "internal", "the request could not be checked")
            )
            request.finish()

    def _checked(
        self, request: Any, uri: str, path: str, rule: Any, peer: str, digest: str | None
    ) -> Any:
        """Check the signature (C{digest} is the body's) and the table; then render."""
        headers = {
            k.decode("latin-1"): v[-1].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        # Header names are case-insensitive: look them up the way the signer wrote them.
        headers = _TitleCaseHeaders(headers)
        try:
            caller = self._verifier.verify(
                request.method.decode("latin-1"), uri, headers, b"", digest_of_body=digest
            )
        except AuthenticationError as e:
            self.log.warn(
                "refused {method} {path} on {target} from {peer}: {code} ({message})",
                method=request.method.decode("latin-1"),
                path=path,
                target=self._target,
                peer=peer,
                code=e.code,
                message=e.message,
            )
            request.setHeader(b"www-authenticate", b"Director-Signature")
            return render_error(request, 401, e.code, e.message)
        if caller not in rule.callers:
            self.log.warn(
                "refused {method} {path} on {target}: {caller} may not call it",
                method=request.method.decode("latin-1"),
                path=path,
                target=self._target,
                caller=caller,
            )
            return render_error(
                request, 403, "forbidden", f"{caller} may not call {path} on {self._target}"
            )
        setattr(request, CALLER_ATTRIBUTE, caller)
        return self._inner.render(request)


def _finish_render(result: Any, request: Any) -> None:
    """Write what a resource's C{render} returned, as twisted.web would have."""
    if result is NOT_DONE_YET or request.finished or request._disconnected:
        return
    request.write(result)
    request.finish()


class _TitleCaseHeaders(dict[str, str]):
    """A header mapping whose lookups ignore case."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())
