"""
Who a request's client is, and whether it came over HTTPS, when proxies may stand in front
of the manager: their X-Forwarded-For and X-Forwarded-Proto count only when the peer is one
of the configured trusted proxies. Also the cookie names that depend on it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

# Over HTTPS every cookie gets this prefix: the browser then only accepts it if it is
# Secure, for this exact host (no Domain) and path /, so no sibling host (a site under the
# same parent domain) can plant or overwrite one.
HOST_PREFIX = b"__Host-"


class Proxies:
    """
    Which peers are proxies whose X-Forwarded-For / X-Forwarded-Proto are believed, and so
    who the client of a request is and whether it came over HTTPS. A header from any other
    peer is ignored: anyone can send one.
    """

    def __init__(self, networks: Iterable[str] = (), https_url: bool = False) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._https_url = https_url

    @classmethod
    def from_config(cls, trusted: str, manager_url: str = "") -> Proxies:
        return cls(
            [i for i in re.split(r"[,\s]+", trusted) if i],
            urlsplit(manager_url).scheme == "https",
        )

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    @staticmethod
    def _peer(request: Any) -> str:
        return str(getattr(request.getClientAddress(), "host", "?"))

    def client(self, request: Any) -> str:
        """
        The client's address: the peer's, or, when the peer is a trusted proxy, the
        right-most X-Forwarded-For entry that is not itself a trusted proxy.
        """
        peer = self._peer(request)
        if not self.trusted(peer):
            return peer
        chain = b",".join(request.requestHeaders.getRawHeaders(b"x-forwarded-for") or [])
        for item in reversed(chain.decode("latin-1").split(",")):
            address = item.strip()
            try:
                ipaddress.ip_address(address)
            except ValueError:
                return peer  # a garbled header: trust nothing in it
            if not self.trusted(address):
                return address
        return peer

    def https(self, request: Any) -> bool:
        """Whether the browser reached us over HTTPS."""
        is_secure = getattr(request, "isSecure", None)  # test doubles may lack it
        if self._https_url or (is_secure is not None and is_secure()):
            return True
        if not self.trusted(self._peer(request)):
            return False
        proto = request.getHeader(b"x-forwarded-proto") or b""
        return proto.split(b",")[0].strip().lower() == b"https"


def cookie_name(request: Any, name: bytes, proxies: Proxies) -> bytes:
    """The name C{name} has on C{request}: with the __Host- prefix over HTTPS."""
    return HOST_PREFIX + name if proxies.https(request) else name


def get_cookie(request: Any, name: bytes, proxies: Proxies) -> bytes | None:
    """A cookie by its base name; over HTTPS only the __Host- one counts."""
    value: bytes | None = request.getCookie(cookie_name(request, name, proxies))
    return value
