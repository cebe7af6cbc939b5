"""
Everything the orchestrator asks of Docker, in its own terms, behind L{IDockerGateway}.

L{DockerGateway} uses the (blocking) docker SDK in a dedicated, bounded thread pool;
L{director.testing.fake_docker.FakeDockerGateway} is the in-memory twin that passes the
same contract tests (L{director.testing.docker_contract}).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from director.common.threads import Runner
from director.orchestrator.engine_health import PROBE_CALL_TIMEOUT, EngineProbe

_RUNNING_STEP = re.compile(r"Running in ([0-9a-f]{12,64})\b")
_BUILT = re.compile(r"Successfully built ([0-9a-f]{12,64})\b")


def _built_id(text: str) -> str | None:
    """The image a classic build's last line names, if this is that line."""
    match = _BUILT.search(text)
    return match.group(1) if match else None


class DockerError(Exception):
    """Docker refused or failed an operation; the message is fit to show to a person."""


class BuildError(DockerError):
    """An image build failed; C{log} has the build output."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


class ImageInUse(DockerError):
    """The image is still used by a container (perhaps one that is being removed)."""


@dataclass(frozen=True)
class TaskInfo:
    """One task (container) of a service, as far as the orchestrator cares."""

    state: str  # running, starting, preparing, complete, failed, shutdown, ...
    desired: str  # running or shutdown
    container_id: str | None
    address: str | None  # IP on the sites network, when running
    timestamp: str
    error: str | None = None
    spec: str | None = None  # the director.spec label of the template the task was made from
    task_id: str | None = None


@dataclass(frozen=True)
class ContainerEvent:
    """A site container started or died (a swarm task coming up, crashing or being replaced)."""

    action: str  # "start" | "die"
    container_id: str
    site_id: int


#: The container events the runtime follows, for containers labelled director.site.
EVENT_ACTIONS = ("start", "die")


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    id: str
    replicas: int
    image: str
    version: int
    spec: dict[str, Any]


class IDockerGateway(Interface):
    """Docker operations the orchestrator needs. Every method returns a Deferred."""

    def ensure_network(name: str, subnet: str | None = None) -> Deferred[None]:
        """
        Create the swarm-scoped bridge network site tasks attach to (with addresses from
        C{subnet}, if given, and then with traffic between its containers turned off), if
        missing. An existing network is left as it is.
        """

    def engine_state() -> Deferred[dict[str, Any]]:
        """
        Whether the engine can run sites now: an L{engine_health.engine_report}, never a
        failure (an engine that does not answer is reported so).
        """

    def get_service(name: str) -> Deferred[ServiceInfo | None]:
        """The service called C{name}, or None."""

    def put_service(spec: dict[str, Any]) -> Deferred[None]:
        """Create the service C{spec["Name"]}, or update it to C{spec}."""

    def restart_service(name: str) -> Deferred[None]:
        """Replace the service's tasks with new ones (DockerError if there is no service)."""

    def rollback_service(name: str) -> Deferred[None]:
        """
        Put the service's previous spec back (undo the last put or restart): tasks made from
        the undone spec go, a task still running from the previous one stays.
        """

    def container_logs(container: str, tail: int) -> Deferred[list[str]]:
        """The last C{tail} lines a container wrote (stdout and stderr); [] if it is gone."""

    def remove_service(name: str) -> Deferred[bool]:
        """
        Remove the service; False if there was none, or if it is another node's (one this
        gateway's node does not own: a site moved there keeps its service).
        """

    def list_services(label: str) -> Deferred[list[ServiceInfo]]:
        """Services carrying label C{label}."""

    def tasks(name: str, network: str) -> Deferred[list[TaskInfo]]:
        """
        The service's tasks, newest first, with their address on C{network} (when starting
        or running); none if there is no such service.
        """

    def image_exists(ref: str) -> Deferred[bool]:
        """Whether image C{ref} is present locally."""

    def build_image(dockerfile: str, tag: str, on_line: Callable[[str], None]) -> Deferred[None]:
        """Build C{tag} from C{dockerfile} text, calling C{on_line} (in a thread) per line."""

    def remove_image(ref: str) -> Deferred[bool]:
        """Remove image C{ref}; False if there was none. DockerError if it is in use."""

    def prune_images(repository: str, keep: frozenset[str]) -> Deferred[list[str]]:
        """
        Remove the tags of C{repository} (like C{director/site-5}) not in C{keep}; return
        the tags removed. A tag a running container uses stays (a later prune takes it);
        one only stopped containers use is removed.
        """

    def ensure_container(spec: dict[str, Any]) -> Deferred[str]:
        """
        Make the plain container C{spec["Name"]} (a site's terminal container) exist and run
        with exactly C{spec}, recreating it when the spec changed; return its id.
        """

    def remove_container(name: str) -> Deferred[bool]:
        """Force-remove a plain container; False if there was none."""

    def exec_start(
        container: str, argv: list[str], env: dict[str, str], user: str, workdir: str, tty: bool
    ) -> Deferred[tuple[str, Any]]:
        """
        Start C{argv} in C{container}; return the exec id and a connected socket carrying its
        stdin and output (raw bytes with C{tty}, Docker's multiplexed frames without).
        """

    def exec_resize(exec_id: str, rows: int, cols: int) -> Deferred[None]:
        """Tell the exec's terminal its new size."""

    def exec_kill(exec_id: str) -> Deferred[bool]:
        """
        End the exec's process (and its process group) if it still runs: HUP, then KILL
        after a grace period. False if it had already ended.
        """

    def exec_exit_code(exec_id: str) -> Deferred[int | None]:
        """The exec's exit status, or None while it runs."""

    def follow_logs(
        service: str, tail: int, on_line: Callable[[str], None], on_end: Callable[[], None]
    ) -> Callable[[], None]:
        """
        Stream the service's log, last C{tail} lines first, calling C{on_line} per line from
        a thread of its own (never a pool slot); returns a function that stops the stream.
        """

    def watch_events(
        on_event: Callable[[ContainerEvent], None], on_error: Callable[[str], None]
    ) -> Callable[[], None]:
        """
        Follow start and die events of site containers (those labelled C{director.site}),
        calling C{on_event} for each from a thread of its own (never a pool slot). When the
        stream breaks, C{on_error} gets a message and the watch reconnects after a pause
        (events may have been missed: the caller resynchronises). Returns a function that
        stops the watch (idempotent, callable from the reactor thread).
        """


