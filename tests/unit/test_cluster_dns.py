"""The cluster nodes' name server answers every name with NXDOMAIN, at once."""

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.names import client, error
from twisted.trial.unittest import TestCase

from director.cluster.dns import listen


class NoNamesTests(TestCase):
    async def _ask(self) -> None:
        udp, tcp = listen(reactor, "127.0.0.1", 0)
        self.addCleanup(udp.stopListening)
        self.addCleanup(tcp.stopListening)
        resolver = client.Resolver(servers=[("127.0.0.1", udp.getHost().port)])
        with self.assertRaises(error.DNSNameError):
            await resolver.lookupAddress("example.org", timeout=(2,))

    def test_every_name_is_unknown(self) -> None:
        return ensureDeferred(self._ask())  # type: ignore[return-value]
