"""
Everything the orchestrator asks of Docker, in its own terms, behind L{IDockerGateway}.

L{DockerGateway} uses the (blocking) docker SDK in a dedicated, bounded thread pool;
L{director.testing.fake_docker.FakeDockerGateway} is the in-memory twin that passes the
same contract tests (L{director.testing.docker_contract}). The interface and its values are
in L{docker_interface}, the blocking SDK calls in L{docker_sdk}, image builds in
L{docker_builds} and the event stream in L{docker_events}.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from director.common.threads import Runner
from director.orchestrator.docker_builds import BuildLimits, _blocking_build
from director.orchestrator.docker_events import _EventWatch
from director.orchestrator.docker_interface import (
    BuildError,
    ContainerEvent,
    DockerError,
    IDockerGateway,
    ImageInUse,
    ServiceInfo,
    TaskInfo,
)
from director.orchestrator.docker_sdk import (
    OWNER_LABEL,
    _blocking_ensure_container,
    _blocking_exec_kill,
    _blocking_network,
    _default_client,
    _find,
    _owned,
    _remove_stopped_task_containers,
    _service_info,
    _with_placement,
)
from director.orchestrator.engine_health import PROBE_CALL_TIMEOUT, EngineProbe

__all__ = [
    "OWNER_LABEL",
    "BuildError",
    "BuildLimits",
    "ContainerEvent",
    "DockerError",
    "DockerGateway",
    "IDockerGateway",
    "ImageInUse",
    "ServiceInfo",
    "TaskInfo",
]


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
                _blocking_build(self._build_client, dockerfile, tag, limits, on_line, step)
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
        return self._run(_blocking_exec_kill, exec_id, grace)

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
