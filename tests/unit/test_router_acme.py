"""
The ACME client contract, run here against the in-memory fake CA and in
tests/integration/test_router_acme.py against the real client and pebble, so the fake the
certificate tests rely on behaves like the real thing.
"""

from __future__ import annotations

import itertools
import time
import unittest
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from director.router.cert_store import Bundle, new_private_key_pem
from director.router.issuer import ACMEError, IACMEClient, IChallengeResponder, WebrootChallenges
from director.router.testing import FakeACMEClient, webroot_fetcher

_names = itertools.count()


@implementer(IChallengeResponder)
class RecordingResponder:
    """Wraps a responder (or none: answers are then never served) and records calls."""

    def __init__(self, inner: Any = None) -> None:
        self._inner = inner
        self.published: list[str] = []
        self.withdrawn: list[str] = []

    def publish(self, token: str, key_authorization: str) -> None:
        self.published.append(token)
        if self._inner is not None:
            self._inner.publish(token, key_authorization)

    def withdraw(self, token: str) -> None:
        self.withdrawn.append(token)
        if self._inner is not None:
            self._inner.withdraw(token)


if TYPE_CHECKING:
    _TestCase = unittest.TestCase
else:
    _TestCase = object


class ACMEClientContract(_TestCase):
    """
    Mixed into a TestCase that sets C{self.client} (an L{IACMEClient}), C{self.webroot}
    (the directory the CA's HTTP-01 fetches are served from) and C{self.suffix} (the
    domain names to order under).
    """

    client: Any
    webroot: Path
    suffix: str

    def domain(self) -> str:
        return f"t{next(_names)}-{int(time.time() * 1000) % 100000}.{self.suffix}"

    def test_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(IACMEClient, self.client))

    def test_issues_a_chain_for_the_domain_and_key(self) -> None:
        """The chain's leaf names the domain and matches the key; an issuer follows it."""
        domain = self.domain()
        key = new_private_key_pem()
        responder = RecordingResponder(WebrootChallenges(self.webroot))
        chain = self.client.issue(domain, key, responder)
        bundle = Bundle.parse(domain, key, chain, time.time())
        self.assertGreater(bundle.not_after, time.time())
        self.assertGreaterEqual(len(x509.load_pem_x509_certificates(chain)), 2)
        self.assertTrue(responder.published)
        self.assertEqual(sorted(responder.withdrawn), sorted(responder.published))
        self.assertEqual(list(self.webroot.iterdir()), [])

    def test_each_order_is_a_new_certificate(self) -> None:
        domain = self.domain()
        first = Bundle.parse(domain, key := new_private_key_pem(), self._issue(domain, key), 0)
        second = Bundle.parse(domain, key := new_private_key_pem(), self._issue(domain, key), 0)
        self.assertNotEqual(first.serial, second.serial)

    def test_unanswered_challenge_is_an_acme_problem(self) -> None:
        """A challenge the CA cannot fetch fails with the CA's problem type and detail."""
        domain = self.domain()
        responder = RecordingResponder(None)
        with self.assertRaises(ACMEError) as cm:
            self.client.issue(domain, new_private_key_pem(), responder)
        error = cm.exception
        self.assertEqual(error.domain, domain)
        self.assertTrue(error.type.startswith("urn:ietf:params:acme:error:"), error.type)
        self.assertTrue(error.detail)
        self.assertEqual(responder.withdrawn, responder.published)

    def _issue(self, domain: str, key: bytes) -> bytes:
        chain: bytes = self.client.issue(domain, key, WebrootChallenges(self.webroot))
        return chain


class FakeACMEClientTests(ACMEClientContract, SynchronousTestCase):
    suffix = "example.test"

    def setUp(self) -> None:
        self.webroot = Path(self.mktemp())
        self.webroot.mkdir(parents=True)
        self.client = FakeACMEClient(webroot_fetcher(self.webroot), time.time)

    def test_unreachable_domain(self) -> None:
        """The fake can be told a domain's challenge is unreachable (a connection problem)."""
        self.client.unreachable.add("down.example.test")
        with self.assertRaises(ACMEError) as cm:
            self._issue("down.example.test", new_private_key_pem())
        self.assertEqual(cm.exception.type, "urn:ietf:params:acme:error:connection")


class WebrootChallengesTests(SynchronousTestCase):
    def test_publish_and_withdraw(self) -> None:
        root = Path(self.mktemp())
        root.mkdir()
        responder = WebrootChallenges(root)
        responder.publish("tok_en-1", "tok_en-1.thumb")
        self.assertEqual((root / "tok_en-1").read_text(), "tok_en-1.thumb")
        self.assertEqual((root / "tok_en-1").stat().st_mode & 0o777, 0o644)
        responder.withdraw("tok_en-1")
        responder.withdraw("tok_en-1")
        self.assertEqual(list(root.iterdir()), [])

    def test_hostile_tokens_refused(self) -> None:
        """A token from the CA names a file, so it may not climb out of the webroot."""
        root = Path(self.mktemp())
        root.mkdir()
        responder = WebrootChallenges(root)
        for token, value in [("../x", "a"), ("a/b", "a"), ("", "a"), ("ok", "a b"), ("ok", "")]:
            with self.assertRaises(ACMEError):
                responder.publish(token, value)
        self.assertEqual(list(root.iterdir()), [])
