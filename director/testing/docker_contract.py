"""
The behaviour every L{IDockerGateway} must have. The same checks run against
L{FakeDockerGateway} (tests/unit/test_fake_docker.py) and the real gateway with a real
dockerd (tests/integration/test_docker_gateway.py), which keeps the fake honest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zope.interface.verify import verifyObject

from director.orchestrator.docker_gateway import (
    OWNER_LABEL,
    BuildError,
    ContainerEvent,
    DockerError,
    IDockerGateway,
    TaskInfo,
)
from director.orchestrator.sites import HostedSite, Limits, service_spec


@dataclass
class DockerContext:
    gateway: Any
    base_image: str
    network: str
    site_dir: Path
    sleep: Callable[[float], Awaitable[None]]
    prefix: str  # makes names unique per run, so runs never collide
    site_id: int


async def eventually(
    ctx: DockerContext, check: Callable[[], Awaitable[bool]], timeout: float = 60
) -> None:
    """Poll C{check} until true; the fake must already be there (its sleep refuses to wait)."""
    waited = 0.0
    while not await check():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await ctx.sleep(0.2)
        waited += 0.2


def _site(ctx: DockerContext, **changes: Any) -> HostedSite:
    fields: dict[str, Any] = {
        "id": ctx.site_id,
        "name": f"{ctx.prefix}-site",
        "type": "dynamic",
        "image": ctx.base_image,
        "limits": Limits(memory_mb=64),
    }
    fields.update(changes)
    return HostedSite(**fields)


def _spec(ctx: DockerContext, site: HostedSite) -> dict[str, Any]:
    return service_spec(site, ctx.site_dir, ctx.network, "UTC")


async def check_interface(ctx: DockerContext) -> None:
    assert verifyObject(IDockerGateway, ctx.gateway)


async def check_services_belong_to_a_node(ctx: DockerContext) -> None:
    """
    A service put is constrained to the gateway's swarm node and labelled with it (so
    orchestrators sharing a swarm each keep to their own services).
    """
    site = _site(ctx, id=ctx.site_id + 5, name=f"{ctx.prefix}-owned")
    gw = ctx.gateway
    await gw.ensure_network(ctx.network)
    await gw.put_service(_spec(ctx, site))
    try:
        info = await gw.get_service(site.service_name)
        assert info is not None
        node = info.spec["Labels"][OWNER_LABEL]
        assert node
        assert info.spec["TaskTemplate"]["Placement"]["Constraints"] == [f"node.hostname=={node}"]
        assert info.spec["Labels"]["director.site"] == str(site.id)
        assert site.service_name in [s.name for s in await gw.list_services("director.site")]
    finally:
        await gw.remove_service(site.service_name)


async def check_network_idempotent(ctx: DockerContext) -> None:
    await ctx.gateway.ensure_network(ctx.network)
    await ctx.gateway.ensure_network(ctx.network)


async def check_service_lifecycle(ctx: DockerContext) -> None:
    """Create, read, scale to 0, scale back, remove: each visible in get_service and tasks."""
    site = _site(ctx)
    gw = ctx.gateway
    await gw.ensure_network(ctx.network)
    assert await gw.get_service(site.service_name) is None
    await gw.put_service(_spec(ctx, site))
    info = await gw.get_service(site.service_name)
    assert info is not None and info.replicas == 1 and info.image == ctx.base_image
    assert site.service_name in [s.name for s in await gw.list_services("director.site")]

    async def running() -> bool:
        tasks: list[TaskInfo] = await gw.tasks(site.service_name, ctx.network)
        return any(t.state == "running" and t.address for t in tasks)

    await eventually(ctx, running)
    stopped = HostedSite(**{**site.__dict__, "availability": "not-served"})
    await gw.put_service(_spec(ctx, stopped))
    info = await gw.get_service(site.service_name)
    assert info is not None and info.replicas == 0 and info.version > 0

    async def none_running() -> bool:
        tasks = await gw.tasks(site.service_name, ctx.network)
        return not any(t.state == "running" for t in tasks)

    await eventually(ctx, none_running)
    await gw.put_service(_spec(ctx, site))
    await eventually(ctx, running)
    assert await gw.remove_service(site.service_name) is True
    assert await gw.remove_service(site.service_name) is False
    assert await gw.get_service(site.service_name) is None


async def check_restart_replaces_task(ctx: DockerContext) -> None:
    site = _site(ctx, id=ctx.site_id + 1, name=f"{ctx.prefix}-restart")
    gw = ctx.gateway
    await gw.ensure_network(ctx.network)
    await gw.put_service(_spec(ctx, site))
    try:
        first: list[str] = []

        async def running() -> bool:
            tasks = await gw.tasks(site.service_name, ctx.network)
            ids = [t.container_id for t in tasks if t.state == "running" and t.container_id]
            first[:] = ids
            return bool(ids)

        await eventually(ctx, running)
        before = set(first)
        await gw.restart_service(site.service_name)

        async def replaced() -> bool:
            await running()
            return bool(first) and not set(first) & before

        await eventually(ctx, replaced)
    finally:
        await gw.remove_service(site.service_name)


async def check_restart_unknown(ctx: DockerContext) -> None:
    try:
        await ctx.gateway.restart_service(f"{ctx.prefix}-missing")
    except DockerError:
        return
    raise AssertionError("restarting a missing service must fail")


async def check_tasks_of_a_missing_service(ctx: DockerContext) -> None:
    """A service that does not exist (removed by hand, say) has no tasks; no error."""
    assert await ctx.gateway.tasks(f"{ctx.prefix}-missing", ctx.network) == []
    assert await ctx.gateway.container_logs("0123456789ab-no-such-container", 10) == []


async def check_image_exists(ctx: DockerContext) -> None:
    """The orchestrator checks images before using them (swarm would accept a missing one)."""
    assert not await ctx.gateway.image_exists("director/none:1")
    assert await ctx.gateway.image_exists(ctx.base_image)


async def check_build_failure_reports_log(ctx: DockerContext) -> None:
    lines: list[str] = []
    tag = f"director/{ctx.prefix}-bad:1"
    try:
        await ctx.gateway.build_image(f"FROM {ctx.base_image}\nRUN false\n", tag, lines.append)
    except BuildError as e:
        assert "failed" in str(e)
        assert lines
    else:
        raise AssertionError("a failing RUN must fail the build")
    assert not await ctx.gateway.image_exists(tag)
    assert await ctx.gateway.remove_image(tag) is False


async def check_build_and_remove_image(ctx: DockerContext) -> None:
    lines: list[str] = []
    tag = f"director/{ctx.prefix}-ok:1"
    await ctx.gateway.build_image(
        f"FROM {ctx.base_image}\nRUN echo built > /built\n", tag, lines.append
    )
    assert await ctx.gateway.image_exists(tag)
    assert await ctx.gateway.remove_image(tag) is True
    assert not await ctx.gateway.image_exists(tag)


async def check_prune_images(ctx: DockerContext) -> None:
    """
    Pruning a repository removes its tags except those kept and one a running service
    uses; other repositories are untouched.
    """
    gw = ctx.gateway
    repository = f"director/{ctx.prefix}-prune"
    tags = [f"{repository}:{n}" for n in (1, 2, 3)]
    other = f"director/{ctx.prefix}-other:1"
    for tag in [*tags, other]:
        await gw.build_image(f"FROM {ctx.base_image}\nRUN echo {tag} > /tag\n", tag, lambda _: None)
    site = _site(ctx, id=ctx.site_id + 2, name=f"{ctx.prefix}-prune", image=tags[1])
    await gw.ensure_network(ctx.network)
    await gw.put_service(_spec(ctx, site))
    try:

        async def running() -> bool:
            tasks = await gw.tasks(site.service_name, ctx.network)
            return any(t.state == "running" for t in tasks)

        await eventually(ctx, running)
        assert await gw.prune_images(repository, frozenset({tags[2]})) == [tags[0]]
        assert [await gw.image_exists(t) for t in tags] == [False, True, True]
        assert await gw.image_exists(other)
        assert await gw.prune_images(repository, frozenset({tags[2]})) == []
    finally:
        await gw.remove_service(site.service_name)
        await gw.remove_image(other)

        async def all_gone() -> bool:
            await gw.prune_images(repository, frozenset())
            return not any([await gw.image_exists(t) for t in tags])

        await eventually(ctx, all_gone)


async def check_exec_output_and_status(ctx: DockerContext) -> None:
    """A command run in a site's terminal container gives its output and exit status."""
    from director.orchestrator.sites import terminal_container_spec

    site = _site(ctx, id=ctx.site_id + 3, name=f"{ctx.prefix}-term")
    gw = ctx.gateway
    await gw.ensure_network(ctx.network)
    spec = terminal_container_spec(site, ctx.site_dir, ctx.network, "UTC")
    container = await gw.ensure_container(spec)
    try:
        assert await gw.ensure_container(spec) == container  # unchanged spec: same container
        exec_id, sock = await gw.exec_start(
            container, ["sh", "-c", "echo hello; exit 3"], {}, f"{site.uid}", "/site", False
        )
        sock.settimeout(30)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        assert b"hello" in data
        codes: list[int | None] = []

        async def exited() -> bool:
            codes.append(await gw.exec_exit_code(exec_id))
            return codes[-1] is not None

        await eventually(ctx, exited)
        assert codes[-1] == 3
    finally:
        assert await gw.remove_container(spec["Name"]) is True
    assert await gw.remove_container(spec["Name"]) is False


