"""
The catalogue on a real orchestrator (in-process, real dockerd, nginx and site files): an
administrator's nginx snippet is checked with nginx -t before it is applied, and served;
the Node.js and PHP images of `director images bootstrap` run sites with their run.sh
templates and have the SSH features' tools; the guide's framework recipes (Flask, Django,
Node.js with Express, PHP) work as written, with Debian packages only.

The Node.js and PHP images are built here when missing (about 4 and 2 minutes on the
reference machine, see docs/operations.md), not by `make test`'s image step.
"""

from __future__ import annotations

import subprocess
import urllib.request
from typing import Any

import pytest
import pytest_twisted
from test_orchestrator import Orchestrator, docker_exec, image_exists, put_file, served
from test_orchestrator import orchestrator as _orchestrator  # noqa: F401  (the fixture)
from twisted.internet.threads import deferToThread

from director.common.client import ComponentCallError
from director.manager.catalogue import DEFAULT_RUN_TEMPLATES
from director.orchestrator.images import NODE_IMAGE, PHP_IMAGE, PYTHON_IMAGE, bootstrap


@pytest.fixture(scope="module")
def host(_orchestrator: Orchestrator) -> Orchestrator:  # noqa: F811
    """test_orchestrator.py's in-process orchestrator (an instance of this module's own)."""
    return _orchestrator


async def _gone(o: Orchestrator, site_id: int) -> None:
    """The site removed (its service, nginx file and files; its own images are pruned)."""
    try:
        await o.client.json("DELETE", f"/v1/sites/{site_id}?purge=1")
    finally:
        await deferToThread(
            subprocess.run, ["docker", "service", "rm", f"site_{site_id}"], capture_output=True
        )


@pytest_twisted.ensureDeferred
async def test_nginx_snippet_is_checked_then_served(host: Orchestrator) -> None:
    o = host
    site = {"name": "snip1", "type": "static"}
    await o.client.json("PUT", "/v1/sites/401", json=site)
    await put_file(o, 401, "public/index.html", b"<h1>snippet site</h1>")
    # nginx refuses it: 400 with nginx's words, and the site is served as before.
    bad = dict(site, nginx_snippet="bogus_directive on;\n")
    try:
        await o.client.json("POST", "/v1/sites/401/nginx-check", json=bad)
        raise AssertionError("nginx took a bogus directive")
    except ComponentCallError as e:
        assert (e.status, e.code) == (400, "bad_nginx_snippet"), e.body
        assert e.detail == 'unknown directive "bogus_directive" at line 1 of the snippet', e.detail
        assert "check-alone" not in e.detail  # no scratch path leaks
    await served(o, "snip1", 200, b"snippet site")
    # A good one passes the check, and once applied is served.
    snippet = (
        "add_header X-Director-Snippet yes always;\n"
        'location = /snippet { default_type text/plain; return 200 "from the snippet"; }\n'
    )
    good = dict(site, nginx_snippet=snippet)
    assert await o.client.json("POST", "/v1/sites/401/nginx-check", json=good) == {"ok": True}
    status, _ = await deferToThread(o.get, "snip1", "/snippet")
    assert status == 404  # the check changed nothing
    try:
        await o.client.json("PUT", "/v1/sites/401", json=good)
        await _served_at(o, "snip1", "/snippet", b"from the snippet")
        headers = await deferToThread(_headers, o, "snip1")
        assert headers.get("X-Director-Snippet") == "yes", headers
    finally:
        await _gone(o, 401)


async def _served_at(o: Orchestrator, name: str, path: str, body: bytes) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    got: tuple[int, bytes] = (0, b"")
    for _ in range(100):
        got = await deferToThread(o.get, name, path, None, 0.5)
        if got == (200, body):
            return
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"{name}{path}: wanted 200 {body!r}, got {got!r}")


