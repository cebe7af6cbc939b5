"""
The web terminal: keystroke echo round trip (target p50 <= 5 ms) and `cat` of 100 MB
through the terminal websocket (target >= 20 MB/s) with the orchestrator's memory bounded.

    .venv/bin/python bench/orchestrator_terminal.py [--keys 300] [--megabytes 100]

Starts its own orchestrator (twistd, child process) and a static site; the terminal is a
TTY `docker exec` of bash in the site's terminal container, reached over the signed
websocket exactly as the manager reaches it (this script runs a Twisted reactor for the
client). Echo: one key per binary frame, the clock stops when the frame carrying its echo
arrives (readline's echo of a plain character); the line is cleared every 40 keys. Cat:
`stty -opost -echo; cat <100 MB file>; echo END` and the clock stops at END; then the same
with a slow client that stops reading for 2 s after every 20 MB, so the orchestrator must
stop reading from Docker rather than buffer. The orchestrator's resident memory (VmRSS) is
sampled every 20 ms; its growth over the idle value is reported.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from orchestrator_common import BenchOrchestrator, median, percentile
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater, react

from director.common.client import SignedClientProtocol, connect_websocket

SITE_ID = 295
CHUNK = b"0123456789abcdef" * 4095 + b"0123456789abcde\n"  # 64 KiB lines


class TerminalClient(SignedClientProtocol):
    """Collects output; whoever waits sets C{waiting} to (needle, Deferred)."""

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.tail = b""
        self.waiting: tuple[bytes, Deferred[float]] | None = None
        self.on_bytes: Any = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            return
        self.received += len(payload)
        self.tail = (self.tail + payload)[-256:]
        if self.on_bytes is not None:
            self.on_bytes(self.received)
        if self.waiting is not None and self.waiting[0] in self.tail:
            _, d = self.waiting
            self.waiting = None
            self.tail = b""
            d.callback(time.perf_counter())

    def expect(self, needle: bytes) -> Deferred[float]:
        d: Deferred[float] = Deferred()
        if needle in self.tail:
            self.tail = b""
            d.callback(time.perf_counter())
        else:
            self.waiting = (needle, d)
        return d


class MemorySampler:
    def __init__(self, reactor: Any, o: BenchOrchestrator) -> None:
        self.o = o
        self.peak = 0
        self.loop = LoopingCall(self.sample)
        self.loop.clock = reactor

    def sample(self) -> None:
        self.peak = max(self.peak, self.o.rss_kb()[0])

    def start(self) -> None:
        self.peak = 0
        self.loop.start(0.02)

    def stop(self) -> int:
        self.loop.stop()
        return self.peak


async def cat(
    reactor: Any, proto: TerminalClient, o: BenchOrchestrator, size: int, slow: bool
) -> tuple[float, int, int]:
    """Seconds for the whole file, bytes received, peak RSS (KiB) while it ran."""
    sampler = MemorySampler(reactor, o)
    paused_at = [0]

    def maybe_pause(received: int) -> None:
        if slow and received - paused_at[0] >= 20 * 1024 * 1024:
            paused_at[0] = received
            transport: Any = proto.transport
            transport.pauseProducing()
            reactor.callLater(2, transport.resumeProducing)

    before = proto.received
    proto.on_bytes = maybe_pause
    paused_at[0] = before
    sampler.start()
    started = time.perf_counter()
    done = proto.expect(b"END-42")
    proto.sendMessage(
        b"stty -opost -echo; cat /site/private/big; stty sane; echo; echo END-$((6*7))\n",
        isBinary=True,
    )
    finished = await done
    peak = sampler.stop()
    proto.on_bytes = None
    return finished - started, proto.received - before, peak


async def run(reactor: Any, keys: int, megabytes: int) -> None:
    o = BenchOrchestrator()
    try:
        o.call("PUT", f"/v1/sites/{SITE_ID}", {"name": "term295", "type": "static"})
        big = o.site_dir(SITE_ID) / "private" / "big"
        with open(big, "wb") as out:
            for _ in range(megabytes * 16):
                out.write(CHUNK)
        size = big.stat().st_size
        url = "ws" + o.url[4:] + f"/ws/sites/{SITE_ID}/terminal"
        proto: Any = await connect_websocket(
            reactor, o.signer, "orchestrator", url, protocol=TerminalClient, timeout=60
        )
        await deferLater(reactor, 1.5, lambda: None)  # the prompt
        idle_rss = o.rss_kb()[0]
        rtts = []
        for i in range(keys):
            if i and i % 40 == 0:
                proto.sendMessage(b"\x15", isBinary=True)  # clear the line
                await deferLater(reactor, 0.05, lambda: None)
                proto.tail = b""
            echoed = proto.expect(b"x")
            sent = time.perf_counter()
            proto.sendMessage(b"x", isBinary=True)
            rtts.append((await echoed) - sent)
        proto.sendMessage(b"\x15", isBinary=True)
        await deferLater(reactor, 0.2, lambda: None)
        fast = await cat(reactor, proto, o, size, slow=False)
        slow = await cat(reactor, proto, o, size, slow=True)
        proto.sendMessage(json.dumps({"heartbeat": 1}).encode(), isBinary=False)
        proto.sendClose(1000)
        await proto.closed
        peak_hwm = o.rss_kb()[1]
    finally:
        o.stop()
    ms = [r * 1000 for r in rtts]
    print(f"keystroke echo round trip over {keys} keys")
    print(
        f"  p50 {median(ms):.2f} ms   p90 {percentile(ms, 90):.2f} ms   "
        f"p99 {percentile(ms, 99):.2f} ms   max {max(ms):.2f} ms"
    )
    print(
        f"cat of {size / 2**20:.0f} MiB ({size / 1e6:.1f} MB) through the terminal websocket "
        f"(orchestrator idle RSS {idle_rss / 1024:.1f} MiB)"
    )
    for label, (seconds, received, peak) in (("fast client", fast), ("slow client", slow)):
        print(
            f"  {label}: {seconds:.2f} s, {size / seconds / 1e6:.1f} MB/s "
            f"({received / 1e6:.1f} MB received), RSS peak {peak / 1024:.1f} MiB "
            f"(+{(peak - idle_rss) / 1024:.1f} MiB)"
        )
    print(f"  orchestrator VmHWM over the whole run: {peak_hwm / 1024:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    react(lambda reactor: Deferred.fromCoroutine(run(reactor, args.keys, args.megabytes)))


if __name__ == "__main__":
    main()
