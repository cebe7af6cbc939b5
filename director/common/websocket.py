"""Serving websockets from Klein routes (the resource takes over the HTTP connection)."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

# The largest websocket message (and frame) any Director websocket accepts; a larger one
# fails the connection with close code 1009 before it is buffered.
MAX_MESSAGE_SIZE = 1024 * 1024


def websocket_resource(protocol: type[WebSocketServerProtocol], **attributes: Any) -> Any:
    """
    A resource that upgrades the request to a websocket served by C{protocol}; each keyword
    becomes an attribute of the factory, where the protocol finds it as C{self.factory.X}.
    """
    factory = WebSocketServerFactory()
    factory.protocol = protocol
    factory.setProtocolOptions(
        autoPingInterval=30,
        autoPingTimeout=30,
        webStatus=False,
        maxFramePayloadSize=MAX_MESSAGE_SIZE,
        maxMessagePayloadSize=MAX_MESSAGE_SIZE,
        # Say why (1009 for a message too big) before closing, rather than just dropping.
        failByDrop=False,
    )
    for name, value in attributes.items():
        setattr(factory, name, value)
    return WebSocketResource(factory)


class WhoAmIProtocol(WebSocketServerProtocol):
    """Sends who the server thinks the (authenticated) caller is, then closes: for checks."""

    def onOpen(self) -> None:
        message = {"component": self.factory.component, "caller": self.factory.caller}
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)
        self.sendClose(1000)
