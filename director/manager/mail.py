"""
E-mail notifications (site requests) through an SMTP server from the config. Sending never
blocks a request: failures are logged, and with no server configured nothing is sent.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger()


class Mailer(Protocol):
    def notify(self, to: list[str], subject: str, body: str) -> None: ...


class NullMailer:
    """No SMTP server configured: notifications are only logged."""

    def notify(self, to: list[str], subject: str, body: str) -> None:
        log.info("no SMTP server configured; not mailing {to}: {subject}", to=to, subject=subject)


class SMTPMailer:
    def __init__(
        self, reactor: Any, host: str, port: int, sender: str, timeout: float = 30
    ) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout = timeout
        self.sent: list[Deferred[Any]] = []  # the last few sends, for tests and shutdown

    def message(self, to: list[str], subject: str, body: str) -> bytes:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message.set_content(body)
        return message.as_bytes()

    def notify(self, to: list[str], subject: str, body: str) -> None:
        recipients = [address for address in to if address and "@" in address]
        if not recipients:
            return
        # twisted.mail.smtp imports the global reactor: import it only when mailing.
        from twisted.mail.smtp import sendmail

        d = sendmail(
            self._host,
            self._sender,
            recipients,
            self.message(recipients, subject, body),
            port=self._port,
            reactor=self._reactor,
        )
        d.addTimeout(self._timeout, self._reactor)
        d.addErrback(lambda f: log.failure("sending mail to {to} failed", f, to=recipients))
        self.sent = [*self.sent[-9:], d]
