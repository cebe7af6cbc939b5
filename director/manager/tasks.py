"""
The task scheduler: runs each site's scheduled tasks when they are due, in the site's
container, through the orchestrator (C{POST /v1/sites/<id>/tasks/run}).

Driven by the reactor given (a LoopingCall every C{interval} seconds), it never blocks: the
database is the store's thread pool, the command runs in the orchestrator. With several
managers a due run runs once: a manager takes it by moving the task's next run forward with
a conditional UPDATE that matches for one of them only (as operations are claimed). A run is
leased to its manager like an operation: renewed while it runs, and marked interrupted by
the others once the lease runs out (or at once by the same manager after a restart). At most
one run of a task runs at a time (a partial unique index): a run due while the previous one
still runs is recorded as skipped. Tasks of disabled or not-served sites do not run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from director.clients import OrchestratorClient
from director.manager.models import ValidationError
from director.manager.operations import _describe, _public_reason
from director.manager.orchestrator_pool import NodeUnavailable, OrchestratorPool, as_pool
from director.manager.schedules import Task, TaskRun, TaskSettings, describe_result, next_run
from director.manager.store import Store

#: The next run of a task whose schedule no longer comes round (9999-12-31).
NEVER = 253402300799.0


class TaskScheduler:
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        orchestrator: OrchestratorClient | OrchestratorPool,
        settings: TaskSettings,
        identity: str,
        worker: str,
        interval: float = 5.0,
        lease: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self._store = store
        self.pool = as_pool(orchestrator)
        self.settings = settings
        self._identity = identity
        self._worker = worker
        self._interval = interval
        self._lease = lease
        self._loop: LoopingCall | None = None
        self._busy = False
        # Runs this manager is executing: run id -> the Deferred that ends with it.
        self.running: dict[int, Deferred[None]] = {}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._reactor.seconds(), UTC)

    def start(self) -> None:
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True).addErrback(
            lambda f: self.log.failure("the task scheduler's loop stopped", f)
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def tick(self) -> Deferred[None] | None:
        """One pass (skipped while the previous one still runs); failures are logged."""
        if self._busy:
            return None
        self._busy = True
        d = Deferred.fromCoroutine(self._pass())

        def done(result: object) -> None:
            self._busy = False

        d.addErrback(lambda f: self.log.failure("scheduled tasks: a pass failed", f))
        d.addBoth(done)
        return d

    async def _pass(self) -> None:
        clock_now = self._reactor.seconds()
        await self._store.interrupt_runs(clock_now, self._identity, self._worker, self._now())
        for task, availability in await self._store.due_tasks(clock_now):
            try:
                following = next_run(task.schedule, clock_now)
            except ValidationError:
                following = NEVER  # a schedule that no longer comes round
            if not await self._store.advance_task(task.id, task.next_run_at, following):
                continue  # another manager took this run
            if availability != "enabled":
                continue  # disabled or not served: its tasks do not run
            await self.launch(task, "schedule")

    async def launch(self, task: Task, trigger: str) -> tuple[TaskRun, bool]:
        """
        Start a run of C{task} now: (the running run, True), or (the run recorded as skipped,
        False) when its previous run still runs. The run goes on in the background.
        """
        run, allowed = await self._store.start_run(
            task.id,
            trigger,
            self._worker,
            self._reactor.seconds() + self._lease,
            self._now(),
            self.settings.runs_kept,
        )
        if not allowed:
            if trigger == "schedule":
                self.log.info("task {id}: previous run still going; skipped", id=task.id)
            return run, False
        d = Deferred.fromCoroutine(self._execute(task, run))
        self.running[run.id] = d
        d.addErrback(lambda f: self.log.failure("running a scheduled task", f))

        def forget(_: object) -> None:
            self.running.pop(run.id, None)

        d.addBoth(forget)
        return run, True

    async def _execute(self, task: Task, run: TaskRun) -> None:
        renew = LoopingCall(self._renew, run.id)
        renew.clock = self._reactor
        renew.start(self._lease / 3, now=False).addErrback(
            lambda f: self.log.failure("renewing a task run's lease", f)
        )
        output, truncated = "", False
        try:
            site = await self._store.get_site_by_id(task.site_id)
            if site is None or site.availability != "enabled":
                status, code, message = (
                    "failed",
                    None,
                    "not run: the site is disabled or not served",
                )
            else:
                if not self.pool.up_for(site):
                    raise NodeUnavailable(self.pool.name_for(site))
                result = await self.pool.client_for(site).run_task(
                    site.id, task.command, task.timeout, self.settings.max_output
                )
                status, code, message = describe_result(result, task.timeout)
                output = str(result.get("output", ""))
                truncated = bool(result.get("truncated"))
        except Exception as e:
            self.log.warn(
                "task {id} of site {site}: the run failed: {reason}",
                id=task.id,
                site=task.site_id,
                reason=_describe(e),
            )
            status, code, message = "failed", None, f"not run: {_public_reason(e)}"
        finally:
            if renew.running:
                renew.stop()
        finished = await self._store.finish_run(
            run.id,
            self._worker,
            status,
            code,
            output,
            truncated,
            message,
            self._now(),
            self.settings.runs_kept,
        )
        if finished is None:
            self.log.warn(
                "task run {id} ended after it was deleted or given up as interrupted", id=run.id
            )

    async def _renew(self, run_id: int) -> None:
        await self._store.renew_run(run_id, self._worker, self._reactor.seconds() + self._lease)


def first_run(schedule: str, clock_now: float) -> float:
    """When a new (or re-enabled, or rescheduled) task first runs."""
    return next_run(schedule, clock_now)
