"""
The online editor's preferences in a real browser (Playwright and Debian's Chromium against
the all-in-one daemon, real Docker): hidden files show only after the toggle, the settings
(theme, key map, font size) and the layout (panel sizes, which panels are open) are kept in the
browser across a reload until "Reset layout", and the vim and emacs key maps really edit; with
a database, the SQL console and the database shell (psql in a terminal that follows the theme
and font size) answer.
Screenshots go to artifacts/screenshots/ for a person to look at; no page may log a script
error or a Content-Security-Policy violation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from services import api_request
from test_browser import Director, Person, _wait_operation, browser, director  # noqa: F401
from test_database_shell import add_host


@pytest.fixture(scope="module")
def site(director: Director) -> Iterator[str]:  # noqa: F811
    """A static site of alice's with a dotfile, a hidden folder and a text file."""
    name = f"prefs-{director.suffix}"
    code, created = director.api(
        "POST", "/api/v1/sites", {"name": name, "type": "static", "users": ["alice"]}
    )
    assert code == 202, created
    assert _wait_operation(director, created["operation"]["id"])["status"] == "succeeded"
    for path, text in (
        (".config/", ""),  # (a trailing slash makes a folder)
        (".env-notes", "SECRET=1\n"),
        (".config/settings.ini", "[a]\n"),
        ("notes.txt", "one\ntwo\nthree\n"),
    ):
        code, body = api_request(
            director.url,
            director.admin_token,
            "PUT",
            f"/api/v1/sites/{name}/files/{path}",
            raw=text.encode(),
            timeout=30,
        )
        assert code in (200, 201, 204), body
    yield name
    code, deleted = director.api("DELETE", f"/api/v1/sites/{name}")
    if code == 202:
        _wait_operation(director, deleted["operation"]["id"])


def _file(director: Director, site: str, path: str) -> str:  # noqa: F811
    code, body = api_request(
        director.url, director.admin_token, "GET", f"/api/v1/sites/{site}/files/{path}", timeout=30
    )
    assert code == 200, body
    return body.decode()


def _open_editor(person: Person, site: str) -> Any:
    page = person.goto(f"/sites/{site}/files")
    page.wait_for_selector("[data-path='public']")
    return page


def _stored(page: Any) -> dict[str, Any]:
    return page.evaluate(
        "() => Object.fromEntries(Object.keys(localStorage)"
        ".filter((k) => k.startsWith('director:editor:'))"
        ".map((k) => [k, JSON.parse(localStorage.getItem(k))]))"
    )


def test_hidden_files_show_after_the_toggle_and_the_choice_is_kept(
    browser: Any,  # noqa: F811
    director: Director,  # noqa: F811
    site: str,
) -> None:
    alice = Person(browser, director)
    alice.sign_in("alice")
    page = _open_editor(alice, site)
    page.wait_for_selector("[data-path='notes.txt']")
    assert page.locator("[data-path='.env-notes']").count() == 0
    assert page.locator("[data-path='.config']").count() == 0
    assert page.get_attribute("[data-toggle-hidden]", "aria-pressed") == "false"

    page.click("[data-toggle-hidden]")
    page.wait_for_selector("[data-path='.env-notes']")
    page.click("[data-path='.config']")
    page.wait_for_selector("[data-path='.config/settings.ini']")
    assert page.get_attribute("[data-toggle-hidden]", "aria-pressed") == "true"
    alice.shot("40-editor-hidden-files")

    page.reload()  # kept in this browser
    page.wait_for_selector("[data-path='.env-notes']")
    page.click("[data-toggle-hidden]")
    page.wait_for_selector("[data-path='.env-notes']", state="detached")
    assert page.locator("[data-path='notes.txt']").count() == 1
    page.reload()
    page.wait_for_selector("[data-path='notes.txt']")
    assert page.locator("[data-path='.env-notes']").count() == 0
    alice.close()


