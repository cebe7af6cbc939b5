"""
The real gateway's Docker event watch, driven by a stand-in for the SDK client: which
events reach the runtime, and how the watch survives a stream that ends or fails.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from director.orchestrator.docker_events import _container_event, _EventWatch
from director.orchestrator.docker_interface import ContainerEvent


def raw(action: str, container: str = "c1", site: str | None = "7", time: int = 100) -> Any:
    attributes = {"name": "site_7.1.x"}
    if site is not None:
        attributes["director.site"] = site
    return {
        "Type": "container",
        "Action": action,
        "Actor": {"ID": container, "Attributes": attributes},
        "time": time,
    }


class Stream:
    """A decoded event stream: yields its events, then ends, or waits until closed."""

    def __init__(self, events: list[Any], wait: bool = False) -> None:
        self.events = events
        self.wait = wait
        self.closed = threading.Event()

    def __iter__(self) -> Any:
        yield from self.events
        if self.wait:
            self.closed.wait(10)

    def close(self) -> None:
        self.closed.set()


class Client:
    """Hands out the next stream (or raises the next exception) per events() call."""

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.calls: list[dict[str, Any]] = []
        self.called = threading.Condition()

    def events(self, **kwargs: Any) -> Any:
        with self.called:
            self.calls.append(kwargs)
            self.called.notify_all()
        result = self.results.pop(0) if self.results else Stream([], wait=True)
        if isinstance(result, Exception):
            raise result
        return result

    def wait_calls(self, n: int) -> None:
        with self.called:
            assert self.called.wait_for(lambda: len(self.calls) >= n, 10), self.calls


def until(condition: Any, timeout: float = 10) -> None:
    """Wait (in this thread) for the watch's thread to get somewhere."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.005)


class ParseTests(SynchronousTestCase):
    def test_site_container_events(self) -> None:
        """start and die of containers labelled with a site id become ContainerEvents."""
        self.assertEqual(_container_event(raw("start")), ContainerEvent("start", "c1", 7))
        self.assertEqual(_container_event(raw("die", "c2")), ContainerEvent("die", "c2", 7))

    def test_other_events_ignored(self) -> None:
        """Other actions, unlabelled containers and odd labels are not the runtime's."""
        self.assertIsNone(_container_event(raw("kill")))
        self.assertIsNone(_container_event(raw("start", site=None)))
        self.assertIsNone(_container_event(raw("start", site="../1")))
        self.assertIsNone(_container_event({"status": "start"}))


class WatchTests(SynchronousTestCase):
    def watch(self, client: Client) -> tuple[_EventWatch, list[Any], list[str]]:
        events: list[Any] = []
        errors: list[str] = []
        watch = _EventWatch(lambda: client, events.append, errors.append, first_pause=0.01)
        watch.thread.start()
        self.addCleanup(watch.thread.join, 10)
        self.addCleanup(watch.stop)
        return watch, events, errors

    def test_filters_and_delivery(self) -> None:
        """The watch asks for start/die of site containers and delivers what it gets."""
        client = Client([Stream([raw("start"), raw("kill"), raw("die", time=101)], wait=True)])
        watch, events, errors = self.watch(client)
        client.wait_calls(1)
        until(lambda: len(events) == 2)
        watch.stop()
        watch.thread.join(10)
        self.assertEqual(
            client.calls[0]["filters"],
            {"type": "container", "event": ["start", "die"], "label": ["director.site"]},
        )
        self.assertEqual([e.action for e in events], ["start", "die"])
        self.assertEqual(errors, [])

    def test_reconnects_since_last_event(self) -> None:
        """A stream that ends is reported and reopened from the last event's time."""
        client = Client([Stream([raw("start", time=123)]), RuntimeError("daemon gone")])
        watch, events, errors = self.watch(client)
        client.wait_calls(3)
        until(lambda: len(errors) >= 2)
        watch.stop()
        watch.thread.join(10)
        self.assertEqual([c["since"] for c in client.calls[:3]], [None, 123, 123])
        self.assertIn("ended", errors[0])
        self.assertIn("daemon gone", errors[1])
        self.assertEqual(len(events), 1)

    def test_stop_closes_a_waiting_stream(self) -> None:
        """stop() closes the open stream, the thread ends, and no error is reported."""
        stream = Stream([], wait=True)
        client = Client([stream])
        watch, _, errors = self.watch(client)
        client.wait_calls(1)
        watch.stop()
        watch.thread.join(10)
        self.assertFalse(watch.thread.is_alive())
        self.assertTrue(stream.closed.is_set())
        self.assertEqual(errors, [])
