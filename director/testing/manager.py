"""
A manager wired for unit tests: real store (a SQLite file, or PostgreSQL when the tests run
on it: see L{director.testing.manager_database}), verified fakes, inline threads.
"""

from __future__ import annotations

import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.clients import OrchestratorClient, RouterClient
from director.common.client import ComponentCallError
from director.common.threads import InlineRunner, fired
from director.contract.urls import UrlFormats
from director.manager.api import ManagerAPI
from director.manager.domain_services import ManagerServices
from director.manager.events import MemoryBus
from director.manager.mail import NullMailer
from director.manager.models import UserLimits
from director.manager.operations import OperationEngine
from director.manager.orchestrator_pool import OrchestratorPool
from director.manager.passwords import Passwords
from director.manager.placement_store import PlacementStore
from director.manager.router_pool import RouterPool
from director.manager.schedules import TaskSettings
from director.manager.store import Store
from director.manager.tasks import TaskScheduler
from director.testing import manager_database
from director.testing.fake_orchestrator import FakeOrchestrator
from director.testing.fake_router import FakeRouter
from director.testing.keys import Keyring

#: Where the harness's first orchestrator ("main") is.
ORCHESTRATOR_URL = "http://orchestrator.test"
T = TypeVar("T")


class HangingComponent:
    """
    A component (orchestrator or router) whose calls never answer until C{finish()}: a
    manager stuck mid-action. Records calls like L{FakeOrchestrator}.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.pending: list[Deferred[Any]] = []

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return await d

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError("a hanging component relays no files")

    def finish(self) -> None:
        for d in self.pending:
            d.callback({})
        self.pending = []


class RecordingMailer:
    """A Mailer that keeps what it was asked to send: (to, subject, body)."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[str], str, str]] = []

    def notify(self, to: list[str], subject: str, body: str) -> None:
        self.sent.append((to, subject, body))


def static_site_fields(name: str) -> dict[str, Any]:
    """The fields of a plain static site, as the API would pass them to the store."""
    from director.manager.models import DEFAULT_LIMITS

    return {
        "name": name,
        "type": "static",
        "purpose": "project",
        "availability": "enabled",
        "description": "",
        "image": "director/python:3",
        "packages": [],
        "limits": dict(DEFAULT_LIMITS),
    }


def create_static_site(store: Store, name: str, owner: str = "alice") -> Deferred[Any]:
    """Record a static site of C{owner}'s and its pending create operation: (site, op)."""
    from director.manager.operations import OPERATIONS

    return store.create_site(
        static_site_fields(name), [owner], ("create_site", OPERATIONS["create_site"]), None
    )


def error(status: int, code: str = "error", message: str = "failed") -> ComponentCallError:
    import json

    return ComponentCallError(
        "http://fake", status, json.dumps({"error": code, "message": message}).encode()
    )