def test_settings_survive_a_reload_and_vim_and_emacs_edit(
    browser: Any,  # noqa: F811
    director: Director,  # noqa: F811
    site: str,
) -> None:
    alice = Person(browser, director)
    alice.sign_in("alice")
    page = _open_editor(alice, site)
    assert page.locator(".editor-app.theme-dark").count() == 0
    page.click("[data-settings-button]")
    page.select_option("#editor-theme", "dark")
    page.select_option("#editor-keymap", "vim")
    page.select_option("#editor-font-size", "18")
    page.click("[data-settings-close]")
    page.wait_for_selector(".editor-app.theme-dark[data-keymap='vim']")

    page.reload()
    page.wait_for_selector(".editor-app.theme-dark[data-keymap='vim']")
    page.click("[data-settings-button]")
    assert [page.input_value(f"#editor-{n}") for n in ("theme", "keymap", "font-size")] == [
        "dark",
        "vim",
        "18",
    ]
    page.click("[data-settings-close]")
    page.click("[data-path='notes.txt']")
    page.wait_for_selector(".cm-content:has-text('three')")
    font = page.evaluate("() => getComputedStyle(document.querySelector('.cm-content')).fontSize")
    assert font == "18px"
    page.wait_for_selector(".cm-vim-panel, .cm-fat-cursor")  # vim's block cursor: normal mode
    page.keyboard.press("g")
    page.keyboard.press("g")
    page.keyboard.press("d")
    page.keyboard.press("d")  # deletes the first line
    page.wait_for_selector(".cm-content:not(:has-text('one'))")
    assert page.locator(".cm-line").first.inner_text() == "two"
    alice.shot("41-editor-dark-vim")
    page.keyboard.type(":w")
    page.keyboard.press("Enter")  # vim's :w saves
    page.wait_for_selector("[data-save-state]:has-text('Saved ')")
    assert _file(director, site, "notes.txt") == "two\nthree\n"

    page.click("[data-settings-button]")
    page.select_option("#editor-keymap", "emacs")
    page.click("[data-settings-close]")
    page.wait_for_selector(".editor-app[data-keymap='emacs']")
    page.click(".cm-line >> nth=0")
    page.keyboard.press("Control+a")  # emacs: the start of the line, not "select all"
    page.keyboard.press("Control+k")  # emacs: kill to the end of the line
    page.wait_for_selector(".cm-content:not(:has-text('two'))")
    assert page.locator(".cm-line").nth(1).inner_text() == "three"
    page.keyboard.press("Control+s")  # emacs: search, not save
    page.wait_for_selector(".cm-search")
    assert page.locator("[data-save-state]:has-text('Unsaved changes')").count() == 1
    page.keyboard.press("Escape")
    page.keyboard.press("Control+x")
    page.keyboard.press("Control+s")  # emacs: save
    page.wait_for_selector("[data-save-state]:has-text('Saved ')")
    assert _file(director, site, "notes.txt") == "\nthree\n"
    assert _stored(page)["director:editor:settings"] == {
        "theme": "dark",
        "keymap": "emacs",
        "fontSize": 18,
    }
    alice.close()