def _headers(o: Orchestrator, name: str) -> dict[str, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{o.nginx_port}/",
        headers={"Host": f"{name}.{o.config.director.sites_domain}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(response.headers)


async def _dynamic(
    o: Orchestrator, site_id: int, name: str, image: str, run_sh: str, files: dict[str, bytes]
) -> None:
    await o.client.json("PUT", f"/v1/sites/{site_id}", json={"name": name, "type": "static"})
    for path, data in files.items():
        parent = path.rsplit("/", 1)[0]
        if parent.count("/"):  # below public/ or private/: made first (as the editor does)
            await put_file(o, site_id, parent + "/", b"")
        await put_file(o, site_id, path, data)
    await put_file(o, site_id, "run.sh", run_sh.encode(), mode="755")
    await o.client.json(
        "PUT", f"/v1/sites/{site_id}", json={"name": name, "type": "dynamic", "image": image}
    )


async def _build(o: Orchestrator, tag: str, parent: str, packages: list[str]) -> None:
    await o.client.json(
        "POST",
        "/v1/images/build",
        json={"tag": tag, "parent": parent, "packages": packages, "setup_commands": []},
        timeout=900,
    )


@pytest_twisted.ensureDeferred
async def test_node_and_php_images_with_their_templates(host: Orchestrator) -> None:
    o = host
    await deferToThread(bootstrap, False, lambda *_: None, (NODE_IMAGE, PHP_IMAGE))
    try:
        await _dynamic(o, 402, "node1", NODE_IMAGE, DEFAULT_RUN_TEMPLATES["director/node"], {})
        await served(o, "node1", 200, b"Hello from Node.js", timeout=60)
        php_index = b'<?php echo "PHP " . PHP_MAJOR_VERSION . " at " . $_SERVER["REQUEST_URI"];'
        await _dynamic(
            o,
            403,
            "php1",
            PHP_IMAGE,
            DEFAULT_RUN_TEMPLATES["director/php"],
            {"public/index.php": php_index},
        )
        await served(o, "php1", 200, b"PHP 8 at /", timeout=60)
        for site_id in (402, 403):
            result = await deferToThread(
                docker_exec,
                site_id,
                "sh",
                "-c",
                "test -x /usr/lib/openssh/sftp-server && rsync --version && git --version",
            )
            assert result.returncode == 0, result
    finally:
        for site_id in (402, 403):
            await _gone(o, site_id)


FLASK_APP = b"""from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello from Flask"
"""

EXPRESS_APP = b"""const express = require("express");
const app = express();
app.get("/", (req, res) => res.send("Hello from Express"));
app.listen(process.env.PORT, process.env.HOST);
"""


@pytest_twisted.ensureDeferred
async def test_the_guides_framework_recipes(host: Orchestrator) -> None:
    """docs/guide/dynamic-sites.md, "Frameworks": each recipe as written, on a real site."""
    o = host
    await deferToThread(bootstrap, False, lambda *_: None, (NODE_IMAGE,))
    python_tag, node_tag = "director/site-404:1", "director/site-406:1"
    try:
        # Flask and Django from Debian (python3-flask, python3-django, gunicorn).
        await _build(o, python_tag, PYTHON_IMAGE, ["python3-flask", "python3-django", "gunicorn"])
        await _dynamic(
            o,
            404,
            "flask1",
            python_tag,
            '#!/bin/sh\ncd /site/private/app\nexec gunicorn --bind "$HOST:$PORT" app:app\n',
            {"private/app/app.py": FLASK_APP},
        )
        await served(o, "flask1", 200, b"Hello from Flask", timeout=60)
        await o.client.json("PUT", "/v1/sites/405", json={"name": "django1", "type": "static"})
        await o.client.json(
            "PUT",
            "/v1/sites/405",
            json={"name": "django1", "type": "dynamic", "image": python_tag},
        )
        made = await deferToThread(
            docker_exec,
            405,
            "sh",
            "-c",
            "cd /site/private && django-admin startproject mysite"
            " && sed -i 's/^ALLOWED_HOSTS = .*/ALLOWED_HOSTS = [\"*\"]/' mysite/mysite/settings.py",
        )
        assert made.returncode == 0, made
        run_sh = (
            '#!/bin/sh\ncd /site/private/mysite\nexec gunicorn --bind "$HOST:$PORT" mysite.wsgi\n'
        )
        await put_file(o, 405, "run.sh", run_sh.encode(), mode="755")
        await o.client.json("POST", "/v1/sites/405/restart")
        await served(o, "django1", 200, b"django", timeout=60)
        # Express from Debian (node-express) on the Node.js image.
        await _build(o, node_tag, NODE_IMAGE, ["node-express"])
        await _dynamic(
            o,
            406,
            "express1",
            node_tag,
            "#!/bin/sh\ncd /site/private/app\nexec node server.js\n",
            {"private/app/server.js": EXPRESS_APP},
        )
        await served(o, "express1", 200, b"Hello from Express", timeout=60)
    finally:
        for site_id in (404, 405, 406):
            await _gone(o, site_id)
        await deferToThread(_rmi, [python_tag, node_tag])


def _rmi(tags: list[str]) -> Any:
    for tag in tags:
        if image_exists(tag):
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
