"""
L{RouterClient}'s contract (L{director.testing.router_contract}), run twice: against the real
router app in memory (StubTreq over L{RouterAPI}, a fake nginx directory and ACME server) and
against L{FakeRouter}, the manager's unit tests' router.
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.clients.router import RouterClient
from director.common.client import ComponentClient
from director.common.threads import InlineRunner
from director.router.certificates import CertificateKeeper
from director.router.layout import RouterLayout
from director.router.renewal import RenewalPolicy
from director.router.routing import Router
from director.router.testing import FakeACMEClient, FakeConfigDirectory, webroot_fetcher
from director.router.web import RouterAPI
from director.testing.fake_router import FakeRouter
from director.testing.keys import Keyring
from director.testing.router_contract import RouterContract
from tests.unit.test_orchestrator_client_contract import _outcome
from tests.unit.test_router_api import SETTINGS


class RealRouterContractTests(RouterContract, SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        base = Path(self.mktemp())
        layout = RouterLayout(base / "router", base / "shared")
        ca = FakeACMEClient(webroot_fetcher(layout.challenge_dir), self.clock.seconds)
        keeper = CertificateKeeper(
            self.clock, InlineRunner(), InlineRunner(), layout, ca, RenewalPolicy()
        )
        router = Router(SETTINGS, layout, FakeConfigDirectory(), InlineRunner(), keeper)
        router.prepare()
        keeper.startService()
        self.addCleanup(keeper.stopService)
        self.http: Any = StubTreq(RouterAPI(router).app.resource())
        signer = Keyring().signer("manager", self.clock)
        self.client = RouterClient(
            ComponentClient(self.clock, signer, "router", "http://r", self.http)
        )

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        d = Deferred.fromCoroutine(coroutine)
        self.http.flush()
        return _outcome(d)


class FakeRouterContractTests(RouterContract, SynchronousTestCase):
    def setUp(self) -> None:
        self.fake = FakeRouter("sites.test", max_body_size=SETTINGS.max_body_size)
        self.client = RouterClient(self.fake)

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return _outcome(Deferred.fromCoroutine(coroutine))
