"""
Everything the orchestrator asks of Docker, in its own terms, behind L{IDockerGateway}.

L{DockerGateway} uses the (blocking) docker SDK in a dedicated, bounded thread pool;
L{director.testing.fake_docker.FakeDockerGateway} is the in-memory twin that passes the
same contract tests (L{director.testing.docker_contract}). The interface and its values are
in L{docker_interface}, the blocking SDK calls in L{docker_sdk}, image builds in
L{docker_builds} and the event stream in L{docker_events}; the clients and thread pool in
L{docker_gateway_base}, the image calls in L{docker_image_calls}.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from director.orchestrator.docker_builds import BuildLimits
from director.orchestrator.docker_events import _EventWatch
from director.orchestrator.docker_gateway_base import DockerGatewayBase
from director.orchestrator.docker_image_calls import ImageCalls
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
    _find,
    _owned,
    _remove_task_containers,
    _service_info,
    _with_placement,
)

__all__ = [
    "OWNER_LABEL",
    "BuildError",
    "BuildLimits",
    "ContainerEvent",
    "DockerError",
    "DockerGateway",
    "DockerGatewayBase",
    "IDockerGateway",
    "ImageCalls",
    "ImageInUse",
    "ServiceInfo",
    "TaskInfo",
]


@implementer(IDockerGateway)
class DockerGateway(ImageCalls):
    """
    The real gateway: the docker SDK's low-level client, called only from C{runner}.

    Two engines may be involved: the local one (C{docker_url}: containers, execs, logs,
    images, builds, events, the config-only network) and the swarm manager's
    (C{manager_url}: services and tasks, which a worker node cannot create or list). Every
    service this gateway puts is constrained to C{node} (default: the local engine's own
    name, which is its swarm node's hostname) and labelled with it (L{OWNER_LABEL}).
    """

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
            # tasks left here go.
            if not _owned((found["Spec"].get("Labels") or {}).get(OWNER_LABEL), self._node_name()):
                _remove_task_containers(local, name)
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
