"""
Write limits, sign-in limits and leases in memory (the contract the Redis adapters also pass,
in tests/integration/test_shared_state_redis.py); the Redis adapters' fallback while Redis
does not answer; the leader lease; the reconcile made only by the leader.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.manager.dashboard.security import LoginThrottle
from director.manager.leader import LeaderLease, MemoryLeases, RedisLeases
from director.manager.ratelimit import RateLimiter
from director.manager.reconcile import Reconciler
from director.manager.redis_link import RedisLink, RedisUnavailable
from director.manager.shared_limits import RedisLoginThrottle, RedisRateLimiter
from director.testing.manager import ManagerHarness, create_static_site
from director.testing.shared_state_contract import SharedStateContract

pytestmark = pytest.mark.manager_store


class MemoryContractTests(SharedStateContract, SynchronousTestCase):
    """In one process the two "managers" are one object each: the contract holds for it."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)

    def limiters(self, rate: float, burst: float) -> tuple[Any, Any]:
        limiter = RateLimiter(self.clock, rate, burst)
        return limiter, limiter

    def throttles(self, **limits: Any) -> tuple[Any, Any]:
        throttle = LoginThrottle(self.clock, **limits)
        return throttle, throttle

    def leases(self) -> tuple[Any, Any]:
        leases = MemoryLeases(self.clock)
        return leases, leases

    def advance(self, seconds: float) -> Deferred[None]:
        self.clock.advance(seconds)
        return succeed(None)

    def finish(self, test: Deferred[None]) -> None:
        self.successResultOf(test)


class _Hanging:
    """A Redis connection that never answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def eval(self, *args: Any) -> Deferred[Any]:
        self.calls.append(args)
        return Deferred()

    def delete(self, *args: Any) -> Deferred[Any]:
        self.calls.append(args)
        return Deferred()


class FallbackTests(SynchronousTestCase):
    """While Redis does not answer, limits count in this manager instead of failing."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.link = RedisLink(self.clock, "redis://127.0.0.1:6379", timeout=2.0)

    def test_not_connected_counts_locally(self) -> None:
        limiter = RedisRateLimiter(self.link, self.clock, rate=1.0, burst=2)
        answers = [self.successResultOf(limiter.allow("alice")) for _ in range(3)]
        self.assertEqual(answers, [True, True, False])
        throttle = RedisLoginThrottle(self.link, self.clock, max_failures=1)
        self.assertFalse(self.successResultOf(throttle.blocked("alice", "192.0.2.1")))
        self.successResultOf(throttle.failed("alice", "192.0.2.1"))
        self.assertTrue(self.successResultOf(throttle.blocked("alice", "192.0.2.1")))
        self.successResultOf(throttle.succeeded("alice", "192.0.2.1"))
        self.assertFalse(self.successResultOf(throttle.blocked("alice", "192.0.2.1")))

    def test_a_silent_redis_times_out_then_counts_locally(self) -> None:
        self.link.connection = _Hanging()
        limiter = RedisRateLimiter(self.link, self.clock, rate=1.0, burst=1)
        d = limiter.allow("alice")
        self.assertNoResult(d)
        self.clock.advance(2.0)
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(len(self.link.connection.calls), 1)

    def test_no_redis_no_lease(self) -> None:
        """A lease that cannot be claimed is not held: no reconcile rather than two."""
        lease = LeaderLease(self.clock, RedisLeases(self.link), "reconcile", "m-a/1", 3.0)
        lease.start()
        self.assertFalse(lease.held)
        self.assertFalse(self.successResultOf(lease.confirm()))
        lease.stop()

    def test_call_refuses_until_connected(self) -> None:
        self.failureResultOf(self.link.call(lambda r: r.get("x")), RedisUnavailable)


class LeaderLeaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.leases = MemoryLeases(self.clock)
        self.a = LeaderLease(self.clock, self.leases, "reconcile", "manager-a/1", 3.0)
        self.b = LeaderLease(self.clock, self.leases, "reconcile", "manager-b/1", 3.0)

    def test_one_leader_while_it_renews(self) -> None:
        self.a.start()
        self.b.start()
        for _ in range(10):
            self.assertTrue(self.a.held)
            self.assertFalse(self.b.held)
            self.clock.advance(1.0)

    def test_a_dead_leader_is_replaced_after_its_lease(self) -> None:
        """A leader killed (it neither renews nor releases) leads until its lease ends."""
        self.a.start()
        self.b.start()
        assert self.a._loop is not None
        self.a._loop.stop()  # kill -9: no release
        self.clock.advance(2.0)
        self.assertFalse(self.b.held)
        self.clock.advance(1.1)  # b claims every second; a's lease ended at 3.0
        self.assertTrue(self.b.held)
        self.assertFalse(self.successResultOf(self.a.confirm()))

    def test_a_stopped_leader_hands_over_at_once(self) -> None:
        self.a.start()
        self.b.start()
        self.a.stop()
        self.successResultOf(self.a.release())
        self.assertTrue(self.successResultOf(self.b.confirm()))

    def test_the_link_releases_before_it_closes(self) -> None:
        """On a clean stop the lease is given up over the link, then the link closes."""
        order: list[str] = []

        class Connection:
            def eval(self, script: str, keys: list[str], args: list[str]) -> Deferred[Any]:
                order.append("release" if "DEL" in script else "claim")
                return succeed(1)

            def disconnect(self) -> Deferred[None]:
                order.append("disconnect")
                return succeed(None)

        link = RedisLink(self.clock, "redis://127.0.0.1:6379")
        link.connection = Connection()
        lease = LeaderLease(self.clock, RedisLeases(link), "reconcile", "manager-a/1", 3.0)
        link.before_stop.append(lease.release)
        lease.start()
        self.assertTrue(lease.held)
        lease.stop()
        self.successResultOf(link.stopService())
        self.assertEqual(order, ["claim", "release", "disconnect"])
        self.assertIsNone(link.connection)


class LeaderReconcileTests(SynchronousTestCase):
    """Two managers' reconcilers on one database: only the lease's holder makes a pass."""

    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.h.user("alice")
        self.h.result(create_static_site(self.h.store, "kept"))
        self.h.engine.wake()
        self.h.router.answers = lambda m, p, k: {"sites": []} if m == "GET" else {}
        leases = MemoryLeases(self.h.clock)
        self.reconcilers = [
            Reconciler(
                self.h.clock,
                self.h.store,
                self.h.engine,
                self.h.orchestrator_client,
                self.h.router_client,
                leader=LeaderLease(self.h.clock, leases, "reconcile", name, 3.0),
            )
            for name in ("manager-a/1", "manager-b/1")
        ]

    def router_lists(self) -> int:
        return sum(1 for c in self.h.router.calls if c[0] == "GET")

    def test_only_the_leader_reconciles(self) -> None:
        first, second = self.reconcilers
        before = self.router_lists()
        self.assertIsNotNone(self.successResultOf(Deferred.fromCoroutine(first.run_once())))
        self.assertEqual(self.router_lists(), before + 1)
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(second.run_once())))
        self.assertEqual(self.router_lists(), before + 1, "the second asked nobody")
        self.h.clock.advance(3.5)  # the first stopped renewing (died)
        self.assertIsNotNone(self.successResultOf(Deferred.fromCoroutine(second.run_once())))
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(first.run_once())))
