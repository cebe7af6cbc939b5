"""Background loops (schedules, pollers) that run exactly while their daemon does."""

from __future__ import annotations

from typing import Protocol

from twisted.application.service import Service


class Loop(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class LoopService(Service):
    """Starts C{loop} when the daemon starts and stops it when the daemon stops."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop

    def startService(self) -> None:
        super().startService()
        self.loop.start()

    def stopService(self) -> None:
        super().stopService()
        self.loop.stop()