def test_the_layout_is_kept_until_reset(
    browser: Any,  # noqa: F811
    director: Director,  # noqa: F811
    site: str,
) -> None:
    alice = Person(browser, director)
    alice.sign_in("alice")
    page = _open_editor(alice, site)

    def files_width() -> float:
        return float(page.evaluate("() => document.querySelector('.files-pane').offsetWidth"))

    def panes_height() -> float:
        return float(
            page.evaluate("() => document.querySelector('[data-bottom-panes]').offsetHeight")
        )

    assert files_width() == 260
    page.click("[data-toggle-hidden]")  # (reset forgets this too)
    page.wait_for_selector("[data-path='.env-notes']")
    box = page.locator("[data-splitter='files']").bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 152, box["y"] + 120, steps=5)
    page.mouse.up()
    assert abs(files_width() - 410) <= 3
    page.focus("[data-splitter='files']")
    page.keyboard.press("ArrowLeft")  # the splitter moves by keyboard too, 20 px a step
    assert abs(files_width() - 390) <= 3

    page.click("[data-new-terminal]")
    page.wait_for_selector(".pane-body .xterm")
    default_height = panes_height()
    box = page.locator("[data-splitter='bottom']").bounding_box()
    page.mouse.move(box["x"] + 200, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] - 120, steps=5)
    page.mouse.up()
    assert abs(panes_height() - (default_height + 122)) <= 4
    tall = panes_height()

    page.reload()
    page.wait_for_selector("[data-path='public']")
    assert abs(files_width() - 390) <= 3
    page.click("[data-new-terminal]")
    page.wait_for_selector(".pane-body .xterm")
    assert abs(panes_height() - tall) <= 2
    page.click("[data-toggle-bottom]")  # fold the panes away, and hide the file tree
    page.click("[data-toggle-files]")
    page.wait_for_selector(".files-pane", state="hidden")
    assert page.locator(".pane-body:visible").count() == 0
    alice.shot("42-editor-panels-folded")

    page.reload()
    page.wait_for_selector("[data-toggle-files][aria-pressed='false']")
    assert page.locator(".files-pane").is_hidden()
    page.click("[data-new-terminal]")  # a new pane opens the folded panes again
    page.wait_for_selector(".pane-body .xterm")
    assert page.get_attribute("[data-toggle-bottom]", "aria-pressed") == "true"
    page.click("[data-settings-button]")
    page.select_option("#editor-theme", "dark")
    page.click("[data-reset-layout]")
    page.wait_for_selector(".editor-app:not(.theme-dark)")
    page.wait_for_selector(".files-pane", state="visible")
    assert files_width() == 260
    assert page.input_value("#editor-theme") == "light"
    assert page.get_attribute("[data-toggle-hidden]", "aria-pressed") == "false"
    page.wait_for_selector("[data-path='.env-notes']", state="detached")
    assert _stored(page) == {}
    alice.shot("43-editor-layout-reset")
    page.reload()
    page.wait_for_selector("[data-path='public']")
    assert files_width() == 260
    assert page.locator(".editor-app.theme-dark").count() == 0
    alice.close()


def _give_database(director: Director, site: str, postgres_server: Any) -> None:  # noqa: F811
    """A PostgreSQL database for the site (on the session's server), unless it has one."""
    code, body = director.api("GET", f"/api/v1/sites/{site}")
    assert code == 200, body
    if body["database"] is not None:
        return
    add_host(director, "postgres", postgres_server)
    code, body = director.api("POST", f"/api/v1/sites/{site}/database", {"type": "postgres"})
    assert code == 202, body
    assert _wait_operation(director, body["operation"]["id"])["status"] == "succeeded"


def test_the_sql_console_in_the_editor(
    browser: Any,  # noqa: F811
    director: Director,  # noqa: F811
    site: str,
    postgres_server: Any,
) -> None:
    """With a database, the editor's SQL pane runs a query on it and shows the rows."""
    alice = Person(browser, director)
    alice.sign_in("alice")
    page = _open_editor(alice, site)
    assert page.locator("[data-open-sql]").count() == 0  # no database yet
    assert page.locator("[data-open-db-shell]").count() == 0
    _give_database(director, site, postgres_server)

    page.reload()
    page.wait_for_selector("[data-path='public']")
    page.click("[data-open-sql]")
    box = page.locator(".pane-sql textarea")
    box.fill("select 6*7 as answer, '<b>x</b>' as html")
    box.press("Control+Enter")
    page.wait_for_selector(".pane-sql td:has-text('42')")
    assert page.locator(".pane-sql th").all_text_contents() == ["answer", "html"]
    assert page.locator(".pane-sql td b").count() == 0  # values are text, never HTML
    box.fill("select nope")
    box.press("Control+Enter")
    page.wait_for_selector(".pane-sql .field-error")
    # (the refusal itself is the only thing the browser logs)
    alice.problems = [p for p in alice.problems if "status of 422" not in p]
    alice.shot("44-editor-sql-console")
    page.click(".pane-tab:has-text('SQL') .close")
    page.keyboard.press("Alt+c")  # opens it again, with its history
    page.wait_for_selector(".pane-sql textarea")
    page.locator(".pane-sql textarea").press("ArrowUp")
    assert page.input_value(".pane-sql textarea") == "select nope"
    alice.close()


