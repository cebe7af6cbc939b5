"""
What the write limiter, the sign-in throttle and the leases must do, in memory (one manager;
C{tests/unit}, on a fake clock) and in Redis (several managers; C{tests/integration}, on a
real Redis and real time). A subclass makes two of each on one shared state ("two
managers"), says how time passes and settles each test (see L{director.testing.database_contract}).
Times are short so a real Redis runs the suite in seconds.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from director.testing.async_contract import contract_test

WINDOW = 1.0
LEASE = 1.0


class SharedStateContract:
    """Mix into a test class and implement the hooks."""

    def limiters(self, rate: float, burst: float) -> tuple[Any, Any]:
        """Two write limiters (two managers) counting in one place."""
        raise NotImplementedError

    def throttles(self, **limits: Any) -> tuple[Any, Any]:
        """Two sign-in throttles (LoginThrottle's arguments) counting in one place."""
        raise NotImplementedError

    def leases(self) -> tuple[Any, Any]:
        """Two managers' views of one lease table."""
        raise NotImplementedError

    def advance(self, seconds: float) -> Deferred[None]:
        """Let C{seconds} pass (the fake clock, or real time)."""
        raise NotImplementedError

    def finish(self, test: Deferred[None]) -> Deferred[None] | None:
        raise NotImplementedError

    @contract_test
    async def test_writes_count_across_managers(self) -> None:
        """A burst spent on one manager is spent on the other; the bucket refills at rate."""
        a, b = self.limiters(rate=2.0, burst=3)
        assert await a.allow("alice")
        assert await b.allow("alice")
        assert await a.allow("alice")
        assert not await b.allow("alice")
        assert not await a.allow("alice")
        assert await b.allow("bob"), "another user's bucket is full"
        await self.advance(0.6)  # 1.2 tokens
        assert await b.allow("alice")
        assert not await a.allow("alice")
        await self.advance(2.0)  # full again, never more than the burst
        for _ in range(3):
            assert await a.allow("alice")
        assert not await b.allow("alice")

    @contract_test
    async def test_a_costly_write_needs_enough_tokens(self) -> None:
        a, b = self.limiters(rate=1.0, burst=5)
        assert await a.allow("carol", cost=4)
        assert not await b.allow("carol", cost=2)
        assert await b.allow("carol", cost=1)

    @contract_test
    async def test_wrong_passwords_count_across_managers(self) -> None:
        """Failures on either manager add up, per account and address; a success forgives."""
        a, b = self.throttles(max_failures=2, window=WINDOW, max_per_address=4, max_per_account=6)
        assert not await a.blocked("alice", "192.0.2.1")
        await a.failed("alice", "192.0.2.1")
        assert not await b.blocked("alice", "192.0.2.1")
        await b.failed("alice", "192.0.2.1")
        assert await a.blocked("alice", "192.0.2.1")
        assert await b.blocked("alice", "192.0.2.1")
        assert not await b.blocked("alice", "192.0.2.2"), "another address"
        assert not await a.blocked("bob", "192.0.2.1"), "another account"
        await b.succeeded("alice", "192.0.2.1")
        assert not await a.blocked("alice", "192.0.2.1")

    @contract_test
    async def test_one_address_guessing_many_accounts(self) -> None:
        a, b = self.throttles(max_failures=10, window=WINDOW, max_per_address=4, max_per_account=6)
        for i, throttle in enumerate((a, b, a, b)):
            await throttle.failed(f"user{i}", "198.51.100.7")
        assert await b.blocked("someone", "198.51.100.7")
        assert not await a.blocked("someone", "198.51.100.8")

    @contract_test
    async def test_many_addresses_guessing_one_account(self) -> None:
        a, b = self.throttles(max_failures=10, window=WINDOW, max_per_address=4, max_per_account=6)
        for i in range(6):
            await (a, b)[i % 2].failed("dave", f"203.0.113.{i}")
        assert await a.blocked("dave", "203.0.113.99")
        assert not await b.blocked("erin", "203.0.113.99")

    @contract_test
    async def test_failures_expire_after_the_window(self) -> None:
        a, b = self.throttles(max_failures=1, window=WINDOW, max_per_address=4, max_per_account=6)
        await a.failed("frank", "192.0.2.9")
        assert await b.blocked("frank", "192.0.2.9")
        await self.advance(WINDOW + 0.3)
        assert not await b.blocked("frank", "192.0.2.9")
        assert not await a.blocked("frank", "192.0.2.9")

    @contract_test
    async def test_one_holder_at_a_time(self) -> None:
        """A lease is one holder's until it expires or is released; renewing keeps it."""
        a, b = self.leases()
        assert await a.claim("reconcile", "manager-a", LEASE)
        assert not await b.claim("reconcile", "manager-b", LEASE)
        assert await b.claim("other", "manager-b", LEASE), "another lease is free"
        await self.advance(LEASE * 0.6)
        assert await a.claim("reconcile", "manager-a", LEASE), "renewed"
        await self.advance(LEASE * 0.6)
        assert not await b.claim("reconcile", "manager-b", LEASE), "the renewal held"
        await b.release("reconcile", "manager-b")  # not b's: changes nothing
        assert not await b.claim("reconcile", "manager-b", LEASE)
        await a.release("reconcile", "manager-a")
        assert await b.claim("reconcile", "manager-b", LEASE)

    @contract_test
    async def test_an_expired_lease_goes_to_another(self) -> None:
        """A holder that stops renewing (it died) loses the lease once it expires."""
        a, b = self.leases()
        assert await a.claim("reconcile", "manager-a", LEASE)
        await self.advance(LEASE + 0.3)
        assert await b.claim("reconcile", "manager-b", LEASE)
        assert not await a.claim("reconcile", "manager-a", LEASE)