async def check_events_follow_tasks(ctx: DockerContext) -> None:
    """
    A watcher hears a site task's container start (the container the task list shows
    running) and die when the service goes; stopping the watch twice is harmless.
    """
    site = _site(ctx, id=ctx.site_id + 4, name=f"{ctx.prefix}-events")
    gw = ctx.gateway
    events: list[ContainerEvent] = []
    errors: list[str] = []
    stop = gw.watch_events(events.append, errors.append)
    await gw.ensure_network(ctx.network)
    try:
        await gw.put_service(_spec(ctx, site))
        running: list[str] = []

        async def started() -> bool:
            tasks = await gw.tasks(site.service_name, ctx.network)
            running[:] = [t.container_id for t in tasks if t.state == "running" and t.container_id]
            seen = {e.container_id for e in events if e.action == "start" and e.site_id == site.id}
            return bool(running) and set(running) <= seen

        await eventually(ctx, started)
        await gw.remove_service(site.service_name)

        async def died() -> bool:
            return any(
                e.action == "die" and e.container_id == running[0] and e.site_id == site.id
                for e in events
            )

        await eventually(ctx, died)
        assert all(isinstance(e, ContainerEvent) for e in events)
    finally:
        stop()
        stop()  # idempotent
        await gw.remove_service(site.service_name)
    assert not errors, errors


