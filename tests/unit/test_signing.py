"""Signed requests: what the verifier accepts and every way it refuses."""

import io

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.common.client import file_digest
from director.common.signing import (
    HEADER_CALLER,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    AuthenticationError,
    NonceCache,
    body_digest,
    stream_digest,
)
from director.testing.keys import Keyring


class VerifierTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.keys = Keyring()
        self.signer = self.keys.signer("manager", self.clock)
        self.verifier = self.keys.verifier("orchestrator", self.clock)

    def refused(self, code: str, method: str, target: str, headers: dict, body: bytes) -> None:
        with self.assertRaises(AuthenticationError) as cm:
            self.verifier.verify(method, target, headers, body)
        self.assertEqual(cm.exception.code, code)

    def test_valid_request_names_the_caller(self) -> None:
        """A request signed with the manager's key is accepted as coming from the manager."""
        headers = self.signer.headers("orchestrator", "POST", "/v1/sites?x=1", b'{"a": 1}')
        self.assertEqual(
            self.verifier.verify("POST", "/v1/sites?x=1", headers, b'{"a": 1}'), "manager"
        )

    def test_missing_headers(self) -> None:
        """No credentials at all, or only some of the headers, are refused."""
        self.refused("missing_credentials", "GET", "/v1/x", {}, b"")
        headers = self.signer.headers("orchestrator", "GET", "/v1/x")
        del headers[HEADER_SIGNATURE]
        self.refused("malformed_credentials", "GET", "/v1/x", headers, b"")

    def test_replay_refused(self) -> None:
        """The same signed request is accepted once only."""
        headers = self.signer.headers("orchestrator", "GET", "/v1/x")
        self.verifier.verify("GET", "/v1/x", headers, b"")
        self.refused("replayed", "GET", "/v1/x", headers, b"")

    def test_expired_and_future(self) -> None:
        """Requests older or newer than the allowed clock skew are refused."""
        old = self.signer.headers("orchestrator", "GET", "/v1/x")
        self.clock.advance(61)
        self.refused("expired", "GET", "/v1/x", old, b"")
        future = self.keys.signer("manager", Clock())
        future_clock = future.clock
        assert isinstance(future_clock, Clock)
        future_clock.advance(self.clock.seconds() + 120)
        self.refused("expired", "GET", "/v1/x", future.headers("orchestrator", "GET", "/v1/x"), b"")

    def test_tampered_body(self) -> None:
        """A body that differs from the signed digest is refused."""
        headers = self.signer.headers("orchestrator", "PUT", "/v1/x", b"original")
        self.refused("tampered", "PUT", "/v1/x", headers, b"changed")

    def test_streamed_body_digest(self) -> None:
        """A body streamed from a file is signed and checked by its digest, never held whole."""
        body = bytes(range(256)) * 5000
        digest = stream_digest(io.BytesIO(body), chunk=1000)
        self.assertEqual(digest, body_digest(body))
        headers = self.signer.headers("orchestrator", "PUT", "/v1/x", digest=digest)
        self.assertEqual(
            self.verifier.verify("PUT", "/v1/x", headers, digest_of_body=digest), "manager"
        )
        headers = self.signer.headers("orchestrator", "PUT", "/v1/x", digest=digest)
        with self.assertRaises(AuthenticationError) as cm:
            self.verifier.verify("PUT", "/v1/x", headers, digest_of_body=body_digest(b"other"))
        self.assertEqual(cm.exception.code, "tampered")

    def test_file_digest_leaves_the_file_at_its_start(self) -> None:
        """The manager hashes an upload's spool a chunk at a time, off the reactor's back."""
        body = b"x" * 100_000
        stream = io.BytesIO(body)
        stream.seek(500)
        d = Deferred.fromCoroutine(file_digest(self.clock, stream, chunk=4096))
        self.clock.advance(0)
        for _ in range(50):
            self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), body_digest(body))
        self.assertEqual(stream.tell(), 0)

    def test_tampered_path_method_time_and_caller(self) -> None:
        """Changing the path, method, timestamp or claimed caller breaks the signature."""
        headers = self.signer.headers("orchestrator", "GET", "/v1/a")
        self.refused("bad_signature", "GET", "/v1/b", dict(headers), b"")
        self.refused("bad_signature", "DELETE", "/v1/a", dict(headers), b"")
        moved = dict(headers, **{HEADER_TIMESTAMP: str(int(self.clock.seconds()) + 1)})
        self.refused("bad_signature", "GET", "/v1/a", moved, b"")
        self.refused(
            "bad_signature", "GET", "/v1/a", dict(headers, **{HEADER_CALLER: "shell"}), b""
        )

    def test_other_audience(self) -> None:
        """A request signed for the router does not work on the orchestrator."""
        headers = self.signer.headers("router", "GET", "/v1/x")
        self.refused("bad_signature", "GET", "/v1/x", headers, b"")

    def test_forged_key(self) -> None:
        """Claiming to be the manager without its private key fails."""
        headers = self.keys.impostor("manager", self.clock).headers("orchestrator", "GET", "/v1/x")
        self.refused("bad_signature", "GET", "/v1/x", headers, b"")

    def test_unknown_caller(self) -> None:
        """A caller name with no public key is refused."""
        headers = self.signer.headers("orchestrator", "GET", "/v1/x")
        self.refused("unknown_caller", "GET", "/v1/x", dict(headers, **{HEADER_CALLER: "x"}), b"")

    def test_garbage_signature(self) -> None:
        """Undecodable signatures and timestamps are refused, not crashes."""
        headers = self.signer.headers("orchestrator", "GET", "/v1/x")
        self.refused(
            "bad_signature", "GET", "/v1/x", dict(headers, **{HEADER_SIGNATURE: "!!"}), b""
        )
        self.refused(
            "malformed_credentials", "GET", "/v1/x", dict(headers, **{HEADER_TIMESTAMP: "-5"}), b""
        )

    def test_refused_request_does_not_burn_nonce(self) -> None:
        """A forged request reusing a real nonce cannot block the real request."""
        headers = self.signer.headers("orchestrator", "GET", "/v1/x")
        self.refused("bad_signature", "GET", "/v1/y", dict(headers), b"")
        self.assertEqual(self.verifier.verify("GET", "/v1/x", headers, b""), "manager")


class NonceCacheTests(SynchronousTestCase):
    def test_forgets_after_window(self) -> None:
        """Nonces are kept for twice the window, then pruned, so memory stays bounded."""
        clock = Clock()
        cache = NonceCache(clock, window=60)
        self.assertTrue(cache.add("a" * 32))
        self.assertFalse(cache.add("a" * 32))
        clock.advance(121)
        self.assertTrue(cache.add("b" * 32))
        self.assertEqual(len(cache), 1)
