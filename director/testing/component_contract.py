"""
What every contract suite of a component's client needs (L{ComponentContract}): the test
case's C{call}, its assertions, and L{ComponentContract.refused} for a call that must fail.
L{director.testing.orchestrator_contract} and L{director.testing.router_contract} build on it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from director.common.client import ComponentCallError


class ComponentContract:
    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """The result of C{coroutine}, once everything it waits for has happened."""
        raise NotImplementedError

    # the assertions of SynchronousTestCase
    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
    assertIn: Any
    assertIsNone: Any
    fail: Any

    def refused(self, coroutine: Coroutine[Any, Any, Any]) -> ComponentCallError:
        """The component's refusal of the call; the test fails if it was not refused."""
        try:
            self.call(coroutine)
        except ComponentCallError as e:
            return e
        self.fail("the call was not refused")
        raise AssertionError
