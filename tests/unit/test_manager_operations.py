"""The operation engine with a fake clock and fake components."""

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from director.manager.operations import OPERATIONS
from director.testing.manager import ManagerHarness, create_static_site, error

pytestmark = pytest.mark.manager_store


class EngineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.h.user("alice")
        self.events: list[Any] = []
        self.h.bus.subscribe("site:1", lambda channel, message: self.events.append(message))

    def create(self, name: str = "web") -> int:
        _, op = self.h.result(create_static_site(self.h.store, name))
        return int(op.id)

    def operation(self, op_id: int) -> Any:
        return self.h.result(self.h.store.get_operation(op_id))

    def test_runs_actions_in_order_and_publishes_progress(self) -> None:
        op_id = self.create()
        self.h.engine.wake()
        op = self.operation(op_id)
        self.assertEqual(op.status, "succeeded")
        self.assertEqual([a.status for a in op.actions], ["succeeded", "succeeded"])
        self.assertEqual(self.h.orchestrator.calls[0][:2], ("PUT", "/v1/sites/1"))
        self.assertEqual(self.h.router.calls[0][:2], ("PUT", "/v1/sites/web"))
        self.assertEqual(self.events[-1]["operation"]["status"], "succeeded")
        # Raw events: with the site's members, so each socket decides who may see them.
        self.assertEqual(self.events[-1]["members"], ["alice"])
        self.assertEqual(self.events[-1]["site_id"], 1)

    def test_transient_failure_retried_with_backoff(self) -> None:
        """A component that is briefly down delays the operation; it then completes."""
        failures = [error(503, "unavailable"), ConnectionRefusedError()]

        def answers(method: str, path: str, kwargs: Any) -> Any:
            if failures:
                raise failures.pop(0)
            return {}

        self.h.orchestrator.answers = answers
        op_id = self.create()
        self.h.engine.wake()
        op = self.operation(op_id)
        self.assertEqual(op.status, "pending")
        self.assertIn("retrying", op.actions[0].message)
        self.h.clock.advance(1.1)
        self.assertEqual(self.operation(op_id).status, "pending")
        self.h.clock.advance(2.1)
        self.assertEqual(self.operation(op_id).status, "succeeded")
        self.assertEqual(len(self.h.orchestrator.calls), 3)

    def test_permanent_failure_is_reported_and_retryable(self) -> None:
        """A 4xx from a component fails the operation with its message; a retry resumes it."""
        self.h.router.answers = lambda m, p, k: (_ for _ in ()).throw(
            error(400, "invalid_domain", "bad domain")
        )
        op_id = self.create()
        self.h.engine.wake()
        op = self.operation(op_id)
        self.assertEqual(op.status, "failed")
        self.assertEqual(op.error, "bad domain")  # the component's message for the person
        self.assertEqual([a.status for a in op.actions], ["succeeded", "failed"])
        self.h.router.answers = lambda m, p, k: {}
        self.h.result(self.h.store.retry_operation(op_id))
        self.h.engine.wake()
        self.assertEqual(self.operation(op_id).status, "succeeded")
        # The finished first action was not repeated.
        self.assertEqual(len(self.h.orchestrator.calls), 1)

    def test_resumes_after_a_restart(self) -> None:
        """An operation whose worker died (lease expired) is finished by a new engine."""
        op_id = self.create()
        claimed = self.h.result(self.h.store.claim_operation("dead-worker", 0.0, 60))
        self.assertEqual(claimed.id, op_id)
        self.h.result(self.h.store.set_action(op_id, 0, "succeeded", "done before the crash"))
        self.h.engine.wake()  # the lease (until t=60) has long expired on this clock
        op = self.operation(op_id)
        self.assertEqual(op.status, "succeeded")
        self.assertEqual(self.h.orchestrator.calls, [])
        self.assertEqual(op.actions[0].message, "done before the crash")

    def test_custom_image_build_runs_the_catalogue_setup_command(self) -> None:
        """The parent image's setup commands (from the catalogue) go with the build."""
        self.h.result(
            self.h.store.put_image(
                "director/python:3", "Python 3", "", "pip install flask\necho ready", True
            )
        )
        op_id = self.create()
        self.h.engine.wake()
        site = self.h.result(self.h.store.get_site("web"))
        _, op = self.h.result(
            self.h.store.update_site(
                site.id,
                {"packages": ["curl"]},
                operation=("set_image", OPERATIONS["set_image"]),
            )
        )
        self.h.engine.wake()
        self.assertEqual(self.operation(op.id).status, "succeeded", op_id)
        builds = [c for c in self.h.orchestrator.calls if c[1] == "/v1/images/build"]
        self.assertEqual(
            builds[0][2]["json"]["setup_commands"], ["pip install flask", "echo ready"]
        )
        self.assertEqual(builds[0][2]["json"]["packages"], ["curl"])

    def test_setup_commands_build_an_image_without_packages(self) -> None:
        """
        An image with setup commands gets a site image of its own even with no extra
        packages: the commands run (without them the catalogue image is used as it is).
        """
        self.h.result(
            self.h.store.put_image("director/python:3", "Python 3", "", "pip install flask", True)
        )
        self.create()
        self.h.engine.wake()
        site = self.h.result(self.h.store.get_site("web"))
        _, op = self.h.result(
            self.h.store.update_site(
                site.id,
                {},
                operation=("set_image", OPERATIONS["set_image"]),
                params={"image": "director/python:3", "packages": []},
            )
        )
        self.h.engine.wake()
        self.assertEqual(self.operation(op.id).status, "succeeded")
        builds = [c for c in self.h.orchestrator.calls if c[1] == "/v1/images/build"]
        self.assertEqual(builds[0][2]["json"]["setup_commands"], ["pip install flask"])
        self.assertEqual(builds[0][2]["json"]["packages"], [])
        self.assertEqual(
            self.h.result(self.h.store.get_site("web")).image_tag,
            f"director/site-{site.id}:{op.id}",
        )
