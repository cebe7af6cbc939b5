"""
L{OrchestratorClient}'s contract (L{director.testing.orchestrator_contract}), run twice: against
the real orchestrator app in memory (StubTreq over L{OrchestratorAPI}, the verified Docker and
database fakes) and against L{FakeOrchestrator}, the manager's unit tests' orchestrator.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import FileBodyProducer

from director.clients.orchestrator import OrchestratorClient
from director.common.client import ComponentClient
from director.common.threads import InlineRunner
from director.orchestrator import web_databases
from director.orchestrator.databases import DatabaseHost
from director.orchestrator.web import OrchestratorAPI
from director.testing.fake_databases import FakeDatabaseAdmin
from director.testing.fake_orchestrator import FakeOrchestrator
from director.testing.keys import Keyring
from director.testing.orchestrator_contract import IMAGE, OrchestratorContract
from tests.unit.test_orchestrator_runtime import RuntimeTestCase


def _outcome(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    if not out:
        raise AssertionError("the call never answered")
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class FileBodies:
    """
    StubTreq with file bodies: it takes bytes only, so a streamed upload (the client's
    FileBodyProducer) is handed over as the bytes of its file, signed the same.
    """

    def __init__(self, http: Any) -> None:
        self.http = http

    def request(self, method: str, url: str, data: Any = None, **kwargs: Any) -> Any:
        if isinstance(data, FileBodyProducer):
            data = data._inputFile.read()
        return self.http.request(method, url, data=data, **kwargs)

    def flush(self) -> None:
        self.http.flush()


class RealOrchestratorContractTests(OrchestratorContract, RuntimeTestCase):
    def setUp(self) -> None:
        super().setUp()
        servers: dict[tuple[str, str, int], FakeDatabaseAdmin] = {}

        def admin(runner: Any, host: DatabaseHost) -> FakeDatabaseAdmin:
            key = (host.kind, host.admin_host, host.admin_port)
            return servers.setdefault(key, FakeDatabaseAdmin(host.kind, runner))

        self.patch(web_databases, "make_database_admin", admin)
        api = OrchestratorAPI(
            self.runtime, InlineRunner(), databases=InlineRunner(), reactor=self.reactor
        )
        self.http: Any = StubTreq(api.app.resource())
        signer = Keyring().signer("manager", self.reactor)
        caller = ComponentClient(
            self.reactor, signer, "orchestrator", "http://o", FileBodies(self.http)
        )
        self.client = OrchestratorClient(caller)
        self.clock = self.reactor

    def stop_engine(self) -> None:
        self.docker.engine_down = True

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        d = Deferred.fromCoroutine(coroutine)
        for _ in range(400):
            if d.called:
                break
            self.http.flush()
            self.settle(0.05)
        return _outcome(d)


class FakeOrchestratorContractTests(OrchestratorContract, SynchronousTestCase):
    def setUp(self) -> None:
        self.fake = FakeOrchestrator(images=[IMAGE])
        self.client = OrchestratorClient(self.fake)
        self.clock = Clock()

    def stop_engine(self) -> None:
        self.fake.engine_down = True

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return _outcome(Deferred.fromCoroutine(coroutine))
