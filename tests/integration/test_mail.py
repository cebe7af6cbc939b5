"""Notifications really go out over SMTP, to a local server that records what it receives."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from services import free_port
from twisted.internet.defer import Deferred
from zope.interface import implementer


def recording_smtp_server(
    reactor: Any, port: int, received: list[tuple[bytes, list[str], bytes]]
) -> Any:
    from twisted.mail import smtp

    @implementer(smtp.IMessage)
    class Message:
        def __init__(self, sender: bytes, recipients: list[str]) -> None:
            self.sender, self.recipients = sender, recipients
            self.lines: list[bytes] = []

        def lineReceived(self, line: bytes) -> None:
            self.lines.append(line)

        def eomReceived(self) -> Deferred[None]:
            received.append((self.sender, self.recipients, b"\n".join(self.lines)))
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d

        def connectionLost(self) -> None:
            pass

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
            return b"Received: by the test server"

        def validateFrom(self, helo: Any, origin: Any) -> Any:
            self.sender = bytes(origin)
            return origin

        def validateTo(self, user: Any) -> Any:
            recipients = getattr(self, "recipients", [])
            recipients.append(str(user.dest))
            self.recipients = recipients
            return lambda: Message(self.sender, list(recipients))

    class Factory(smtp.SMTPFactory):
        def buildProtocol(self, addr: Any) -> Any:
            protocol = smtp.ESMTP()
            protocol.delivery = Delivery()
            protocol.factory = self
            return protocol

    return reactor.listenTCP(port, Factory(), interface="127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_notification_is_delivered_over_smtp() -> None:
    from twisted.internet import reactor

    from director.manager.mail import SMTPMailer

    received: list[tuple[bytes, list[str], bytes]] = []
    port = free_port()
    listening = recording_smtp_server(reactor, port, received)
    try:
        mailer = SMTPMailer(reactor, "127.0.0.1", port, "director@school.test", timeout=10)
        mailer.notify(
            ["teacher@school.test", "not-an-address"],
            "Site request: robotics",
            "A student asks for a site.",
        )
        await mailer.sent[-1]
    finally:
        await listening.stopListening()
    assert len(received) == 1
    sender, recipients, body = received[0]
    assert sender == b"director@school.test"
    assert recipients == ["teacher@school.test"]
    assert b"Subject: Site request: robotics" in body
    assert b"A student asks for a site." in body
