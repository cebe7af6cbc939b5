"""
What every component's API answers alike (L{ComponentAPI}): who signed a call and the sites
it serves. The orchestrator's and the router's clients build on it.
"""

from __future__ import annotations

from typing import Any

from director.common.client import Caller


def call_options(timeout: float | None, **kwargs: Any) -> dict[str, Any]:
    """Call arguments; no timeout: the caller's own default."""
    if timeout is not None:
        kwargs["timeout"] = timeout
    return kwargs


class ComponentAPI:
    """Calls one component; C{caller} signs and sends (a L{ComponentClient} or a fake)."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    async def whoami(self, timeout: float | None = None) -> dict[str, Any]:
        """C{{"component": <its kind>, "caller": <who signed>}}."""
        answer: dict[str, Any] = await self.caller.json(
            "GET", "/v1/whoami", **call_options(timeout)
        )
        return answer

    async def list_sites(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Every site the component serves, as its API lists them (C{"sites"})."""
        answer = await self.caller.json("GET", "/v1/sites", timeout=timeout)
        sites: list[dict[str, Any]] = answer["sites"]
        return sites
