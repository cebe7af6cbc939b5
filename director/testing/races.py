"""
Two (or more) "managers" doing the same store call at the same moment, for the tests of
what must stay right when they do: each in a thread of its own, released together round
after round (a barrier), so their transactions overlap on the database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred


def in_step(rounds: int, *callers: Callable[[int], Deferred[Any]]) -> list[list[Any]]:
    """
    Call each of C{callers} with round 0, 1, ... C{rounds - 1}, all at once each round (their
    stores run inline, so each call's Deferred has fired when it returns); each caller's
    results in order (a L{Failure} for a call that failed). Raises if a thread hangs.
    """
    barriers = [threading.Barrier(len(callers), timeout=30) for _ in range(rounds)]
    results: list[list[Any]] = [[] for _ in callers]

    def run(index: int) -> None:
        for round_, barrier in enumerate(barriers):
            barrier.wait()
            callers[index](round_).addBoth(results[index].append)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(callers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        if thread.is_alive():
            raise TimeoutError("a racing caller did not finish in 60 s")
    return results
