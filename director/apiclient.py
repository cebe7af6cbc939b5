"""A small synchronous client of the manager's API, for the `director` command."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any


class APICallFailed(Exception):
    """The call failed: the API answered with an error (the message is its JSON message), or
    the manager could not be reached."""


class APIClient:
    def __init__(self, base_url: str, token: str, timeout: float = 30) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("the manager URL must be http(s)://")
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (http(s) checked above)
            self._base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                payload = json.loads(e.read())
                message = f"{payload.get('error')}: {payload.get('message')}"
            except ValueError:
                message = f"HTTP {e.code}"
            raise APICallFailed(message) from None
        except OSError as e:
            raise APICallFailed(f"cannot reach the manager at {self._base}: {e}") from None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def show_operation(api: APIClient, op_id: int, timeout: float = 600, out: Any = None) -> Any:
    """Wait for an operation, printing each action as it changes; return the final state."""
    out = out or sys.stdout
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        op = api.get(f"/api/v1/operations/{op_id}")
        for action in op["actions"]:
            if seen.get(action["name"]) != action["status"]:
                seen[action["name"]] = action["status"]
                detail = f" ({action['message']})" if action["message"] else ""
                print(f"  {action['status']:<10} {action['name']}{detail}", file=out)
        if op["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            print(
                f"operation {op_id} {op['status']}"
                + (f": {op['error']}" if op.get("error") else ""),
                file=out,
            )
            return op
        time.sleep(0.2)
