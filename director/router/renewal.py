"""
When to renew a certificate and when to retry a failed order (no I/O, no clock: callers
pass the time in).
"""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0


@dataclass(frozen=True)
class RenewalPolicy:
    renew_before: float = 30 * DAY
    retry_initial: float = 300.0
    retry_max: float = 6 * 3600.0

    def renew_at(self, not_before: float, not_after: float, obtained_at: float) -> float:
        """
        C{renew_before} ahead of expiry, but never before two thirds of the lifetime has
        passed since the certificate was obtained. The second rule keeps short-lived
        certificates (shorter than C{renew_before}) from being renewed in a loop, and does
        the same when this machine's clock is ahead of the CA's.
        """
        lifetime = max(0.0, not_after - not_before)
        start = max(not_before, obtained_at)
        return max(not_after - self.renew_before, start + lifetime * 2 / 3)

    def retry_delay(self, attempts: int) -> float:
        """Delay before attempt C{attempts + 1}, after C{attempts} failures in a row."""
        if attempts <= 0:
            return 0.0
        return min(self.retry_max, self.retry_initial * 2 ** min(attempts - 1, 40))

    @property
    def wait_for_peer(self) -> float:
        """How soon to look again when another router holds the order lock for a domain."""
        return min(15.0, self.retry_initial)
