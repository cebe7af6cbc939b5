"""
Running one command of a site's scheduled task: a docker exec in the site's terminal
container (the site's image, files, user, environment and limits), with a time limit and a
bounded record of its output. The exec's stream is adopted into the reactor (no thread
waits on it); past the time limit the command's process group is ended (HUP and TERM, then
KILL), and the answer says it timed out.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from director.orchestrator.docker_gateway import IDockerGateway
from director.orchestrator.streams import ExecSession

log = Logger()

# A docker exec's process leads a process group of its own, and the inner sh takes its place
# (exec): the time limit ends the group, so what the command started ends too.
WRAPPER = 'umask 022; exec sh -c "$1"'


class NotServed(Exception):
    """The site is disabled or not served: its tasks do not run."""


#: Seconds to wait for the output to end once the command was stopped.
STOP_GRACE = 5.0


class BoundedOutput:
    """The first and last C{limit}/2 bytes of a stream, and whether anything was left out."""

    def __init__(self, limit: int) -> None:
        self._half = max(limit // 2, 1)
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self._half - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > self._half:
                del self._tail[: len(self._tail) - self._half]

    @property
    def truncated(self) -> bool:
        return self.total > len(self._head) + len(self._tail)

    def text(self) -> str:
        if not self.truncated:
            return (bytes(self._head) + bytes(self._tail)).decode("utf-8", "replace")
        left_out = self.total - len(self._head) - len(self._tail)
        return (
            bytes(self._head).decode("utf-8", "replace")
            + f"\n[... {left_out} bytes of output left out ...]\n"
            + bytes(self._tail).decode("utf-8", "replace")
        )


async def run_command(
    reactor: Any,
    docker: IDockerGateway,
    container: str,
    command: str,
    env: dict[str, str],
    user: str,
    timeout: float,
    max_output: int,
) -> dict[str, Any]:
    """
    Run C{command} with C{sh -c} in C{container}; at most C{timeout} seconds. Answers
    C{{"exit_code", "timed_out", "output", "truncated", "duration"}}.
    """
    started = reactor.seconds()
    output = BoundedOutput(max_output)
    ended: Deferred[None] = Deferred()

    def finished() -> None:
        if not ended.called:
            ended.callback(None)

    exec_id, sock = await docker.exec_start(
        container, ["sh", "-c", WRAPPER, "sh", command], env, user, "/site", False
    )
    session = ExecSession(reactor, sock, lambda _stream, data: output.add(data), finished, False)
    session.close_input()  # nothing on stdin: a command that reads it gets EOF
    state = {"timed_out": False}

    def stop() -> None:
        state["timed_out"] = True
        d = docker.exec_kill(exec_id)
        d.addErrback(lambda f: log.failure("stopping a task past its time limit", f))
        # whatever still holds the output open (a daemon it left behind) is not waited for
        reactor.callLater(STOP_GRACE, lambda: finished() if not ended.called else None)

    timer = reactor.callLater(timeout, stop)
    try:
        await ended
    finally:
        if timer.active():
            timer.cancel()
        session.close()
    code = None
    for _ in range(40):
        code = await docker.exec_exit_code(exec_id)
        if code is not None:
            break
        await deferLater(reactor, 0.05, lambda: None)
    return {
        "exit_code": code,
        "timed_out": state["timed_out"],
        "output": output.text(),
        "truncated": output.truncated,
        "duration": round(reactor.seconds() - started, 3),
    }
