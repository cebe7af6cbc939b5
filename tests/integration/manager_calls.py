"""
What the tests of a running manager share, on one machine (test_manager_e2e's L{Stack}) or a
cluster (cluster_stack's L{ClusterStack}): its API called with a token, operations waited
for to the end, and waiting for a condition with the components' logs on a time-out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from services import api_request


def wait(
    check: Callable[[], object],
    what: str,
    timeout: float,
    details: Callable[[], str] = lambda: "",
    interval: float = 0.1,
) -> None:
    """Until C{check()} is true; an AssertionError (with C{details()}) after C{timeout} s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{details()}")
        time.sleep(interval)


class ManagerAPI:
    """The manager's API as an administrator (C{token}) at C{manager_url}."""

    token: str
    #: how long an operation may take by default
    operation_timeout: float = 120

    @property
    def manager_url(self) -> str:
        raise NotImplementedError

    def log_tail(self) -> str:
        """The end of every component's log (shown when something timed out or failed)."""
        raise NotImplementedError

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        """The decoded answer (JSON, else bytes); its status must be one of C{ok}."""
        status, content = api_request(self.manager_url, self.token, method, path, body, raw)
        assert status in ok, (method, path, status, content[:500])
        try:
            return json.loads(content)
        except ValueError:
            return content

    def wait_operation(
        self, answer: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """The operation of an API answer, once it ended; it must have succeeded."""
        op_id = answer["operation"]["id"]
        result: dict[str, Any] = {}

        def done() -> bool:
            result.update(self.api("GET", f"/api/v1/operations/{op_id}"))
            return result["status"] in ("succeeded", "failed")

        wait(done, f"operation {op_id}", timeout or self.operation_timeout, self.log_tail)
        assert result["status"] == "succeeded", (result, self.log_tail())
        return result
