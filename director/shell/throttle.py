"""
How many failed logins a user name (from one address, and from all addresses together) or a
source address may have before it is refused.

Each counter is a sliding window of failure times. An attempt counts as a failure from the
moment it starts until it succeeds, so a client that sends many guesses at once (on several
connections) cannot get more answers than the limit allows. Pure logic: time comes from an
injected clock, and there is no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime


@dataclass(frozen=True)
class Refusal:
    """Why a login is refused without asking anyone, and for how long still."""

    what: str  # "user" (from this address), "account" (from everywhere) or "address"
    retry_after: float

    def message(self) -> str:
        minutes = max(1, math.ceil(self.retry_after / 60))
        return f"too many failed logins; try again in {minutes} minute{'s' * (minutes != 1)}"


class _Window:
    """Failure times per key, forgetting those older than C{window} seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.times: dict[str, list[float]] = {}

    def recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self.times.get(key, []) if t > now - self.window]
        if times:
            self.times[key] = times
        else:
            self.times.pop(key, None)
        return times

    def retry_after(self, key: str, now: float) -> float | None:
        times = self.recent(key, now)
        if len(times) < self.limit:
            return None
        return times[-self.limit] + self.window - now

    def add(self, key: str, now: float) -> None:
        self.times.setdefault(key, []).append(now)

    def remove(self, key: str, when: float) -> None:
        times = self.times.get(key)
        if times is not None and when in times:
            times.remove(when)
            if not times:
                del self.times[key]

    def sweep(self, now: float) -> None:
        for key in list(self.times):
            self.recent(key, now)


class Attempt:
    """One login attempt in progress; it stays counted as a failure unless it succeeds."""

    def __init__(self, throttle: LoginThrottle, user: str | None, address: str, when: float):
        self._throttle = throttle
        self._user = user
        self._address = address
        self._when = when
        self._done = False

    def succeeded(self) -> None:
        """The credentials were good: this attempt no longer counts against anyone."""
        if not self._done:
            self._done = True
            self._throttle._forget(self._user, self._address, self._when)


class LoginThrottle:
    """
    Limits failed logins within a sliding window of C{window} seconds, per user name from
    one address (C{max_per_user}; password attempts only: a key cannot be guessed, and
    counting keys would let anyone lock a user out), per source address (C{max_per_address},
    every attempt), and per user name from all addresses together (C{max_per_account}, for
    guessing spread over many addresses). The account-wide limit is kept above the
    per-address one, so failures from one address never lock a user out everywhere.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_per_user: int,
        max_per_address: int,
        window: float,
        max_per_account: int | None = None,
    ) -> None:
        self._clock = clock
        self._users = _Window(max_per_user, window)
        self._addresses = _Window(max_per_address, window)
        account = max_per_account if max_per_account is not None else 4 * max_per_address
        self._accounts = _Window(max(account, max_per_address + 1), window)
        self._next_sweep = 0.0

    @staticmethod
    def _pair(user: str, address: str) -> str:
        return f"{user}\0{address}"

    def _now(self) -> float:
        now = self._clock.seconds()
        if now >= self._next_sweep:
            # Keys that are only ever tried once would otherwise stay forever.
            self._users.sweep(now)
            self._addresses.sweep(now)
            self._accounts.sweep(now)
            self._next_sweep = now + self._users.window / 4
        return now

    def refusal(self, user: str | None, address: str) -> Refusal | None:
        """
        Why an attempt from C{address} must be refused now, or C{None} if it may go ahead.
        C{user} is the user name for a password attempt, C{None} for a key.
        """
        now = self._now()
        wait = self._addresses.retry_after(address, now)
        if wait is not None:
            return Refusal("address", wait)
        if user is not None:
            wait = self._users.retry_after(self._pair(user, address), now)
            if wait is not None:
                return Refusal("user", wait)
            wait = self._accounts.retry_after(user, now)
            if wait is not None:
                return Refusal("account", wait)
        return None

    def begin(self, user: str | None, address: str) -> Attempt:
        """Count an attempt (see L{refusal} for C{user}) as failed until it succeeds."""
        now = self._now()
        self._addresses.add(address, now)
        if user is not None:
            self._users.add(self._pair(user, address), now)
            self._accounts.add(user, now)
        return Attempt(self, user, address, now)

    def _forget(self, user: str | None, address: str, when: float) -> None:
        self._addresses.remove(address, when)
        if user is not None:
            self._users.remove(self._pair(user, address), when)
            self._accounts.remove(user, when)

    def tracked(self) -> int:
        """How many keys are remembered (memory is bounded by this)."""
        return len(self._users.times) + len(self._addresses.times) + len(self._accounts.times)
