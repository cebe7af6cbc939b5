"""
The dashboard in a real browser: Playwright driving Debian's Chromium against the all-in-one
daemon (`twistd -n director`) with real Docker, nginx and the router.

What a student, a teacher and an administrator do: sign in, accept the guidelines, create a
static site and watch its steps, write public/index.html in the editor and save it with
Ctrl+S, see it served through the router, run a command in a terminal, run a dynamic site's
run.sh and see its log after a restart from the editor, delete a site by typing its name;
the club-site request from student to teacher to admin; a non-member's 404. Screenshots of
the main pages go to artifacts/screenshots/ for a person to look at. No page may log a
script error or a Content-Security-Policy violation.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import playwright.sync_api as playwright_api
import pytest
from services import api_request
from test_daemon import BIN, Daemon, init_config, start_daemon, stop_daemon, wait_listening

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "correct-horse-9"
TIMEOUT_MS = 60_000


@dataclass
class Director:
    daemon: Daemon
    url: str
    router_port: int
    admin_password: str
    admin_token: str
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, content = api_request(self.url, self.admin_token, method, path, body, timeout=30)
        return status, json.loads(content or b"null")

    def through_router(self, site: str) -> tuple[int, str]:
        """GET / of a site through the router's front nginx, by Host header."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.router_port}/",
            headers={"Host": f"{site}.sites.localhost"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")


def _cli(config: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(BIN / "director"), *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


@pytest.fixture(scope="module")
def director(docker_swarm: Any) -> Iterator[Director]:
    base = Path(tempfile.mkdtemp(prefix="director-browser-", dir="/tmp"))
    base.chmod(0o755)
    config = init_config(base)
    for name, role in (("alice", "--student"), ("bob", "--student"), ("tina", "--teacher")):
        _cli(config, "user", "add", name, role, "--password-stdin", stdin=PASSWORD + "\n")
    token = _cli(config, "token", "create", "admin").strip().split()[-1]
    daemon = start_daemon(config)
    c = daemon.config
    wait_listening(daemon, [c.manager.port, c.orchestrator.port, c.router.port])
    admin_password = (c.director.state_dir / "secrets" / "admin-password").read_text().strip()
    d = Director(daemon, c.manager.url, c.router.http_port, admin_password, token)
    yield d
    # Delete whatever sites the tests left, so no service or container outlives them.
    try:
        code, listing = d.api("GET", "/api/v1/sites?all=1")
        for site in listing.get("sites", []) if code == 200 else []:
            code, body = d.api("DELETE", f"/api/v1/sites/{site['name']}")
            if code == 202:
                _wait_operation(d, body["operation"]["id"])
    finally:
        stop_daemon(daemon)
        shutil.rmtree(base, ignore_errors=True)


def _wait_operation(d: Director, op_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, op = d.api("GET", f"/api/v1/operations/{op_id}")
        if code == 404 or op["status"] in ("succeeded", "failed"):
            return op if code == 200 else {"status": "gone"}
        time.sleep(0.3)
    raise AssertionError(f"operation {op_id} did not finish")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class Person:
    """One browser context (one person's cookies), recording problems the pages log."""

    def __init__(self, browser: Any, director: Director, width: int = 1280, height: int = 860):
        self.director = director
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" and "WebSocket" not in text:
            self.problems.append(f"console error: {text}")
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.problems.append(f"CSP: {text}")

    def goto(self, path: str) -> Any:
        self.page.goto(self.director.url + path)
        return self.page

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        page = self.goto("/")
        assert "/login" in page.url
        page.fill("#username", username)
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        if "/guidelines" in page.url:
            page.check("input[name=accept]")
            page.click("text=Accept and continue")
            page.wait_for_url(self.director.url + "/")

    def shot(self, name: str, full_page: bool = False) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)

    def close(self) -> None:
        self.context.close()
        assert self.problems == []


def test_student_static_site_from_creation_to_deletion(browser: Any, director: Director) -> None:
    """
    Sign in, accept the guidelines, create a static site and watch its steps complete,
    write public/index.html in the editor, save with Ctrl+S, see it through the router,
    run a command in a terminal pane, and delete the site by typing its name.
    """
    alice = Person(browser, director)
    page = alice.page
    login = alice.goto("/login")
    alice.shot("01-sign-in")
    login.fill("#username", "alice")
    login.fill("#password", PASSWORD)
    login.click("button[type=submit]")
    page.wait_for_url("**/guidelines**")
    alice.shot("02-guidelines", full_page=True)
    page.check("input[name=accept]")
    page.click("text=Accept and continue")
    page.wait_for_url(director.url + "/")
    alice.shot("03-sites-empty")

    name = f"blog-{director.suffix}"
    page.click("text=New site")
    page.fill("#name", name)
    page.fill("#description", "My <script>alert(1)</script> blog")
    page.click("button:has-text('Create site')")
    page.wait_for_selector(".operation .status-succeeded")
    assert page.locator(".step-succeeded").count() == 2
    alice.shot("04-site-created")

    alice.goto("/")
    page.wait_for_selector(f"[data-status-site='{name}'].up")
    assert page.locator(".site-desc").first.inner_text() == "My <script>alert(1)</script> blog"
    alice.shot("05-sites")

    alice.goto(f"/sites/{name}")
    page.wait_for_selector(f"[data-status-text='{name}']:has-text('serving')")
    alice.shot("06-site-page", full_page=True)

    page.click("text=Open editor")
    page.wait_for_selector("[data-path='public']")
    # A new static site starts with a welcome page (public/ opens by itself): write over it.
    page.click("[data-path='public/index.html']")
    page.wait_for_selector("[data-current-file]:has-text('public/index.html')")
    page.wait_for_selector(".cm-content:has-text('Welcome to')")
    page.click(".cm-content")
    page.keyboard.press("Control+a")
    page.keyboard.press("Backspace")  # (the editor's own delete: typing over a selection of
    # several lines lets Chromium's contenteditable add inline styles, which the CSP blocks)
    page.keyboard.insert_text("<h1>Hello from the Director editor</h1>\n")
    page.wait_for_selector("[data-save-state]:has-text('Unsaved changes')")
    page.keyboard.press("Control+s")
    page.wait_for_selector("[data-save-state]:has-text('Saved ')")
    status, body = director.through_router(name)
    assert (status, "<h1>Hello from the Director editor</h1>" in body) == (200, True)

    page.click("[data-new-terminal]")
    page.wait_for_function(
        "() => (document.querySelector('.pane-body .xterm-rows')?.innerText || '').includes('$')"
    )
    page.keyboard.type("echo director-$((6*7))\n")
    page.wait_for_function(
        "() => document.querySelector('.pane-body .xterm-rows').innerText.includes('director-42')"
    )
    alice.shot("07-editor-with-terminal")

    alice.goto(f"/sites/{name}/terminal")
    page.wait_for_selector("[data-terminal-state].ok")
    page.wait_for_function("() => document.querySelector('.xterm-rows').innerText.includes('$')")
    page.keyboard.type("echo page-$((2+3)) && pwd\n")
    page.wait_for_function(
        "() => document.querySelector('.xterm-rows').innerText.includes('page-5')"
    )
    alice.shot("08-terminal")

    alice.goto(f"/sites/{name}/settings")
    alice.shot("09-settings", full_page=True)
    alice.goto(f"/sites/{name}/database")
    alice.shot("10-database")

    alice.goto(f"/sites/{name}")
    delete = page.locator("button:has-text('Delete this site')")
    assert delete.is_disabled()
    page.fill("#confirm-delete", name[:-1])
    assert delete.is_disabled()
    page.fill("#confirm-delete", name)
    delete.click()
    page.wait_for_selector("text=The site was deleted.")
    alice.shot("11-site-deleted")
    assert director.through_router(name)[0] == 404
    code, _ = director.api("GET", f"/api/v1/sites/{name}")
    assert code == 404
    alice.close()


def test_dynamic_site_run_sh_restart_and_log(browser: Any, director: Director) -> None:
    """
    A new dynamic site starts with its image's run.sh (executable); rewritten in the editor,
    made executable again, and restarted with Alt+Enter, it runs and logs.
    """
    alice = Person(browser, director)
    alice.sign_in("alice")
    page = alice.page
    name = f"app-{director.suffix}"
    alice.goto("/sites/new")
    page.fill("#name", name)
    page.check("input[name=type][value=dynamic]")
    page.click("button:has-text('Create site')")
    page.wait_for_selector(".operation .status-succeeded")

    alice.goto(f"/sites/{name}/files")
    page.wait_for_selector("[data-path='public']")
    page.wait_for_selector(".pane-tab:has-text('Log')")
    # the catalogue's template for the image (python: a static file server), executable
    page.wait_for_selector("[data-path='run.sh'].executable")
    page.click("[data-path='run.sh']")
    page.wait_for_selector("[data-current-file]:has-text('run.sh')")
    page.wait_for_selector(".cm-content:has-text('http.server')")
    page.click(".cm-content")
    page.keyboard.press("Control+a")
    page.keyboard.press("Backspace")  # (as for the static page: the editor's own delete)
    page.keyboard.insert_text(
        "#!/bin/sh\n"
        'echo "run.sh says hello on port $PORT"\n'
        'exec python3 -m http.server "$PORT" --bind "$HOST" --directory public\n'
    )
    page.keyboard.press("Control+s")
    page.wait_for_selector("[data-save-state]:has-text('Saved ')")
    # the file menu takes the mode away and gives it back
    page.click("[data-path='run.sh']", button="right")
    page.click("[data-context-menu] button:has-text('Make not executable')")
    page.wait_for_selector("[data-path='run.sh']:not(.executable)")
    page.click("[data-path='run.sh']", button="right")
    page.click("[data-context-menu] button:has-text('Make executable')")
    page.wait_for_selector("[data-path='run.sh'].executable")
    page.keyboard.press("Alt+Enter")
    page.wait_for_selector(".log-output:has-text('run.sh says hello on port')", timeout=90_000)
    alice.shot("12-editor-dynamic-log")
    deadline = time.monotonic() + 60
    while director.through_router(name)[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert director.through_router(name)[0] == 200
    alice.close()


def test_club_request_from_student_to_teacher_to_admin(browser: Any, director: Director) -> None:
    """A student asks, the sponsor approves, an admin creates the site in one click."""
    name = f"chess-{director.suffix}"
    bob = Person(browser, director)
    bob.sign_in("bob")
    page = bob.goto("/requests")
    page.fill("#activity", "Chess club")
    page.fill("#req-name", name)
    page.select_option("#teacher", "tina")
    page.fill("#req-description", "Tournament results & <b>news</b>")
    page.click("button:has-text('Send request')")
    page.wait_for_selector(f"td:has-text('{name}')")
    assert "pending teacher" in page.inner_text("table")
    bob.shot("13-request-sent", full_page=True)

    tina = Person(browser, director)
    tina.sign_in("tina")
    page = tina.goto("/requests")
    page.wait_for_selector("text=Waiting for your approval")
    tina.shot("14-request-to-approve")
    page.click(f"tr:has-text('{name}') button:has-text('Approve')")
    page.wait_for_load_state()
    page.wait_for_selector("text=Waiting for your approval", state="detached")

    admin = Person(browser, director)
    admin.sign_in("admin", director.admin_password)
    page = admin.goto("/requests")
    page.click(f"tr:has-text('{name}') button:has-text('Create site')")
    page.wait_for_selector(f"tr:has-text('{name}') :text('created')")
    admin.shot("15-requests-admin", full_page=True)
    for path, shot in (
        ("/admin/operations", "16-admin-operations"),
        ("/admin/users", "17-admin-users"),
        ("/admin/audit", "18-admin-audit"),
        ("/admin/images", "19-admin-images"),
    ):
        admin.goto(path)
        admin.shot(shot)
    admin.goto("/docs/dynamic-sites")
    admin.shot("20-docs")
    text = admin.goto("/metrics").inner_text("body")
    assert "director_sites{" in text and "director_websockets_open" in text

    # The new site belongs to the student and the teacher; another student gets a 404.
    page = bob.goto(f"/sites/{name}")
    assert page.title().startswith(name)
    alice = Person(browser, director)
    alice.sign_in("alice")
    response = alice.page.goto(f"{director.url}/sites/{name}")
    assert response is not None and response.status == 404
    assert alice.page.locator("h1").inner_text() == "Not found"
    alice.shot("21-not-found")
    alice.problems = [p for p in alice.problems if "status of 404" not in p]  # that one
    for person in (bob, tina, admin, alice):
        person.close()


def test_disk_usage_for_members_and_admins(browser: Any, director: Director) -> None:
    """
    A member sees the site's disk use and quota on its page; an admin gives the site its own
    quota in the settings' Administration box and sees the largest sites under Admin -> Disk.
    """
    name = f"disk-{director.suffix}"
    code, body = director.api("POST", "/api/v1/sites", {"name": name, "users": ["alice"]})
    assert code == 202, body
    assert _wait_operation(director, body["operation"]["id"])["status"] == "succeeded"
    status, _ = api_request(
        director.url,
        director.admin_token,
        "PUT",
        f"/api/v1/sites/{name}/files/public/photo.bin",
        raw=secrets.token_bytes(3 * 1024 * 1024),
        timeout=60,
    )
    assert status == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        site = director.api("GET", f"/api/v1/sites/{name}")[1]
        if (site["disk_usage_bytes"] or 0) >= 3 * 1024 * 1024:
            break
        time.sleep(0.5)
    assert site["disk_usage_bytes"] >= 3 * 1024 * 1024, site
    assert site["disk_quota_bytes"] == 1024 * 1024 * 1024  # the configured default

    alice = Person(browser, director)
    alice.sign_in("alice")
    page = alice.goto(f"/sites/{name}")
    disk = page.inner_text("[data-disk-usage]")
    assert disk.startswith("3.0 MB of 1.0 GB"), disk
    alice.shot("30-site-disk-usage", full_page=True)

    admin = Person(browser, director)
    admin.sign_in("admin", director.admin_password)
    page = admin.goto(f"/sites/{name}/settings")
    page.fill("#disk-quota", "3")
    page.click("#admin button:has-text('Apply')")
    page.wait_for_selector("#live-operation .status-succeeded")
    assert director.api("GET", f"/api/v1/sites/{name}")[1]["disk_quota_bytes"] == 3 * 1024 * 1024
    page = admin.goto("/admin/disk")
    row = page.inner_text(f"[data-disk-usage] tr:has-text('{name}')")
    assert "3.0 MB" in row and "over quota" in row and "own" in row, row
    admin.shot("31-admin-disk", full_page=True)
    page = alice.goto(f"/sites/{name}")
    assert "over quota" in page.inner_text("[data-disk-usage]")
    alice.shot("32-site-over-quota", full_page=True)
    for person in (alice, admin):
        person.close()


def test_phone_layout(browser: Any, director: Director) -> None:
    """The site list and the menu work on a phone-sized screen."""
    bob = Person(browser, director, width=390, height=844)
    bob.sign_in("bob")
    page = bob.page
    bob.shot("22-phone-sites")
    assert not page.locator("#main-nav").is_visible()
    page.click(".menu-toggle")
    page.wait_for_selector("#main-nav.open")
    bob.shot("23-phone-menu")
    page.keyboard.press("Escape")
    assert not page.locator("#main-nav").is_visible()
    bob.close()


def test_restore_a_deleted_page_from_yesterdays_backup(browser: Any, director: Director) -> None:
    """
    A member backs their site up from its page, loses public/index.html, and puts it back
    with the backup's "Restore files" button; the site page lists the backup's time and size.
    """
    name = f"backed-{director.suffix}"
    code, body = director.api("POST", "/api/v1/sites", {"name": name, "users": ["bob"]})
    assert code == 202, body
    _wait_operation(director, body["operation"]["id"])
    index = f"{director.url}/api/v1/sites/{name}/files/public/index.html"
    request = urllib.request.Request(
        index,
        data=b"<h1>before the accident</h1>",
        method="PUT",
        headers={"Authorization": f"Bearer {director.admin_token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201)
    bob = Person(browser, director)
    bob.sign_in("bob")
    page = bob.page
    page.on("dialog", lambda dialog: dialog.accept())
    bob.goto(f"/sites/{name}")
    page.wait_for_selector("[data-backup-list]:has-text('No backups yet')")
    page.click("[data-backup-now]")
    page.wait_for_selector("table.backups tbody tr", timeout=120_000)
    row = page.locator("table.backups tbody tr").first
    assert "files" in row.inner_text() and "B" in row.locator("td").nth(1).inner_text()
    bob.shot("24-site-backups", full_page=True)

    delete = urllib.request.Request(
        index, method="DELETE", headers={"Authorization": f"Bearer {director.admin_token}"}
    )
    with urllib.request.urlopen(delete, timeout=30) as response:
        assert response.status == 200
    assert director.through_router(name)[0] in (403, 404)
    row.locator("button:has-text('Restore files')").click()
    page.wait_for_selector("#live-operation .status-succeeded", timeout=120_000)
    assert director.through_router(name) == (200, "<h1>before the accident</h1>")
    bob.close()
