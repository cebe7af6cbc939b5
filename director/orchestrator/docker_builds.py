"""
Building a site's image with the docker SDK (blocking; in the builds' own pool), within its
limits (L{BuildLimits}): bounded time and memory, and a tag given only on success.
"""

from __future__ import annotations

import io
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from director.common.threads import Runner
from director.orchestrator.docker_interface import BuildError

_RUNNING_STEP = re.compile(r"Running in ([0-9a-f]{12,64})\b")
_BUILT = re.compile(r"Successfully built ([0-9a-f]{12,64})\b")


def _built_id(text: str) -> str | None:
    """The image a classic build's last line names, if this is that line."""
    match = _BUILT.search(text)
    return match.group(1) if match else None


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


def _blocking_build(
    client: Any,
    dockerfile: str,
    tag: str,
    limits: BuildLimits,
    on_line: Callable[[str], None],
    step: list[str],
) -> None:
    """
    Build C{dockerfile} (the whole context) and tag the image C{tag} only if it was built in
    time; each running step's container goes into C{step} (what a timed-out build stops).
    """
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
            raise BuildError(f"building {tag} failed: {chunk['error'].strip()}", "\n".join(log))
        built = (chunk.get("aux") or {}).get("ID") or _built_id(text)
        if built:
            image_id = built
    if image_id is None:
        raise BuildError(f"building {tag} failed: the daemon named no image", "\n".join(log))
    if time.monotonic() > deadline:
        raise BuildError(f"building {tag} took longer than {limits.timeout:g} s", "\n".join(log))
    repository, version = docker.utils.parse_repository_tag(tag)
    client.tag(image_id, repository, version)
