"""
Bringing a dynamic site's new task into service without a gap (L{RollOut}): wait for the new
process to accept connections, move nginx to it, let it through its readiness gate; or roll
the change back and say why (L{NotReady}) while the old process keeps serving.
"""

from __future__ import annotations

from twisted.internet.task import deferLater

from director.orchestrator.docker_gateway import TaskInfo
from director.orchestrator.runtime_base import RuntimeBase
from director.orchestrator.runtime_state import _remove_gates, _touch
from director.orchestrator.site_content import _run_sh_exists
from director.orchestrator.sites import (
    SITE_PORT,
    HostedSite,
)


class NotReady(Exception):
    """
    A site's new process did not start serving, so the old one was kept. The message is
    for the site's members: what happened and the new process's last log lines.
    """


#: How many of a new process's log lines a failed restart or update reports.
LOG_LINES = 20


#: While a new task runs but does not accept connections yet: how often its port is tried,
#: and how often swarm's task list is read again (to notice a process that exited).
TRY_INTERVAL = 0.01
LIST_INTERVAL = 0.25


def _not_ready_message(
    never_started: bool, ended: TaskInfo | None, lines: list[str], timeout: float
) -> str:
    if never_started and ended is not None and ended.container_id is None:
        what = "The new process could not be started"
    elif ended is not None and ended.state in ("failed", "complete"):
        what = f"The new process exited before it accepted connections on port {SITE_PORT}"
    else:
        what = (
            f"The new process did not accept connections on port {SITE_PORT} within {timeout:g} s"
        )
    text = f"{what}, so the running one was kept."
    if lines:
        text += " Its last log lines:\n" + "\n".join(lines)
    return text


class RollOut(RuntimeBase):
    """The runtime's way of bringing a new task in: kept apart from what calls it."""

    async def _serving(self, tasks: list[TaskInfo]) -> list[str]:
        """The addresses of C{tasks} that run and accept connections: what a change keeps."""
        serving = []
        for task in tasks:
            if task.state == "running" and task.desired == "running" and task.address:
                if await self._ready_check(task.address, SITE_PORT):
                    serving.append(task.address)
        return serving

    async def _roll_out(
        self, site: HostedSite, before: list[TaskInfo], protect: list[str], restart: bool = False
    ) -> list[str]:
        """
        Bring the task made from the spec just applied into service, without a gap. The
        service updates start-first and its new task waits at the readiness gate (swarm
        keeps the old task meanwhile): once the new process accepts connections on the
        site port (at most the ready timeout), nginx moves to it, the nginx workers that
        still use the old configuration finish their requests, and then the gate opens, so
        swarm stops the old task. The new task's addresses are returned.

        When it does not get there and C{protect} (old tasks serving now) is not empty,
        the spec is rolled back, the old task keeps serving, and L{NotReady} says why with
        the new process's log. With nothing to keep, the new task is let through as it is.
        A task of C{before} running the same spec (nothing changed) is the new task.
        """
        digest = self._service_spec(site)["TaskTemplate"]["ContainerSpec"]["Labels"][
            "director.spec"
        ]
        old = {t.task_id for t in before if restart or t.spec != digest or t.desired != "running"}
        wait = bool(protect) or await self._files.run(_run_sh_exists, self.site_files(site))
        started = self._reactor.seconds()
        candidate: TaskInfo | None = None
        ended: TaskInfo | None = None
        ready = False
        live: list[TaskInfo] = []
        listed_at: float | None = None
        while True:
            now = self._reactor.seconds()
            # Until a new task runs, swarm's view is what changes: list the tasks every
            # round. Once one runs, only its port does: try it every TRY_INTERVAL and list
            # the tasks (has the process exited?) every LIST_INTERVAL.
            if not live or listed_at is None or now - listed_at >= LIST_INTERVAL:
                listed_at = now
                tasks = await self._docker.tasks(site.service_name, self.network)
                new = [t for t in tasks if t.spec == digest and t.task_id not in old]
                live = [
                    t
                    for t in new
                    if t.desired == "running"
                    and t.state in ("starting", "running")
                    and t.address
                    and t.container_id
                ]
                ended = ended or next(
                    (t for t in new if t.state in ("failed", "complete", "rejected", "shutdown")),
                    None,
                )
                if ended is not None and (protect or not live):
                    break  # a new process exited before serving (swarm would only retry it)
            if live:
                candidate = live[0]
                unchanged = any(t.task_id == candidate.task_id for t in before)
                if (
                    not wait
                    or unchanged
                    or await self._ready_check(candidate.address or "", SITE_PORT)
                ):
                    ready = True
                    break
            if self._reactor.seconds() - started >= self._ready_timeout:
                break
            await deferLater(self._reactor, TRY_INTERVAL if live else 0.05, lambda: None)
        if not ready and protect:
            gone = ended or candidate
            lines = []
            if gone is not None and gone.container_id:
                lines = await self._docker.container_logs(gone.container_id, LOG_LINES)
            await self._docker.rollback_service(site.service_name)
            self.log.warn(
                "site {id}: the new task did not serve ({state}); rolled back",
                id=site.id,
                state=gone.state if gone else "never started",
            )
            raise NotReady(_not_ready_message(candidate is None, ended, lines, self._ready_timeout))
        if ended is not None and not ready:
            candidate = None  # nothing to keep and it exited: swarm retries, events follow
        if candidate is None or candidate.address is None or candidate.container_id is None:
            self.log.warn("site {id} did not start within {s}s", id=site.id, s=self._ready_timeout)
            await self._set_upstream(site, [])
            return []
        upstream = [candidate.address]
        if upstream != self.upstreams.get(site.id):
            await self._set_upstream(site, upstream)
            drained = getattr(self._nginx, "drained", None)
            if drained is not None:
                await drained(self._drain_timeout)
        await self._open_gate(site, candidate)
        return upstream

    async def _open_gate(self, site: HostedSite, task: TaskInfo) -> None:
        """
        Let the task through its readiness gate (swarm then reports it running and stops
        the task it replaces); the go-ahead file goes once swarm did.
        """
        if task.state == "running" or task.container_id is None:
            return
        name = task.container_id[:12]  # the container's host name
        await self._files.run(_touch, self.paths.gate_dir(site.id) / name)
        waited = 0.0
        while waited < 10:
            tasks = await self._docker.tasks(site.service_name, self.network)
            if any(t.task_id == task.task_id and t.state != "starting" for t in tasks):
                break
            await deferLater(self._reactor, 0.05, lambda: None)
            waited += 0.05
        await self._files.run(_remove_gates, self.paths.gate_dir(site.id), name)