#: Options of the sites network's bridge: containers on it cannot reach each other (the host,
#: and so nginx, still reaches them). A swarm-scoped bridge takes them from its config-only
#: network; the sites firewall enforces the same for a network made without them.
SITES_BRIDGE_OPTIONS = {"com.docker.network.bridge.enable_icc": "false"}


#: The service label naming the swarm node (and so the orchestrator) a site service belongs
#: to: orchestrators sharing one swarm each see and change only their own services.
OWNER_LABEL = "director.node"


def _blocking_network(
    client: Any, name: str, subnet: str | None, manager: Any | None = None
) -> None:
    """
    The swarm-scoped bridge is made once, through the swarm manager; the config-only
    network it takes its addresses from is per node, so every node's orchestrator makes its
    own (with its own subnet) even when the swarm-scoped network already exists.
    """
    manager = client if manager is None else manager
    existing = [net for net in manager.networks(names=[name]) if net["Name"] == name]
    exists = bool(existing)
    if exists and manager is client and not (existing[0].get("ConfigFrom") or {}).get("Network"):
        return  # made without a config-only network (one machine): nothing is per node
    # Otherwise (even on the swarm manager's own node: another node's orchestrator, starting
    # at the same time, may have made the swarm-scoped bridge first) this node's config-only
    # network must exist, or every task here is rejected ("configuration network ... does
    # not exist").
    config_from = None
    if subnet is not None:
        # A swarm-scoped bridge takes its addresses from a config-only network on each node.
        config_from = f"{name}-config"
        if not any(net["Name"] == config_from for net in client.networks(names=[config_from])):
            response = client._post_json(
                client._url("/networks/create"),
                data={
                    "Name": config_from,
                    "ConfigOnly": True,
                    "IPAM": {"Driver": "default", "Config": [{"Subnet": subnet}]},
                    "Options": SITES_BRIDGE_OPTIONS,
                },
            )
            client._result(response, json=True)
    if exists:
        return
    data: dict[str, Any] = {
        "Name": name,
        "Driver": "bridge",
        "Scope": "swarm",
        "Attachable": True,
        "CheckDuplicate": True,
    }
    if config_from is not None:
        data["ConfigFrom"] = {"Network": config_from}
    import docker.errors

    try:
        manager._result(manager._post_json(manager._url("/networks/create"), data=data), json=True)
    except docker.errors.APIError:
        # another node's orchestrator, starting at the same time, made it first
        if not any(net["Name"] == name for net in manager.networks(names=[name])):
            raise


