"""An in-memory Docker for unit tests, held honest by L{director.testing.docker_contract}."""

from __future__ import annotations

import copy
import itertools
import re
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from director.orchestrator.docker_gateway import (
    OWNER_LABEL,
    BuildError,
    ContainerEvent,
    DockerError,
    IDockerGateway,
    ImageInUse,
    ServiceInfo,
    TaskInfo,
)
from director.orchestrator.docker_sdk import _owned, _with_placement
from director.orchestrator.engine_health import engine_report


@implementer(IDockerGateway)
class FakeDockerGateway:
    """
    Services start instantly (one running task per replica, with a made-up address);
    images exist when listed in C{images} or built; a Dockerfile line `RUN false` (or a
    RUN that installs a package listed in C{missing_packages}) fails the build. Watchers
    of events hear a task's container start and die at once, on the calling thread;
    L{crash_task} plays a container dying and swarm starting a replacement (new address).
    Services are put on swarm node C{node} (constrained to it and labelled with it) and only
    services of that node (or of none) are listed, as the real gateway does.
    """

    def __init__(
        self, images: tuple[str, ...] = ("director/debian:bookworm",), node: str = "fake-node"
    ) -> None:
        self.node = node
        self.images = set(images)
        self.networks: set[str] = set()
        self.services: dict[str, dict[str, Any]] = {}
        self.missing_packages = {"no-such-package"}
        self._ids = itertools.count(1)
        self._tasks: dict[str, list[TaskInfo]] = {}
        self.calls: list[str] = []
        self.containers: dict[str, dict[str, Any]] = {}
        self.execs: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, list[str]] = {}
        self._watchers: list[tuple[Callable[[ContainerEvent], None], Callable[[str], None]]] = []
        #: When true, events are lost (as while a real event stream is broken).
        self.drop_events = False
        #: When true, the engine does not answer (as a killed dockerd): engine_state says so.
        self.engine_down = False

    def _service_info(self, name: str) -> ServiceInfo:
        entry = self.services[name]
        spec = entry["spec"]
        replicas = spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0)
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        return ServiceInfo(name, entry["id"], replicas, image, entry["version"], spec)

    def _emit(self, name: str, action: str, containers: list[str | None]) -> None:
        """Tell watchers about containers of service C{name} (site containers only)."""
        labels = self.services[name]["spec"]["TaskTemplate"]["ContainerSpec"].get("Labels", {})
        site = labels.get("director.site", "")
        if not site.isdigit() or self.drop_events:
            return
        for container in containers:
            for on_event, _ in list(self._watchers):
                if container is not None:
                    on_event(ContainerEvent(action, container, int(site)))

    def _start_tasks(self, name: str, replicas: int | None = None) -> None:
        running = [t for t in self._tasks.get(name, []) if t.state == "running"]
        old = [TaskInfo("shutdown", "shutdown", t.container_id, None, t.timestamp) for t in running]
        self._emit(name, "die", [t.container_id for t in running])
        n = next(self._ids)
        info = self._service_info(name)
        digest = info.spec["TaskTemplate"]["ContainerSpec"].get("Labels", {}).get("director.spec")
        new = [
            TaskInfo(
                "running",
                "running",
                f"c{n}-{i}",
                f"172.31.{n % 250}.{i + 2}",
                f"{n:020d}",
                spec=digest,
                task_id=f"t{n}-{i}",
            )
            for i in range(info.replicas if replicas is None else replicas)
        ]
        self._tasks[name] = new + old
        self._emit(name, "start", [t.container_id for t in new])

    def crash_task(self, name: str) -> None:
        """The service's running containers die; swarm replaces them (new ids and addresses)."""
        self._start_tasks(name)

    def watch_events(
        self, on_event: Callable[[ContainerEvent], None], on_error: Callable[[str], None]
    ) -> Callable[[], None]:
        watcher = (on_event, on_error)
        self._watchers.append(watcher)

        def stop() -> None:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

        return stop

    def break_events(self, message: str = "the fake event stream broke") -> None:
        """Tell watchers their stream broke (a real one then reconnects by itself)."""
        for _, on_error in list(self._watchers):
            on_error(message)

    def engine_state(self) -> Deferred[dict[str, Any]]:
        self.calls.append("engine_state")
        if self.engine_down:
            error = "the Docker engine does not answer: the fake engine is down"
            return succeed(engine_report(error, node=self.node))
        return succeed(engine_report(None, "fake", self.node, "active", "ready", "active"))

    def ensure_network(self, name: str, subnet: str | None = None) -> Deferred[None]:
        self.networks.add(name)
        return succeed(None)

    def get_service(self, name: str) -> Deferred[ServiceInfo | None]:
        return succeed(self._service_info(name) if name in self.services else None)

    def list_services(self, label: str) -> Deferred[list[ServiceInfo]]:
        return succeed(
            [
                self._service_info(n)
                for n, e in self.services.items()
                if label in e["spec"].get("Labels", {})
                and _owned(e["spec"].get("Labels", {}).get(OWNER_LABEL), self.node)
            ]
        )

    def put_service(self, spec: dict[str, Any]) -> Deferred[None]:
        spec = _with_placement(spec, self.node)
        name = spec["Name"]
        for target in spec["TaskTemplate"].get("Networks", []):
            if target["Target"] not in self.networks:
                return fail(DockerError(f"network {target['Target']} not found"))
        self.calls.append(f"put {name}")
        if name in self.services:
            entry = self.services[name]
            entry["previous"] = entry["spec"]
            entry["spec"] = copy.deepcopy(spec)
            entry["version"] += 1
        else:
            self.services[name] = {
                "id": f"svc{next(self._ids)}",
                "spec": copy.deepcopy(spec),
                "version": 1,
            }
        self._start_tasks(name)
        return succeed(None)

    def restart_service(self, name: str) -> Deferred[None]:
        if name not in self.services:
            return fail(DockerError(f"no service {name}"))
        self.calls.append(f"restart {name}")
        self.services[name]["version"] += 1
        self._start_tasks(name)
        return succeed(None)

    def rollback_service(self, name: str) -> Deferred[None]:
        """The previous spec back; its tasks start again (the fake keeps no task running)."""
        if name not in self.services:
            return fail(DockerError(f"no service {name}"))
        self.calls.append(f"rollback {name}")
        entry = self.services[name]
        if "previous" in entry:
            entry["spec"] = entry.pop("previous")
            entry["version"] += 1
            self._start_tasks(name)
        return succeed(None)

    def container_logs(self, container: str, tail: int) -> Deferred[list[str]]:
        return succeed(self.logs.get(container, [])[-tail:] if tail else [])

    def remove_service(self, name: str) -> Deferred[bool]:
        if name in self.services:
            owner = self.services[name]["spec"].get("Labels", {}).get(OWNER_LABEL)
            if not _owned(owner, self.node):
                return succeed(False)  # another node's now (a moved site): left alone
            running = [t.container_id for t in self._tasks.get(name, []) if t.state == "running"]
            self._emit(name, "die", running)
        self._tasks.pop(name, None)
        return succeed(self.services.pop(name, None) is not None)

    def tasks(self, name: str, network: str) -> Deferred[list[TaskInfo]]:
        return succeed(list(self._tasks.get(name, [])))

    def image_exists(self, ref: str) -> Deferred[bool]:
        return succeed(ref in self.images)

    def build_image(
        self, dockerfile: str, tag: str, on_line: Callable[[str], None]
    ) -> Deferred[None]:
        log = []
        for line in dockerfile.splitlines():
            on_line(line)
            log.append(line)
            parent = re.match(r"^FROM\s+(\S+)", line)
            if parent and parent.group(1) not in self.images:
                return fail(
                    BuildError(f"building {tag} failed: no image {parent.group(1)}", "\n".join(log))
                )
            words = set(line.split())
            if line.startswith("RUN") and ("false" in words or words & self.missing_packages):
                message = "The command returned a non-zero code: 100"
                on_line(message)
                return fail(BuildError(f"building {tag} failed: {message}", "\n".join(log)))
        self.images.add(tag)
        return succeed(None)

    def ensure_container(self, spec: dict[str, Any]) -> Deferred[str]:
        if spec["Image"] not in self.images:
            return fail(DockerError(f"No such image: {spec['Image']}"))
        current = self.containers.get(spec["Name"])
        if current is None or current["spec"] != spec:
            self.containers[spec["Name"]] = {
                "id": f"ctr{next(self._ids)}",
                "spec": copy.deepcopy(spec),
            }
        return succeed(self.containers[spec["Name"]]["id"])

    def remove_container(self, name: str) -> Deferred[bool]:
        return succeed(self.containers.pop(name, None) is not None)

    def exec_start(
        self,
        container: str,
        argv: list[str],
        env: dict[str, str],
        user: str,
        workdir: str,
        tty: bool,
    ) -> Deferred[tuple[str, Any]]:
        """
        Runs a tiny stand-in for `sh -c`: `echo WORDS` prints, `exit N` sets the status,
        anything else (or no command: a shell) echoes its input until EOF.
        """
        if not any(c["id"] == container for c in self.containers.values()):
            return fail(DockerError(f"No such container: {container}"))
        ours, theirs = socket.socketpair()
        exec_id = f"exec{next(self._ids)}"
        self.execs[exec_id] = {"exit": None, "size": (24, 80)}

        def frame(data: bytes) -> bytes:
            return data if tty else struct.pack(">BxxxL", 1, len(data)) + data

        def run() -> None:
            code = 0
            try:
                script = argv[2] if argv[:2] == ["sh", "-c"] and len(argv) > 2 else None
                steps = [part.strip() for part in script.split(";")] if script else []
                if steps and all(p.startswith(("echo ", "exit ")) for p in steps if p):
                    for step in filter(None, steps):
                        if step.startswith("echo "):
                            theirs.sendall(frame(step[5:].encode() + b"\n"))
                        else:
                            code = int(step[5:])
                            break
                else:
                    while data := theirs.recv(65536):
                        theirs.sendall(frame(data))
            finally:
                self.execs[exec_id]["exit"] = code
                theirs.close()

        threading.Thread(target=run, daemon=True).start()
        return succeed((exec_id, ours))

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> Deferred[None]:
        self.execs[exec_id]["size"] = (rows, cols)
        return succeed(None)

    def exec_kill(self, exec_id: str) -> Deferred[bool]:
        running = self.execs[exec_id]["exit"] is None
        if running:
            self.execs[exec_id]["exit"] = 137
        return succeed(running)

    def exec_exit_code(self, exec_id: str) -> Deferred[int | None]:
        return succeed(self.execs[exec_id]["exit"])

    def follow_logs(
        self, service: str, tail: int, on_line: Callable[[str], None], on_end: Callable[[], None]
    ) -> Callable[[], None]:
        for line in self.logs.get(service, [])[-tail:] if tail else []:
            on_line(line)
        return lambda: None

    def prune_images(self, repository: str, keep: frozenset[str]) -> Deferred[list[str]]:
        in_use = {
            e["spec"]["TaskTemplate"]["ContainerSpec"]["Image"] for e in self.services.values()
        } | {c["spec"]["Image"] for c in self.containers.values()}
        removed = sorted(
            ref
            for ref in self.images
            if ref.rpartition(":")[0] == repository and ref not in keep and ref not in in_use
        )
        self.images.difference_update(removed)
        return succeed(removed)

    def remove_image(self, ref: str) -> Deferred[bool]:
        if any(
            e["spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == ref
            for e in self.services.values()
        ):
            return fail(ImageInUse(f"image {ref} is still in use"))
        if ref in self.images:
            self.images.discard(ref)
            return succeed(True)
        return succeed(False)
