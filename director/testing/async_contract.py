"""
How a contract mixin (L{director.testing.database_contract},
L{director.testing.shared_state_contract}) writes its tests once as C{async def} for both
kinds of subclass: the in-memory fakes settle them at once, the real servers on the reactor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred


class Settles(Protocol):
    def finish(self, test: Deferred[None]) -> Deferred[None] | None:
        """Settle a test's Deferred (C{successResultOf}, or return it to pytest-twisted)."""


C = TypeVar("C", bound=Settles)


def contract_test(
    test: Callable[[C], Coroutine[Any, Any, None]],
) -> Callable[[C], Deferred[None] | None]:
    """An async test body, run as a Deferred and handed to the class's L{Settles.finish}."""

    @functools.wraps(test)
    def run(self: C) -> Deferred[None] | None:
        return self.finish(Deferred.fromCoroutine(test(self)))

    return run
