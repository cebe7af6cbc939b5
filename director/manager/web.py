"""
The manager's web root: /healthz, the REST API under /api/, /shell-server/ for the shell
server, and the dashboard for everything else. Each part is its own Klein app on the object
that owns its state; this resource only picks one by path prefix.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from director.common.web import healthz


class ManagerWeb:
    """The manager's /healthz."""

    app = Klein()

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return healthz(request, "manager")


@implementer(IResource)
class PrefixDispatch:
    """Hands each request, whole, to the resource registered for the longest matching prefix."""

    isLeaf = True

    def __init__(self, default: IResource, **prefixes: IResource) -> None:
        self._default = default
        self._prefixes = sorted(
            ((p.replace("_", "-").encode(), r) for p, r in prefixes.items()),
            key=lambda item: -len(item[0]),
        )

    def add(self, prefix: bytes, resource: IResource) -> None:
        self._prefixes = sorted([*self._prefixes, (prefix, resource)], key=lambda i: -len(i[0]))

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        raise NotImplementedError()

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError()

    def render(self, request: Any) -> Any:
        path: bytes = request.path
        for prefix, resource in self._prefixes:
            if path.startswith(prefix):
                return resource.render(request)
        return self._default.render(request)