class ManagerHarness:
    """Everything a ManagerAPI needs, in memory or in a fresh test database (C{database_url})."""

    def __init__(
        self,
        directory: Path,
        sites_domain: str = "sites.test",
        router_names: tuple[str, ...] = ("router",),
        url_formats: UrlFormats | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self._http: Any = None  # a StubTreq over the API, made by the first L{call}
        #: the store's database: another "manager process" may open its own engine on it
        self.database_url = manager_database.database_url(directory)
        self.db_engine = engine = manager_database.engine(self.database_url)
        self.store = Store(engine, InlineRunner())
        # Verified fakes at the wire (their contract suites run against the real apps too).
        self.orchestrator = FakeOrchestrator()
        self.router = FakeRouter(sites_domain)
        # The typed clients the manager's parts call them through.
        self.orchestrator_client = OrchestratorClient(self.orchestrator)
        self.router_client = RouterClient(self.router)
        # Every router (the first is C{router}); the engine and the API drive them all.
        self.routers = {router_names[0]: self.router}
        self.routers.update({n: FakeRouter(sites_domain) for n in router_names[1:]})
        self.router_pool = RouterPool(
            self.clock,
            [
                (
                    n,
                    f"http://{n}.invalid",
                    self.router_client if f is self.router else RouterClient(f),
                )
                for n, f in self.routers.items()
            ],
        )
        # The pool, with this one orchestrator ("main") registered; add_orchestrator adds more.
        self.fakes: dict[str, FakeOrchestrator] = {ORCHESTRATOR_URL: self.orchestrator}
        self.placements = PlacementStore(engine, InlineRunner())
        self.pool = OrchestratorPool(
            self.clock,
            self.placements,
            self._orchestrator_client,
            "main",
            ORCHESTRATOR_URL,
            "127.0.0.1:8180",
            routers_default="127.0.0.1:8180",
        )
        self.result(Deferred.fromCoroutine(self.pool.register_default()))
        self.result(self.pool.refresh())
        self.orchestrator.calls.clear()  # its health check: tests count the calls they cause
        self.bus = MemoryBus()
        self.keys = Keyring()
        self.engine = OperationEngine(
            self.clock,
            self.store,
            self.pool,
            self.router_pool,
            self.bus,
            sites_domain,
            backoff=1.0,
            max_attempts=4,
            work_dir=directory / "moves",
            move_grace=0.0,
            url_formats=url_formats,
        )
        self.passwords = Passwords(InlineRunner(), rounds=4)
        self.tasks = TaskScheduler(
            self.clock,
            self.store,
            self.pool,
            TaskSettings(max_per_site=3, max_timeout=600, default_timeout=60, runs_kept=5),
            self.engine.identity,
            self.engine.worker,
            interval=5.0,
            lease=30.0,
        )
        self.api = ManagerAPI(
            self.clock,
            self.store,
            self.engine,
            self.passwords,
            self.pool,
            self.bus,
            sites_domain,
            self.keys.signer("manager", self.clock),
            ORCHESTRATOR_URL,
            self.router_pool,
            services=ManagerServices.build(
                self.store, self.pool, self.passwords, NullMailer(), UserLimits()
            ),
            tasks=self.tasks,
            url_formats=url_formats,
        )

    def _orchestrator_client(self, url: str) -> OrchestratorClient:
        if url == ORCHESTRATOR_URL:
            return self.orchestrator_client
        return OrchestratorClient(self.fakes[url])

    def add_orchestrator(
        self, name: str, fake: FakeOrchestrator | None = None, nginx: str = "10.0.0.2:8180"
    ) -> FakeOrchestrator:
        """Register another (fake) orchestrator, at http://<name>.test, and reload the pool."""
        fake = fake or FakeOrchestrator()
        url = f"http://{name}.test"
        self.fakes[url] = fake
        self.result(self.placements.add(name, url, nginx))
        self.result(self.pool.refresh())
        return fake

    def result(self, d: Deferred[Any]) -> Any:
        return fired(d)

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """A request to the real API app (StubTreq) with C{token}: its status and JSON body."""
        import json

        from treq.testing import StubTreq

        if self._http is None:
            self._http = StubTreq(self.api.app.resource())
        d = self._http.request(
            method,
            f"http://manager.test{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": [f"Bearer {token}"]},
        )
        self._http.flush()
        response = self.result(d)
        return response.code, json.loads(self.result(self._http.content(response)))

    def user(self, username: str, role: str = "student", accepted: bool = True) -> str:
        """Create a user and return an API token for them."""
        user = self.result(self.store.create_user(username, role, None))
        if accepted:
            self.result(self.store.update_user(username, accepted_guidelines=True))
        token: str = self.result(self.store.create_token(user.id, "test"))
        return token


class ServiceTestCase(SynchronousTestCase):
    """
    A domain service (L{UserService} and its siblings) called directly over a harness's
    store: C{run_} awaits one of its coroutines at once, C{fails} returns what it raised.
    """

    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))

    def run_(self, coroutine: Coroutine[Any, Any, T]) -> T:
        result: T = self.h.result(Deferred.fromCoroutine(coroutine))
        return result

    def fails(self, coroutine: Coroutine[Any, Any, object]) -> Exception:
        try:
            self.run_(coroutine)
        except Exception as e:
            return e
        self.fail("no error")

    def audited(self) -> list[tuple[str, str]]:
        """(action, target) of each audit entry, as the store lists them."""
        return [(e.action, e.target) for e in self.h.result(self.h.store.list_audit())]