def _find(client: Any, name: str) -> dict[str, Any] | None:
    """The service called exactly C{name} (the API's name filter matches prefixes)."""
    for service in client.services(filters={"name": name}):
        if service["Spec"]["Name"] == name:
            return dict(service)
    return None


def _remove_stopped_task_containers(client: Any, service: str) -> None:
    """The containers of C{service}'s tasks that ended on this engine (swarm keeps them)."""
    label = f"com.docker.swarm.service.name={service}"
    for status in ("exited", "dead", "created"):
        for container in client.containers(all=True, filters={"label": label, "status": status}):
            client.remove_container(container["Id"], force=True)


def _service_info(raw: dict[str, Any]) -> ServiceInfo:
    spec = raw["Spec"]
    replicas = spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0)
    image = spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@", 1)[0]
    return ServiceInfo(spec["Name"], raw["ID"], replicas, image, raw["Version"]["Index"], spec)


@dataclass(frozen=True)
class BuildLimits:
    """Where image builds run (a bounded pool of their own) and what one may take."""

    runner: Runner
    timeout: float = 900
    memory: int = 1024 * 1024 * 1024  # bytes, swap included
    #: the HTTP proxy RUN steps reach the Debian mirror through ("": none)
    proxy: str = ""

    def build_args(self) -> dict[str, str]:
        """
        The build's arguments: the proxy as C{http_proxy} (apt's) and C{HTTP_PROXY}, which
        Docker predefines, so no Dockerfile declares them and no image keeps them.
        """
        if not self.proxy:
            return {}
        return {"http_proxy": self.proxy, "HTTP_PROXY": self.proxy}


def _with_placement(spec: dict[str, Any], node: str) -> dict[str, Any]:
    """C{spec} owned by, and constrained to, swarm node C{node}."""
    template = dict(spec["TaskTemplate"])
    placement = dict(template.get("Placement") or {})
    constraint = f"node.hostname=={node}"
    placement["Constraints"] = [
        *(c for c in placement.get("Constraints", ()) if not c.startswith("node.hostname")),
        constraint,
    ]
    template["Placement"] = placement
    labels = dict(spec.get("Labels") or {}, **{OWNER_LABEL: node})
    return dict(spec, TaskTemplate=template, Labels=labels)


def _owned(owner: str | None, node: str) -> bool:
    """
    Whether a service whose L{OWNER_LABEL} is C{owner} is node C{node}'s: labelled so, or
    unlabelled (made before services were labelled, by the only orchestrator there was).
    """
    return owner is None or owner == node


