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


@pytest_twisted.ensureDeferred
async def test_builds_keep_to_their_time_and_memory(docker_swarm: Any) -> None:
    """
    A build that runs past its time limit is stopped and reported as such; one that needs
    more memory than it may take fails (the kernel ends it) instead of taking the machine's.
    Neither leaves an image behind.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    from director.orchestrator.docker_gateway import BuildError, BuildLimits

    pool = BlockingPool(reactor, "docker-test", 2, timeout=120)
    builds = BlockingPool(reactor, "builds-test", 1, timeout=120)
    pool.startService()
    builds.startService()
    # 10 s: past the time a busy dockerd takes to start the step's container, which is what
    # a timed-out build kills (a limit that ends before the step starts is in the note).
    gateway = DockerGateway(pool, builds=BuildLimits(builds, timeout=10, memory=64 * 1024 * 1024))
    prefix = f"director/t{os.getpid()}-limits"
    try:
        with pytest.raises(BuildError) as slow:
            # (a step of its own each run: a cached step would take no time)
            nonce = os.urandom(8).hex()
            await gateway.build_image(
                f"FROM {BASE_IMAGE}\nRUN echo {nonce} && sleep 30\n", f"{prefix}:slow", print
            )
        assert "took longer than 10 s" in str(slow.value)
        with pytest.raises(BuildError) as hungry:
            # 200 MB held in memory by the image's own Python, over the 64 MB the build may use
            await gateway.build_image(
                f'FROM {BASE_IMAGE}\nRUN python3 -c "b = bytearray(200 * 2**20); print(len(b))"\n',
                f"{prefix}:hungry",
                print,
            )
        assert "137" in str(hungry.value) or "137" in hungry.value.log
        await deferLater(reactor, 30, lambda: None)  # past the sleep: was it cancelled?
        assert not await gateway.image_exists(f"{prefix}:slow")
        assert not await gateway.image_exists(f"{prefix}:hungry")
    finally:
        pool.stopService()
        builds.stopService()


@pytest_twisted.ensureDeferred
async def test_gateways_see_only_their_own_nodes_services(
    docker_swarm: Any, tmp_path: Path
) -> None:
    """
    Two gateways on one swarm, for two nodes: each lists only the services it put (the other
    node's is constrained to a node this swarm lacks, so it stays pending), and a service
    without an owner (made before services had one) is listed by both.
    """
    from twisted.internet import reactor

    from director.orchestrator.docker_gateway import OWNER_LABEL
    from director.orchestrator.sites import HostedSite, service_spec

    pool = BlockingPool(reactor, "docker-test", 2, timeout=120)
    pool.startService()
    mine, theirs = DockerGateway(pool), DockerGateway(pool, node="no-such-node")
    base = 910_000 + os.getpid() % 10_000 * 10
    network = "director-test-sites"
    site_dir = tmp_path / "site"
    (site_dir / "public").mkdir(parents=True)
    sites = [
        HostedSite(id=base + i, name=f"owned{i}", type="dynamic", image=BASE_IMAGE)
        for i in range(3)
    ]
    await mine.ensure_network(network)
    try:
        await mine.put_service(service_spec(sites[0], site_dir, network, "UTC"))
        await theirs.put_service(service_spec(sites[1], site_dir, network, "UTC"))
        import docker

        legacy = service_spec(sites[2], site_dir, network, "UTC")
        client = docker.APIClient(version="1.41", timeout=60)
        client.create_service(legacy["TaskTemplate"], name=legacy["Name"], labels=legacy["Labels"])
        listed_mine = {s.name for s in await mine.list_services("director.site")}
        listed_theirs = {s.name for s in await theirs.list_services("director.site")}
        names = [s.service_name for s in sites]
        assert {names[0], names[2]} <= listed_mine and names[1] not in listed_mine
        assert {names[1], names[2]} <= listed_theirs and names[0] not in listed_theirs
        other = await theirs.get_service(names[1])
        assert other is not None and other.spec["Labels"][OWNER_LABEL] == "no-such-node"
    finally:
        # each by the gateway whose node owns it: another node's service is not removed
        for site, owner in zip(sites, (mine, theirs, mine), strict=True):
            await owner.remove_service(site.service_name)
        pool.stopService()
