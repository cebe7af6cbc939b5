"""
Following Docker's event stream for the start and die of site containers, in a thread of
its own that reconnects when the stream breaks (L{_EventWatch}).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from director.orchestrator.docker_interface import EVENT_ACTIONS, ContainerEvent


def _container_event(raw: dict[str, Any]) -> ContainerEvent | None:
    """The event the runtime cares about in one decoded Docker event, if it is one."""
    action = raw.get("Action") or raw.get("status")
    actor = raw.get("Actor") or {}
    label = (actor.get("Attributes") or {}).get("director.site", "")
    container = actor.get("ID") or raw.get("id")
    if action not in EVENT_ACTIONS or not label.isdigit() or not container:
        return None
    return ContainerEvent(action, str(container), int(label))


class _EventWatch:
    """
    One thread following Docker's event stream, reconnecting with a growing pause when the
    stream breaks. Reconnections ask for events since the last one seen, so a short outage
    loses nothing; C{on_error} is told anyway.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        on_event: Callable[[ContainerEvent], None],
        on_error: Callable[[str], None],
        first_pause: float = 0.5,
        max_pause: float = 30.0,
    ) -> None:
        self._factory = factory
        self._on_event = on_event
        self._on_error = on_error
        self._first_pause = first_pause
        self._max_pause = max_pause
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self.thread = threading.Thread(target=self._run, name="docker-events", daemon=True)

    def _run(self) -> None:
        since: int | None = None
        pause = self._first_pause
        while not self._stopped.is_set():
            try:
                client = self._factory()
                stream = client.events(
                    since=since,
                    filters={
                        "type": "container",
                        "event": list(EVENT_ACTIONS),
                        "label": ["director.site"],
                    },
                    decode=True,
                )
                with self._lock:
                    self._stream = stream
                if self._stopped.is_set():
                    break
                for raw in stream:
                    pause = self._first_pause
                    if isinstance(raw.get("time"), int):
                        since = raw["time"]
                    event = _container_event(raw)
                    if event is not None:
                        self._on_event(event)
                if self._stopped.is_set():
                    break
                problem = "the Docker event stream ended"
            except Exception as e:
                if self._stopped.is_set():
                    break
                problem = f"the Docker event stream failed: {e}"
            finally:
                self._close()
            self._on_error(f"{problem}; reconnecting in {pause:.1f}s")
            self._stopped.wait(pause)
            pause = min(pause * 2, self._max_pause)

    def _close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: S110 (already closed by the daemon or by stop())
                pass

    def stop(self) -> None:
        self._stopped.set()
        self._close()
