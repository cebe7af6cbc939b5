"""
Idle browser websockets on one manager process: resident memory with N connections to
/ws/events (target: 2,000 under 1 GB).

    .venv/bin/python bench/manager_websockets.py [--connections 2000]
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _stack import Stack
from sqlalchemy import select

from director.common.config import load_config
from director.common.threads import InlineRunner
from director.manager import schema as t
from director.manager.service import database_url
from director.manager.store import Store, make_engine


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def session_cookie(stack: Stack) -> str:
    engine = make_engine(database_url(load_config(stack.config)))
    store = Store(engine, InlineRunner())
    with engine.begin() as conn:
        admin = conn.execute(select(t.users.c.id).where(t.users.c.username == "admin")).scalar()
    out: list[Any] = []
    assert admin is not None
    store.create_session(int(admin), timedelta(hours=1)).addCallback(out.append)
    return str(out[0][0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    stack = Stack()
    try:
        stack.start(("manager",))
        manager = stack.processes[0]
        cookie = session_cookie(stack)
        base = f"127.0.0.1:{stack.ports['manager']}"
        before = rss_mb(manager.pid)

        from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.internet.task import react

        opened: list[Any] = []

        class Idle(WebSocketClientProtocol):
            def onOpen(self) -> None:
                self.factory.ready.callback(self)

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                if not self.factory.ready.called:
                    self.factory.ready.errback(ConnectionError(f"closed: {code} {reason}"))

        async def open_one() -> None:
            factory: Any = WebSocketClientFactory(
                f"ws://{base}/ws/events",
                headers={"Cookie": f"director_session={cookie}", "Origin": f"http://{base}"},
            )
            factory.protocol = Idle
            factory.ready = Deferred()
            await TCP4ClientEndpoint(reactor, "127.0.0.1", stack.ports["manager"]).connect(factory)
            opened.append(await factory.ready)

        async def run(_: Any) -> None:
            gate = DeferredSemaphore(50)
            await gatherResults(
                [
                    gate.run(lambda: Deferred.fromCoroutine(open_one()))
                    for _ in range(args.connections)
                ],
                consumeErrors=True,
            )
            from twisted.internet.task import deferLater

            await deferLater(reactor, 2, lambda: None)
            after = rss_mb(manager.pid)
            print(
                f"{len(opened)} idle browser websockets on one manager: RSS {after:.0f} MB "
                f"(before {before:.0f} MB, {(after - before) * 1024 / len(opened):.1f} KB "
                "per connection)"
            )
            for proto in opened:
                proto.sendClose(1000)
            await deferLater(reactor, 1, lambda: None)

        react(lambda r: Deferred.fromCoroutine(run(r)))
    finally:
        stack.close()


if __name__ == "__main__":
    main()
