"""
The real ACME client (certbot's `acme`) against pebble, through the same contract the fake
CA passes in tests/unit/test_router_acme.py. Pebble validates HTTP-01 for real: it fetches
the challenge from an nginx serving the webroot the client writes to.
"""

from __future__ import annotations

import unittest
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import NginxServer, PebbleServer, Services

from director.router.cert_store import new_private_key_pem
from director.router.issuer import ACMEClient, ACMEError, WebrootChallenges
from tests.unit.test_router_acme import ACMEClientContract, RecordingResponder


@pytest.fixture(scope="class")
def pebble_for_client(request: pytest.FixtureRequest, services: Services) -> Iterator[None]:
    nginx = services.start(NginxServer(services.base_dir, name="acme-client-nginx"))
    pebble = services.start(
        PebbleServer(services.base_dir, name="pebble-acme-client", http_port=nginx.port)
    )
    webroot = nginx.root_dir / ".well-known" / "acme-challenge"
    webroot.mkdir(parents=True, exist_ok=True)
    webroot.chmod(0o755)
    request.cls.webroot = webroot
    request.cls.pebble = pebble
    request.cls.account_dir = Path(nginx.dir) / "account"
    yield
    services.stop(pebble)
    services.stop(nginx)


@pytest.mark.usefixtures("pebble_for_client")
class PebbleACMEClientTests(ACMEClientContract, unittest.TestCase):
    suffix = "acme-client.test"
    pebble: PebbleServer
    account_dir: Path

    def setUp(self) -> None:
        self.client = ACMEClient(
            self.pebble.directory_url,
            "admin@example.test",
            self.account_dir / "account.key",
            ca_bundle=str(self.pebble.ca_cert_path),
            timeout=10,
            deadline=30,
        )

    def test_account_key_is_private_and_reused(self) -> None:
        """The account key is written 0600 once; a second client finds the same account."""
        self._issue(self.domain(), new_private_key_pem())
        key = self.account_dir / "account.key"
        self.assertEqual(key.stat().st_mode & 0o777, 0o600)
        before = key.read_bytes()
        other = ACMEClient(
            self.pebble.directory_url,
            "",
            key,
            ca_bundle=str(self.pebble.ca_cert_path),
            timeout=10,
            deadline=30,
        )
        other.issue(self.domain(), new_private_key_pem(), WebrootChallenges(self.webroot))
        self.assertEqual(key.read_bytes(), before)

    def test_unreachable_server_is_reported(self) -> None:
        client = ACMEClient(
            "https://127.0.0.1:9/dir",
            "",
            self.account_dir / "account.key",
            ca_bundle=str(self.pebble.ca_cert_path),
            timeout=2,
        )
        with self.assertRaises(ACMEError) as cm:
            client.issue(self.domain(), new_private_key_pem(), RecordingResponder(None))
        self.assertEqual(cm.exception.type, "network")
