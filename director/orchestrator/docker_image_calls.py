"""
The gateway's image calls: whether an image exists, building one (within the build limits,
the step's container stopped on a timeout), and removing and pruning site images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from director.orchestrator.docker_builds import _blocking_build
from director.orchestrator.docker_gateway_base import DockerGatewayBase
from director.orchestrator.docker_interface import (
    BuildError,
    DockerError,
    ImageInUse,
)
from director.orchestrator.docker_sdk import (
    _default_client,
)


class ImageCalls(DockerGatewayBase):
    """Images on the local engine, and the swarm's use of them when pruning."""

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
