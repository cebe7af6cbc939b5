"""
What the orchestrator asks of Docker (L{IDockerGateway}) and the values it answers with:
the real gateway (L{director.orchestrator.docker_gateway}) and the in-memory twin
(L{director.testing.fake_docker}) both implement it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Interface


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
