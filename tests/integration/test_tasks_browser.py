"""
The scheduled tasks page in a real browser (Playwright and Debian's Chromium against the
all-in-one daemon, real Docker): a member adds a task, a bad schedule is refused next to its
field, "Run now" shows the run's output and exit status, and the page logs no script error
or Content-Security-Policy violation.
"""

from __future__ import annotations

from typing import Any

from test_browser import Director, Person, _wait_operation, browser, director  # noqa: F401


def test_a_member_adds_a_task_and_sees_its_run(browser: Any, director: Director) -> None:  # noqa: F811
    name = f"cron-{director.suffix}"
    code, created = director.api(
        "POST", "/api/v1/sites", {"name": name, "type": "static", "users": ["alice"]}
    )
    assert code == 202, created
    assert _wait_operation(director, created["operation"]["id"])["status"] == "succeeded"
    alice = Person(browser, director)
    alice.sign_in("alice")
    page = alice.goto(f"/sites/{name}")
    page.click("nav.tabs >> text=Tasks")
    page.wait_for_selector("text=No scheduled tasks yet")

    page.fill("#task-schedule", "* * * * * *")
    page.fill("#task-command", "echo never")
    page.click("button:has-text('Add task')")
    page.wait_for_selector("[data-error-for='schedule']:has-text('expected 5 fields')")
    assert page.input_value("#task-command") == "echo never"  # what was typed is kept
    # the refusal itself is the only thing the browser logs
    assert [p for p in alice.problems if "status of 400" not in p] == []
    alice.problems.clear()

    page.fill("#task-schedule", "@daily")
    page.fill("#task-command", "echo hello-from-a-task; echo '<b>not bold</b>'; exit 4")
    page.fill("#task-name", "greeting")
    page.click("button:has-text('Add task')")
    page.wait_for_selector("table.tasks >> text=greeting")
    page.click("table.tasks button:has-text('Run now')")
    page.wait_for_selector(".task-output:has-text('hello-from-a-task')", timeout=90_000)
    page.wait_for_selector(".task-run:has-text('exit 4')")
    assert page.locator(".task-output b").count() == 0  # output is text, never HTML
    assert "<b>not bold</b>" in page.locator(".task-output").first.inner_text()
    page.wait_for_selector("table.tasks .status-failed")
    alice.shot("13-scheduled-tasks", full_page=True)

    page.click("table.tasks button:has-text('Pause')")
    page.wait_for_selector("table.tasks button:has-text('Resume')")
    assert "paused" in page.locator("table.tasks").inner_text()
    code, listing = director.api("GET", f"/api/v1/sites/{name}/tasks")
    assert [t["enabled"] for t in listing["tasks"]] == [False], listing
    alice.close()
