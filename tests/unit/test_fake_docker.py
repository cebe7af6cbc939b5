"""The fake Docker passes the same contract as the real gateway."""

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from director.testing.docker_contract import CHECKS, DockerContext
from director.testing.fake_docker import FakeDockerGateway


async def _no_waiting(seconds: float) -> None:
    raise AssertionError("the fake must not need to wait")


class FakeDockerContractTests(SynchronousTestCase):
    def context(self) -> DockerContext:
        return DockerContext(
            FakeDockerGateway(),
            "director/debian:bookworm",
            "director-sites",
            Path("/srv/sites/1"),
            _no_waiting,
            "t",
            1,
        )


def _make(check: Any) -> Any:
    def test(self: FakeDockerContractTests) -> None:
        self.successResultOf(Deferred.fromCoroutine(check(self.context())))

    test.__doc__ = check.__doc__ or check.__name__
    return test


for _check in CHECKS:
    setattr(FakeDockerContractTests, "test_" + _check.__name__[len("check_") :], _make(_check))
