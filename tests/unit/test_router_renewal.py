"""When certificates are renewed and failed orders retried (plain numbers)."""

from twisted.trial.unittest import SynchronousTestCase

from director.router.renewal import DAY, RenewalPolicy


class RenewalTests(SynchronousTestCase):
    policy = RenewalPolicy(renew_before=30 * DAY, retry_initial=300, retry_max=3600)

    def test_ninety_day_certificate(self) -> None:
        """A Let's Encrypt-style 90-day certificate is renewed 30 days before expiry."""
        self.assertEqual(self.policy.renew_at(0, 90 * DAY, 0), 60 * DAY)

    def test_long_certificate(self) -> None:
        self.assertEqual(self.policy.renew_at(0, 365 * DAY, 0), 335 * DAY)

    def test_short_lived_certificate(self) -> None:
        """Shorter than renew_before: renewed at two thirds of its life, not in a loop."""
        self.assertEqual(self.policy.renew_at(0, 6 * DAY, 0), 4 * DAY)

    def test_clock_ahead_of_the_ca(self) -> None:
        """Obtained (by our clock) long after its notBefore: still two thirds of a lifetime."""
        obtained = 80 * DAY
        self.assertEqual(self.policy.renew_at(0, 90 * DAY, obtained), obtained + 60 * DAY)

    def test_retry_backoff(self) -> None:
        """Doubling from retry_initial, capped at retry_max."""
        delays = [self.policy.retry_delay(n) for n in range(0, 7)]
        self.assertEqual(delays, [0, 300, 600, 1200, 2400, 3600, 3600])
        self.assertEqual(self.policy.retry_delay(10_000), 3600)

    def test_wait_for_peer(self) -> None:
        self.assertEqual(self.policy.wait_for_peer, 15.0)
        self.assertEqual(RenewalPolicy(retry_initial=2).wait_for_peer, 2)