def _terminal_text(page: Any, selector: str, wanted: str, after: str = "") -> None:
    """Wait until the terminal at C{selector} shows C{wanted} (after the text C{after})."""
    try:
        page.wait_for_function(
            "([sel, wanted, after]) => { const text = document.querySelector(sel)?.innerText || '';"
            " return (after ? text.split(after).pop() : text).includes(wanted); }",
            arg=[selector, wanted, after],
            timeout=30000,
        )
    except Exception as e:
        shown = page.evaluate("(sel) => document.querySelector(sel)?.innerText", selector)
        raise AssertionError(f"{wanted!r} not in {selector}: {shown!r}") from e


def test_the_database_shell_in_the_editor_and_the_terminal_page(
    browser: Any,  # noqa: F811
    director: Director,  # noqa: F811
    site: str,
    postgres_server: Any,
) -> None:
    """
    With a database, the editor's Database shell opens psql in a pane and SELECT 40+2;
    shows 42; the pane's terminal takes the editor's theme and font size, also when they
    change; the terminal page switches between the database and the login shell.
    """
    _give_database(director, site, postgres_server)
    alice = Person(browser, director)
    alice.sign_in("alice")
    page = _open_editor(alice, site)
    page.click("[data-settings-button]")
    page.select_option("#editor-theme", "dark")
    page.select_option("#editor-font-size", "18")
    page.click("[data-settings-close]")
    page.click("[data-open-db-shell]")
    host = ".pane-body [data-shell='database']"
    rows = f"{host} .xterm-rows"
    _terminal_text(page, rows, "=>")  # psql's prompt: site_N=>
    assert page.locator(".pane-tab:has-text('psql')").count() == 1
    page.keyboard.type("SELECT 40+2;\n")
    _terminal_text(page, rows, "42", after="SELECT 40+2;")

    def looks() -> tuple[str, str]:
        font = page.eval_on_selector(rows, "e => getComputedStyle(e).fontSize")
        return font, page.eval_on_selector(host, "e => getComputedStyle(e).backgroundColor")

    assert looks() == ("18px", "rgb(40, 44, 52)")  # One Dark, as the editor
    alice.shot("45-editor-database-shell")
    page.click("[data-settings-button]")
    page.select_option("#editor-theme", "light")
    page.select_option("#editor-font-size", "13")
    page.click("[data-settings-close]")
    page.wait_for_function(
        "(sel) => getComputedStyle(document.querySelector(sel)).fontSize === '13px'", arg=rows
    )
    assert looks() == ("13px", "rgb(255, 255, 255)")

    alice.goto(f"/sites/{site}/terminal?shell=database")
    page.wait_for_selector("[data-terminal-state].ok")
    _terminal_text(page, ".xterm-rows", "=>")
    page.keyboard.type("SELECT 40+2;\n")
    _terminal_text(page, ".xterm-rows", "42", after="SELECT 40+2;")
    assert page.get_attribute("[data-terminal-shell]", "aria-pressed") == "true"
    alice.shot("46-terminal-database-shell")
    page.click("[data-terminal-shell]")  # back to the login shell
    page.wait_for_selector("[data-terminal-state].ok")
    _terminal_text(page, ".xterm-rows", "$")
    page.keyboard.type("echo login-$((6*7))\n")
    _terminal_text(page, ".xterm-rows", "login-42")
    assert "shell=" not in page.url
    alice.close()


def test_stored_garbage_is_ignored(
    browser: Any,  # noqa: F811
    director: Director,  # noqa: F811
    site: str,
) -> None:
    """Whatever another version (or a person) left in localStorage cannot break the page."""
    alice = Person(browser, director)
    alice.sign_in("alice")
    page = _open_editor(alice, site)
    page.evaluate(
        "(values) => { for (const [k, v] of Object.entries(values)) localStorage.setItem(k, v); }",
        {
            "director:editor:settings": json.dumps(
                {"theme": "<b>", "keymap": "ed", "fontSize": 1e9}
            ),
            "director:editor:layout": "{not json",
            "director:editor:view": json.dumps(["showHidden"]),
        },
    )
    page.reload()
    page.wait_for_selector("[data-path='notes.txt']")
    assert page.locator("[data-path='.env-notes']").count() == 0
    assert page.get_attribute(".editor-app", "data-keymap") == "default"
    assert page.locator(".editor-app.theme-dark").count() == 0
    assert page.evaluate("() => document.querySelector('.files-pane').offsetWidth") == 260
    alice.close()