async def check_exec_kill(ctx: DockerContext) -> None:
    """A running exec can be ended; ending one that finished reports False."""
    from director.orchestrator.sites import terminal_container_spec

    site = _site(ctx, id=ctx.site_id + 4, name=f"{ctx.prefix}-kill")
    gw = ctx.gateway
    await gw.ensure_network(ctx.network)
    spec = terminal_container_spec(site, ctx.site_dir, ctx.network, "UTC")
    container = await gw.ensure_container(spec)
    try:
        exec_id, sock = await gw.exec_start(
            container, ["sh", "-c", "sleep 600"], {}, f"{site.uid}", "/site", True
        )
        assert await gw.exec_exit_code(exec_id) is None
        assert await gw.exec_kill(exec_id) is True
        codes: list[int | None] = []

        async def ended() -> bool:
            codes.append(await gw.exec_exit_code(exec_id))
            return codes[-1] is not None

        await eventually(ctx, ended)
        assert await gw.exec_kill(exec_id) is False
        sock.close()
    finally:
        await gw.remove_container(spec["Name"])


async def check_engine_state(ctx: DockerContext) -> None:
    """An engine that runs answers its probe healthy: an active swarm node, seen ready."""
    report = await ctx.gateway.engine_state()
    assert report["healthy"] is True, report
    assert report["engine"]["ok"] is True and report["engine"]["error"] is None, report
    assert report["swarm"]["local_state"] == "active", report
    assert report["swarm"]["state"] == "ready", report
    assert report["swarm"]["node"], report


CHECKS = [
    check_interface,
    check_engine_state,
    check_network_idempotent,
    check_service_lifecycle,
    check_services_belong_to_a_node,
    check_restart_replaces_task,
    check_restart_unknown,
    check_tasks_of_a_missing_service,
    check_image_exists,
    check_build_failure_reports_log,
    check_build_and_remove_image,
    check_prune_images,
    check_exec_output_and_status,
    check_exec_kill,
    check_events_follow_tasks,
]