@implementer(IDockerGateway)
class DockerGateway:
    """
    The real gateway: the docker SDK's low-level client, called only from C{runner}.

    Two engines may be involved: the local one (C{docker_url}: containers, execs, logs,
    images, builds, events, the config-only network) and the swarm manager's
    (C{manager_url}: services and tasks, which a worker node cannot create or list). Every
    service this gateway puts is constrained to C{node} (default: the local engine's own
    name, which is its swarm node's hostname) and labelled with it (L{OWNER_LABEL}).
    """

    def __init__(
        self,
        runner: Runner,
        client_factory: Callable[[], Any] | None = None,
        builds: BuildLimits | None = None,
        docker_url: str = "",
        manager_url: str = "",
        node: str = "",
        tls: Any = None,
    ) -> None:
        self._runner = runner
        self._url = docker_url
        #: a docker.tls.TLSConfig for tcp:// engines (None: plain)
        self._tls = tls
        self._factory = client_factory or (lambda: _default_client(base_url=docker_url, tls=tls))
        self._manager_factory = (
            (lambda: _default_client(base_url=manager_url, tls=tls)) if manager_url else None
        )
        # health probes have clients of their own, with a short timeout
        self._probe = EngineProbe(
            client_factory
            or (lambda: _default_client(PROBE_CALL_TIMEOUT, base_url=docker_url, tls=tls)),
            (lambda: _default_client(PROBE_CALL_TIMEOUT, base_url=manager_url, tls=tls))
            if manager_url
            else None,
            node,
        )
        self._client: Any = None
        self._manager: Any = None
        self._node = node
        self._builds = builds or BuildLimits(runner)
        self._build_client: Any = None
        self._default_factory = client_factory is None

    def _c(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def _m(self) -> Any:
        """The swarm manager's client (the local one unless manager_url was given)."""
        if self._manager_factory is None:
            return self._c()
        if self._manager is None:
            self._manager = self._manager_factory()
        return self._manager

    def _node_name(self) -> str:
        """The node site services go to (blocking: asks the local engine once)."""
        if not self._node:
            self._node = str(self._c().info()["Name"])
        return self._node

    def _run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return self._run_on(lambda: (self._c(),), f, *args)

    def _run_manager(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return self._run_on(lambda: (self._m(),), f, *args)

    def _run_both(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """C{f(local, manager, *args)}."""
        return self._run_on(lambda: (self._c(), self._m()), f, *args)

    def _run_on(
        self, clients: Callable[[], tuple[Any, ...]], f: Callable[..., Any], *args: Any
    ) -> Deferred[Any]:
        def call() -> Any:
            import docker.errors

            try:
                return f(*clients(), *args)
            except docker.errors.APIError as e:
                raise DockerError(str(e.explanation or e)) from None
            except docker.errors.DockerException as e:
                raise DockerError(str(e)) from None

        return self._runner.run(call)

    def engine_state(self) -> Deferred[dict[str, Any]]:
        return self._runner.run(self._probe)

    def ensure_network(self, name: str, subnet: str | None = None) -> Deferred[None]:
        return self._run_both(
            lambda local, manager: _blocking_network(
                local, name, subnet, None if manager is local else manager
            )
        )

    def get_service(self, name: str) -> Deferred[ServiceInfo | None]:
        def get(client: Any) -> ServiceInfo | None:
            found = _find(client, name)
            return _service_info(found) if found else None

        return self._run_manager(get)

    def list_services(self, label: str) -> Deferred[list[ServiceInfo]]:
        def listed(local: Any, manager: Any) -> list[ServiceInfo]:
            node = self._node_name()
            return [
                _service_info(s)
                for s in manager.services(filters={"label": label})
                if _owned((s["Spec"].get("Labels") or {}).get(OWNER_LABEL), node)
            ]

        return self._run_both(listed)

    def put_service(self, spec: dict[str, Any]) -> Deferred[None]:
        def put(local: Any, client: Any) -> None:
            spec = _with_placement(given, self._node_name())
            name = spec["Name"]
            found = _find(client, name)
            options = {
                "name": name,
                "labels": spec.get("Labels"),
                "mode": spec.get("Mode"),
                "update_config": spec.get("UpdateConfig"),
                "endpoint_spec": spec.get("EndpointSpec"),
            }
            if found is None:
                client.create_service(spec["TaskTemplate"], **options)
                return
            template = dict(spec["TaskTemplate"])
            template["ForceUpdate"] = found["Spec"]["TaskTemplate"].get("ForceUpdate", 0)
            client.update_service(
                found["ID"], found["Version"]["Index"], task_template=template, **options
            )

        given = spec
        return self._run_both(put)

    def restart_service(self, name: str) -> Deferred[None]:
        def restart(client: Any) -> None:
            found = _find(client, name)
            if found is None:
                raise DockerError(f"no service {name}")
            spec = found["Spec"]
            template = dict(spec["TaskTemplate"])
            template["ForceUpdate"] = int(template.get("ForceUpdate", 0)) + 1
            client.update_service(
                found["ID"],
                found["Version"]["Index"],
                task_template=template,
                name=name,
                labels=spec.get("Labels"),
                mode=spec.get("Mode"),
                update_config=spec.get("UpdateConfig"),
                endpoint_spec=spec.get("EndpointSpec"),
            )

        return self._run_manager(restart)

    def rollback_service(self, name: str) -> Deferred[None]:
        def rollback(client: Any) -> None:
            found = _find(client, name)
            if found is None:
                raise DockerError(f"no service {name}")
            spec = found.get("PreviousSpec")
            if not spec:
                return
            client.update_service(
                found["ID"],
                found["Version"]["Index"],
                task_template=spec["TaskTemplate"],
                name=name,
                labels=spec.get("Labels"),
                mode=spec.get("Mode"),
                update_config=spec.get("UpdateConfig"),
                endpoint_spec=spec.get("EndpointSpec"),
            )

        return self._run_manager(rollback)

    def container_logs(self, container: str, tail: int) -> Deferred[list[str]]:
        def logs(client: Any) -> list[str]:
            import docker.errors

            try:
                raw = client.logs(container, stdout=True, stderr=True, tail=tail)
            except docker.errors.NotFound:
                return []
            return [line for line in raw.decode("utf-8", "replace").splitlines()]

        return self._run(logs)

    def remove_service(self, name: str) -> Deferred[bool]:
        def remove(local: Any, client: Any) -> bool:
            found = _find(client, name)
            if found is None:
                return False
            # A service another node's orchestrator took over (a site moved there) is not
            # this one's to remove, though it has the same name: only the containers its
            # tasks left stopped here go.
            if not _owned((found["Spec"].get("Labels") or {}).get(OWNER_LABEL), self._node_name()):
                _remove_stopped_task_containers(local, name)
                return False
            client.remove_service(found["ID"])
            return True

        return self._run_both(remove)

    def tasks(self, name: str, network: str) -> Deferred[list[TaskInfo]]:
        def tasks(client: Any, manager: Any) -> list[TaskInfo]:
            import docker.errors

            result = []
            try:
                listed = manager.tasks(filters={"service": name})
            except docker.errors.NotFound:
                return []  # no such service (removed by hand, say): no tasks
            for task in listed:
                status = task.get("Status", {})
                container = status.get("ContainerStatus", {}).get("ContainerID")
                address = None
                if container and status.get("State") in ("starting", "running"):
                    try:
                        networks = client.inspect_container(container)["NetworkSettings"][
                            "Networks"
                        ]
                        address = (networks.get(network) or {}).get("IPAddress") or None
                    except Exception:  # noqa: S110 (the container went away meanwhile)
                        pass
                result.append(
                    TaskInfo(
                        state=status.get("State", "unknown"),
                        desired=task.get("DesiredState", "unknown"),
                        container_id=container,
                        address=address,
                        timestamp=status.get("Timestamp", ""),
                        error=status.get("Err"),
                        spec=(
                            task.get("Spec", {}).get("ContainerSpec", {}).get("Labels") or {}
                        ).get("director.spec"),
                        task_id=task.get("ID"),
                    )
                )
            return sorted(result, key=lambda t: t.timestamp, reverse=True)

        return self._run_both(tasks)

    def image_exists(self, ref: str) -> Deferred[bool]:
        def exists(client: Any) -> bool:
            import docker.errors

            try:
                client.inspect_image(ref)
                return True
            except docker.errors.ImageNotFound:
                return False

        return self._run(exists)

    def build_image(
        self, dockerfile: str, tag: str, on_line: Callable[[str], None]
    ) -> Deferred[None]:
        limits = self._builds
        # The container running the build's current step (the classic builder says
        # "Running in <id>"): what a timed-out build stops, so it cannot finish and tag later.
        step: list[str] = []

        def build() -> None:
            import docker.errors
            import requests.exceptions

            if self._build_client is None:
                # Reads wait as long as a build may take: a quiet step is not a dead daemon.
                self._build_client = (
                    _default_client(timeout=limits.timeout, base_url=self._url, tls=self._tls)
                    if self._default_factory
                    else self._factory()
                )
            try:
                _build(self._build_client)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
                _abandon()
                raise BuildError(
                    f"building {tag} took longer than {limits.timeout:g} s", ""
                ) from None
            except BuildError as e:
                if "took longer than" in str(e):
                    _abandon()
                raise
            except docker.errors.APIError as e:
                raise DockerError(str(e.explanation or e)) from None

        def _abandon() -> None:
            """
            Stop the running step and hang up. Hanging up alone usually makes the daemon
            cancel the build, but not always; one it finishes anyway stays untagged (the
            build runs without a tag, which is given only on success in time).
            """
            client, self._build_client = self._build_client, None
            import docker.errors

            if step:
                with contextlib.suppress(docker.errors.DockerException):  # already ended
                    self._c().kill(step[-1])
            with contextlib.suppress(Exception):  # only closing its sockets
                client.close()

        def _build(client: Any) -> None:
            import docker.utils

            deadline = time.monotonic() + limits.timeout
            context = io.BytesIO()
            with tarfile.open(fileobj=context, mode="w") as tar:
                data = dockerfile.encode("utf-8")
                info = tarfile.TarInfo("Dockerfile")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            context.seek(0)
            log: list[str] = []
            image_id: str | None = None
            stream = client.build(
                fileobj=context,
                custom_context=True,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                buildargs=limits.build_args(),
                container_limits={"memory": limits.memory, "memswap": limits.memory},
            )
            for chunk in stream:
                if time.monotonic() > deadline:
                    raise BuildError(
                        f"building {tag} took longer than {limits.timeout:g} s", "\n".join(log)
                    )
                text = chunk.get("stream") or chunk.get("status") or ""
                if "error" in chunk:
                    text = chunk["error"]
                for line in text.splitlines():
                    log.append(line)
                    on_line(line)
                    running = _RUNNING_STEP.search(line)
                    if running:
                        step.append(running.group(1))
                if "error" in chunk:
                    raise BuildError(
                        f"building {tag} failed: {chunk['error'].strip()}", "\n".join(log)
                    )
                built = (chunk.get("aux") or {}).get("ID") or _built_id(text)
                if built:
                    image_id = built
            if image_id is None:
                raise BuildError(
                    f"building {tag} failed: the daemon named no image", "\n".join(log)
                )
            if time.monotonic() > deadline:
                raise BuildError(
                    f"building {tag} took longer than {limits.timeout:g} s", "\n".join(log)
                )
            repository, version = docker.utils.parse_repository_tag(tag)
            client.tag(image_id, repository, version)

        return limits.runner.run(build)

    def remove_image(self, ref: str) -> Deferred[bool]:
        def remove(client: Any) -> bool:
            import docker.errors

            try:
                client.remove_image(ref)
                return True
            except docker.errors.ImageNotFound:
                return False
            except docker.errors.APIError as e:
                if e.status_code == 409:
                    raise ImageInUse(f"image {ref} is still in use") from None
                raise

        return self._run(remove)

    def prune_images(self, repository: str, keep: frozenset[str]) -> Deferred[list[str]]:
        def prune(client: Any, manager: Any) -> list[str]:
            import docker.errors

            # A forced removal of a tag only untags an image a running container uses, which
            # would leave its service unable to start new tasks: skip every tag a live
            # container or a service names.
            in_use = {
                str(c.get("Image", "")).split("@")[0]
                for c in client.containers(all=True)
                if c.get("State") not in ("exited", "dead")
            }
            for service in manager.services():
                spec = service.get("Spec", {}).get("TaskTemplate", {}).get("ContainerSpec", {})
                in_use.add(str(spec.get("Image", "")).split("@")[0])
            removed = []
            for image in client.images(name=repository):
                for tag in image.get("RepoTags") or ():
                    if tag in keep or tag in in_use or tag.rpartition(":")[0] != repository:
                        continue
                    try:
                        # force: stopped task containers (swarm keeps a few) do not hold
                        # an image; a running container still does (409, kept).
                        client.remove_image(tag, force=True)
                    except docker.errors.ImageNotFound:
                        continue
                    except docker.errors.APIError as e:
                        if e.status_code == 409:
                            continue
                        raise
                    removed.append(tag)
            return sorted(removed)

        return self._run_both(prune)

    def ensure_container(self, spec: dict[str, Any]) -> Deferred[str]:
        return self._run(_blocking_ensure_container, spec)

    def remove_container(self, name: str) -> Deferred[bool]:
        def remove(client: Any) -> bool:
            import docker.errors

            try:
                client.remove_container(name, force=True)
                return True
            except docker.errors.NotFound:
                return False

        return self._run(remove)

    def exec_start(
        self,
        container: str,
        argv: list[str],
        env: dict[str, str],
        user: str,
        workdir: str,
        tty: bool,
    ) -> Deferred[tuple[str, Any]]:
        def start(client: Any) -> tuple[str, Any]:
            created = client.exec_create(
                container, argv, stdin=True, tty=tty, user=user, environment=env, workdir=workdir
            )
            sock = client.exec_start(created["Id"], socket=True, tty=tty)
            raw = getattr(sock, "_sock", sock)
            return created["Id"], raw

        return self._run(start)

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> Deferred[None]:
        return self._run(lambda client: client.exec_resize(exec_id, height=rows, width=cols))

    def exec_kill(self, exec_id: str, grace: float = 2.0) -> Deferred[bool]:
        def kill(client: Any) -> bool:
            import os
            import signal
            import time

            info = client.exec_inspect(exec_id)
            for _ in range(40):  # just started: dockerd may not report its pid yet
                if not info.get("Running") or (info.get("Pid") or 0) > 1:
                    break
                time.sleep(0.05)
                info = client.exec_inspect(exec_id)
            pid = info.get("Pid") or 0
            if not info.get("Running") or pid <= 1:
                return False

            def send(sig: int) -> None:
                # The exec's process is on this host (the orchestrator runs beside dockerd);
                # a TTY shell leads its own process group, which holds what it started.
                try:
                    if os.getpgid(pid) == pid:
                        os.killpg(pid, sig)
                    else:
                        os.kill(pid, sig)
                except ProcessLookupError:
                    pass

            send(signal.SIGHUP)
            send(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not client.exec_inspect(exec_id).get("Running"):
                    return True
                time.sleep(0.05)
            send(signal.SIGKILL)
            return True

        return self._run(kill)

    def exec_exit_code(self, exec_id: str) -> Deferred[int | None]:
        def code(client: Any) -> int | None:
            info = client.exec_inspect(exec_id)
            return None if info.get("Running") else info.get("ExitCode")

        return self._run(code)

    def follow_logs(
        self, service: str, tail: int, on_line: Callable[[str], None], on_end: Callable[[], None]
    ) -> Callable[[], None]:
        state: dict[str, Any] = {"stream": None, "stopped": False}

        def run() -> None:
            try:
                client = (self._manager_factory or self._factory)()
                stream = client.service_logs(
                    service, follow=True, stdout=True, stderr=True, tail=tail, is_tty=False
                )
                state["stream"] = stream
                if state["stopped"]:  # stopped while connecting
                    stream.close()
                    return
                buffer = b""
                for chunk in stream:
                    if state["stopped"]:
                        break
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        on_line(line.decode("utf-8", "replace"))
            except Exception:  # noqa: S110 (closing the stream from stop() lands here)
                pass
            finally:
                on_end()

        def stop() -> None:
            state["stopped"] = True
            stream = state["stream"]
            if stream is not None:
                try:
                    stream.close()
                except Exception:  # noqa: S110
                    pass

        threading.Thread(target=run, name=f"logs-{service}", daemon=True).start()
        return stop

    def watch_events(
        self, on_event: Callable[[ContainerEvent], None], on_error: Callable[[str], None]
    ) -> Callable[[], None]:
        watch = _EventWatch(self._factory, on_event, on_error)
        watch.thread.start()
        return watch.stop


def _container_event(raw: dict[str, Any]) -> ContainerEvent | None:
    """The event the runtime cares about in one decoded Docker event, if it is one."""
    action = raw.get("Action") or raw.get("status")
    actor = raw.get("Actor") or {}
    label = (actor.get("Attributes") or {}).get("director.site", "")
    container = actor.get("ID") or raw.get("id")
    if action not in EVENT_ACTIONS or not label.isdigit() or not container:
        return None
    return ContainerEvent(action, str(container), int(label))


class _EventWatch:
    """
    One thread following Docker's event stream, reconnecting with a growing pause when the
    stream breaks. Reconnections ask for events since the last one seen, so a short outage
    loses nothing; C{on_error} is told anyway.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        on_event: Callable[[ContainerEvent], None],
        on_error: Callable[[str], None],
        first_pause: float = 0.5,
        max_pause: float = 30.0,
    ) -> None:
        self._factory = factory
        self._on_event = on_event
        self._on_error = on_error
        self._first_pause = first_pause
        self._max_pause = max_pause
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self.thread = threading.Thread(target=self._run, name="docker-events", daemon=True)

    def _run(self) -> None:
        since: int | None = None
        pause = self._first_pause
        while not self._stopped.is_set():
            try:
                client = self._factory()
                stream = client.events(
                    since=since,
                    filters={
                        "type": "container",
                        "event": list(EVENT_ACTIONS),
                        "label": ["director.site"],
                    },
                    decode=True,
                )
                with self._lock:
                    self._stream = stream
                if self._stopped.is_set():
                    break
                for raw in stream:
                    pause = self._first_pause
                    if isinstance(raw.get("time"), int):
                        since = raw["time"]
                    event = _container_event(raw)
                    if event is not None:
                        self._on_event(event)
                if self._stopped.is_set():
                    break
                problem = "the Docker event stream ended"
            except Exception as e:
                if self._stopped.is_set():
                    break
                problem = f"the Docker event stream failed: {e}"
            finally:
                self._close()
            self._on_error(f"{problem}; reconnecting in {pause:.1f}s")
            self._stopped.wait(pause)
            pause = min(pause * 2, self._max_pause)

    def _close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: S110 (already closed by the daemon or by stop())
                pass

    def stop(self) -> None:
        self._stopped.set()
        self._close()


def _spec_label(spec: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _blocking_ensure_container(client: Any, spec: dict[str, Any]) -> str:
    import docker.errors

    name = spec["Name"]
    digest = _spec_label(spec)
    try:
        current = client.inspect_container(name)
    except docker.errors.NotFound:
        current = None
    if current is not None:
        labels = current["Config"].get("Labels") or {}
        if labels.get("director.spec") == digest:
            if not current["State"]["Running"]:
                client.start(current["Id"])
            return str(current["Id"])
        client.remove_container(current["Id"], force=True)
    host_config = client.create_host_config(**spec["HostConfig"])
    networking = (
        client.create_networking_config({spec["Network"]: client.create_endpoint_config()})
        if spec.get("Network")
        else None
    )
    created = client.create_container(
        spec["Image"],
        command=spec["Command"],
        name=name,
        user=spec.get("User"),
        environment=spec.get("Env"),
        working_dir=spec.get("WorkingDir"),
        labels=dict(spec.get("Labels", {}), **{"director.spec": digest}),
        host_config=host_config,
        networking_config=networking,
        stdin_open=False,
        tty=False,
    )
    client.start(created["Id"])
    return str(created["Id"])


def _default_client(timeout: float = 60, base_url: str = "", tls: Any = None) -> Any:
    """
    A client of the engine at C{base_url} (unix:///..., tcp://...; "": the default socket);
    C{tls} (a docker.tls.TLSConfig) for a tcp:// one.
    """
    import docker

    if base_url:
        options = {"tls": tls} if tls is not None and base_url.startswith("tcp://") else {}
        return docker.APIClient(base_url=base_url, version="1.41", timeout=timeout, **options)
    return docker.APIClient(version="1.41", timeout=timeout)
