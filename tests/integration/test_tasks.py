"""
Scheduled tasks end to end: the real manager, orchestrator and router (twistd processes),
real Docker. A task runs in the site's container as the site's user, its output and exit
status are kept, a task past its time limit is stopped, scheduled runs come on time, and a
disabled site's tasks do not run.
"""

from __future__ import annotations

import json
import time
from typing import Any

from test_manager_e2e import Stack, manager_database_url, stack, wait  # noqa: F401  (fixtures)


def _site(s: Stack, name: str) -> None:
    s.wait_operation(s.api("POST", "/api/v1/sites", {"name": name, "type": "static"}))


def _task(s: Stack, site: str, **body: Any) -> dict[str, Any]:
    task: dict[str, Any] = s.api("POST", f"/api/v1/sites/{site}/tasks", body)["task"]
    return task


def _runs(s: Stack, site: str, task_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = s.api("GET", f"/api/v1/sites/{site}/tasks/{task_id}/runs")["runs"]
    return runs


def _run_now(s: Stack, site: str, task_id: int, timeout: float = 120) -> dict[str, Any]:
    started = s.api("POST", f"/api/v1/sites/{site}/tasks/{task_id}/run", ok=(202,))["run"]
    assert started["status"] == "running"
    found: dict[str, Any] = {}

    def ended() -> bool:
        run = next(r for r in _runs(s, site, task_id) if r["id"] == started["id"])
        found.update(run)
        return run["status"] != "running"

    wait(ended, f"run {started['id']}", timeout, s.log_tail)
    return found


def test_a_task_runs_as_the_site_and_its_result_is_kept(stack: Stack) -> None:  # noqa: F811
    s = stack
    _site(s, "e2e-tasks")
    try:
        task = _task(
            s,
            "e2e-tasks",
            name="report",
            schedule="@yearly",
            command='echo "uid=$(id -u) dir=$(pwd) home=$HOME"; echo oops >&2; '
            "echo ran > /site/private/task-ran; exit 3",
        )
        run = _run_now(s, "e2e-tasks", task["id"])
        assert (run["status"], run["exit_code"], run["trigger"]) == ("failed", 3, "manual"), run
        assert "dir=/site home=/site/.home" in run["output"], run
        assert "uid=0 " not in run["output"] and "uid=" in run["output"], run
        assert "oops" in run["output"]
        assert run["message"] == "exit status 3"
        # it ran in the site's files
        assert s.api("GET", "/api/v1/sites/e2e-tasks/files/private/task-ran") == b"ran\n"
        # a large output is kept bounded: its beginning and its end
        big = _task(
            s,
            "e2e-tasks",
            schedule="@yearly",
            command="echo first; head -c 500000 /dev/zero | tr '\\0' x; echo; echo last",
        )
        run = _run_now(s, "e2e-tasks", big["id"])
        assert (run["status"], run["output_truncated"]) == ("succeeded", True), run
        assert run["output"].startswith("first\n") and run["output"].endswith("last\n")
        assert len(run["output"]) <= 64 * 1024 + 100
        listed = s.api("GET", "/api/v1/sites/e2e-tasks/tasks")["tasks"]
        assert [t["last_run"]["status"] for t in listed] == ["failed", "succeeded"]
        # the same from the command line
        added = s.director(
            "tasks", "add", "e2e-tasks", "--schedule", "@daily", "--command", "echo from-cli"
        )
        assert added.returncode == 0, added.stderr
        ran = s.director("tasks", "run", "e2e-tasks", str(json.loads(added.stdout)["id"]))
        assert ran.returncode == 0, ran.stderr
        assert "succeeded exit 0 (manual)" in ran.stdout and "from-cli" in ran.stdout
        listing = s.director("tasks", "list", "e2e-tasks").stdout
        assert "@daily" in listing and "report" in listing, listing
        refused = s.director("tasks", "add", "e2e-tasks", "--schedule", "@reboot", "--command", "x")
        assert refused.returncode == 1 and "unknown shorthand" in refused.stderr
    finally:
        s.wait_operation(s.api("DELETE", "/api/v1/sites/e2e-tasks"))


def test_a_task_past_its_time_limit_is_stopped(stack: Stack) -> None:  # noqa: F811
    s = stack
    _site(s, "e2e-slow")
    try:
        task = _task(
            s,
            "e2e-slow",
            schedule="@yearly",
            timeout=2,
            command="echo started; sleep 300 & sleep 301; echo never",
        )
        began = time.monotonic()
        run = _run_now(s, "e2e-slow", task["id"], timeout=60)
        assert run["status"] == "timed_out", run
        assert time.monotonic() - began < 30
        assert "started" in run["output"] and "never" not in run["output"], run
        assert "time limit of 2 s" in run["message"]
        # nothing it started is left running in the site's container
        ps = _task(
            s,
            "e2e-slow",
            schedule="@yearly",
            command="for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done",
        )
        listing = _run_now(s, "e2e-slow", ps["id"])["output"]
        assert "sleep 30" not in listing, listing
    finally:
        s.wait_operation(s.api("DELETE", "/api/v1/sites/e2e-slow"))


def test_scheduled_runs_come_on_time_but_not_on_a_disabled_site(stack: Stack) -> None:  # noqa: F811
    s = stack
    _site(s, "e2e-cron")
    _site(s, "e2e-cron-off")
    try:
        on = _task(s, "e2e-cron", schedule="* * * * *", command="date -u +%s")
        off = _task(s, "e2e-cron-off", schedule="* * * * *", command="date -u +%s")
        s.wait_operation(s.api("PATCH", "/api/v1/sites/e2e-cron-off", {"availability": "disabled"}))
        # due at the next minute; the scheduler looks every 5 s
        wait(lambda: _runs(s, "e2e-cron", on["id"]) != [], "a scheduled run", 90, s.log_tail)
        time.sleep(1)
        wait(
            lambda: _runs(s, "e2e-cron", on["id"])[0]["status"] != "running",
            "the run's end",
            60,
            s.log_tail,
        )
        [run] = _runs(s, "e2e-cron", on["id"])
        assert (run["status"], run["trigger"]) == ("succeeded", "schedule"), run
        ran_at = int(run["output"].strip())
        assert ran_at % 60 <= 10, run  # within seconds of the minute it was due
        time.sleep(8)  # the disabled site's task was due at the same minute
        assert _runs(s, "e2e-cron-off", off["id"]) == []
        refused = s.api("POST", f"/api/v1/sites/e2e-cron-off/tasks/{off['id']}/run", ok=(409,))
        assert refused["error"] == "site_not_served"
        assert _runs(s, "e2e-cron-off", off["id"]) == []
    finally:
        s.wait_operation(s.api("DELETE", "/api/v1/sites/e2e-cron"))
        s.wait_operation(s.api("DELETE", "/api/v1/sites/e2e-cron-off"))


def test_tasks_started_together_all_run(stack: Stack) -> None:  # noqa: F811
    """
    Runs that start at once on a site whose container must be made again (its limits
    changed) share the one new container: none fails for another's half-made one.
    """
    s = stack
    _site(s, "e2e-together")
    try:
        tasks = [
            _task(s, "e2e-together", schedule="@yearly", command=f"echo task-{i}") for i in range(4)
        ]
        assert _run_now(s, "e2e-together", tasks[0]["id"])["status"] == "succeeded"
        limits = {"cpus": 0.5, "memory_mb": 300, "pids": 200, "client_max_body_size": "10m"}
        s.wait_operation(s.api("PATCH", "/api/v1/sites/e2e-together", {"limits": limits}))
        tasks = tasks[1:]
        started = [
            s.api("POST", f"/api/v1/sites/e2e-together/tasks/{t['id']}/run", ok=(202,))["run"]
            for t in tasks
        ]
        assert all(r["status"] == "running" for r in started)

        def ended() -> bool:
            return all(_runs(s, "e2e-together", t["id"])[0]["status"] != "running" for t in tasks)

        wait(ended, "the runs", 120, s.log_tail)
        for i, task in enumerate(tasks):
            [run] = _runs(s, "e2e-together", task["id"])
            assert (run["status"], run["output"]) == ("succeeded", f"task-{i + 1}\n"), run
    finally:
        s.wait_operation(s.api("DELETE", "/api/v1/sites/e2e-together"))
