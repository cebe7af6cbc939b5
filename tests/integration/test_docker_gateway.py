"""The real Docker gateway (docker SDK in a thread pool, real dockerd in swarm mode) passes
the same contract as the fake."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from director.common.threads import BlockingPool
from director.orchestrator.docker_gateway import DockerGateway
from director.orchestrator.images import BASE_IMAGE
from director.testing.docker_contract import CHECKS, DockerContext


@pytest.fixture
def context(docker_swarm: Any, tmp_path: Path) -> Any:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    pool = BlockingPool(reactor, "docker-test", 4, timeout=120)
    pool.startService()
    site_dir = tmp_path / "site"
    (site_dir / "public").mkdir(parents=True)
    site_dir.chmod(0o755)

    async def sleep(seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)

    prefix = f"t{os.getpid()}"
    yield DockerContext(
        DockerGateway(pool),
        BASE_IMAGE,
        "director-test-sites",
        site_dir,
        sleep,
        prefix,
        900_000 + os.getpid() % 10_000 * 10,
    )
    pool.stopService()


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest_twisted.ensureDeferred
async def test_contract(context: DockerContext, check: Any) -> None:
    await check(context)
