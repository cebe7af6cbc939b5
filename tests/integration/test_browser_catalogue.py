"""
The image catalogue, nginx snippets and the domains page in Chromium, against the whole
daemon (`twistd director` with real dockerd, nginx and the router): an admin adds an image
on Admin -> Images, a student does not see it; an admin's bad snippet shows nginx's words
and changes nothing, a good one is served through the router; Admin -> Domains lists a
site's domain. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest
from test_browser import Director, Person, _wait_operation
from test_browser import browser as _browser  # noqa: F401  (the fixtures)
from test_browser import director as _director  # noqa: F401


@pytest.fixture(scope="module")
def d(_director: Director) -> Director:  # noqa: F811
    return _director


@pytest.fixture(scope="module")
def chromium(_browser: Any) -> Any:  # noqa: F811
    return _browser


def _header(d: Director, site: str, name: str) -> str | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{d.router_port}/", headers={"Host": f"{site}.sites.localhost"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get(name)


def test_catalogue_snippets_and_domains(chromium: Any, d: Director) -> None:
    name = f"cat-{d.suffix}"
    code, body = d.api("POST", "/api/v1/sites", {"name": name, "users": ["alice"]})
    assert code == 202, body
    assert _wait_operation(d, body["operation"]["id"])["status"] == "succeeded"

    admin = Person(chromium, d)
    admin.sign_in("admin", d.admin_password)
    page = admin.goto("/admin/images")
    form = page.locator("aside form.image-form")
    form.locator("[name=name]").fill("director/debian:bookworm")
    form.locator("[name=friendly_name]").fill("Debian for teachers")
    form.locator("[name=logo]").select_option("terminal")
    form.locator("[name=visibility]").select_option("teachers")
    form.locator("[name=setup_commands]").fill("echo one\necho two")
    form.locator("button[type=submit]").click()
    # The row is there before the save too: wait for the saved one (the page reloads).
    row = page.locator('li[data-image="director/debian:bookworm"]', has_text="teachers")
    row.wait_for()
    assert "RUN echo one" in row.inner_text() and "RUN echo two" in row.inner_text()
    assert row.locator('img[src="/static/logos/terminal.svg"]').count() == 1
    admin.shot("40-admin-images", full_page=True)
    entry = next(
        i
        for i in d.api("GET", "/api/v1/images")[1]["images"]
        if i["name"].startswith("director/debian")
    )
    assert (entry["visibility"], entry["setup_commands"]) == ("teachers", ["echo one", "echo two"])

    alice = Person(chromium, d)
    alice.sign_in("alice")
    page = alice.goto(f"/sites/{name}/settings")
    assert page.locator('input[value="director/debian:bookworm"]').count() == 0
    assert page.locator("#nginx-snippet").count() == 0
    alice.shot("41-student-images")

    page = admin.goto(f"/sites/{name}/settings")
    page.fill("#nginx-snippet", "bogus_directive on;")
    page.click("#nginx-snippet-form button[type=submit]")
    error = page.locator("#nginx-snippet-form [data-error-for=form]")
    error.wait_for(state="visible")
    assert 'unknown directive "bogus_directive" at line 1 of the snippet' in error.inner_text()
    admin.shot("42-bad-nginx-snippet")
    # the refused PATCH (its 400) is the only thing the browser may log
    assert [p for p in admin.problems if "status of 400" not in p] == []
    admin.problems = []
    assert d.api("GET", f"/api/v1/sites/{name}")[1]["nginx_snippet"] is None
    page.fill("#nginx-snippet", "add_header X-From-Snippet yes always;")
    page.click("#nginx-snippet-form button[type=submit]")
    page.wait_for_selector("#live-operation .status-succeeded")
    deadline = time.monotonic() + 30
    while _header(d, name, "X-From-Snippet") != "yes" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _header(d, name, "X-From-Snippet") == "yes"

    code, body = d.api("POST", f"/api/v1/sites/{name}/domains", {"domain": f"{name}.example.org"})
    assert code == 202, body
    _wait_operation(d, body["operation"]["id"])
    page = admin.goto("/admin/domains")
    row = page.locator(f'tr[data-domain="{name}.example.org"]')
    assert name in row.inner_text()
    admin.shot("43-admin-domains", full_page=True)
    for person in (alice, admin):
        person.close()
