"""
The image catalogue (logos, visibility, setup commands, run.sh templates) and the admins'
nginx snippets, through the REST API (StubTreq against the real Klein app and store), and
the catalogue's rules as plain values.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from director.contract.errors import ValidationError
from director.contract.sites import validate_nginx_snippet
from director.manager import catalogue
from director.manager.models import User
from director.manager.store.rows import Image
from director.testing import manager_database
from director.testing.manager import ManagerHarness

pytestmark = pytest.mark.manager_store


NODE = "director/node:18"


def _image(name: str, **fields: Any) -> Image:
    """A catalogue row as the store returns it."""
    return Image(
        id=1,
        name=name,
        friendly_name=name,
        description="",
        setup_command=None,
        is_default=False,
        **fields,
    )


class CatalogueRuleTests(SynchronousTestCase):
    def test_visibility(self) -> None:
        """Everyone sees public images; teachers also teachers' ones; only admins hidden ones."""
        student, teacher, admin = (
            User(1, "s", "student"),
            User(2, "t", "teacher"),
            User(3, "a", "admin"),
        )
        for visibility, who in (
            ("everyone", {"s", "t", "a"}),
            ("teachers", {"t", "a"}),
            ("hidden", {"a"}),
        ):
            image = _image(NODE, visibility=visibility)
            seen = {u.username for u in (student, teacher, admin) if catalogue.visible_to(u, image)}
            self.assertEqual(seen, who, visibility)

    def test_entry_keeps_what_is_left_out(self) -> None:
        current = catalogue.validate_entry(
            {"name": NODE, "friendly_name": "Node", "logo": "nodejs", "setup_commands": ["npm i"]},
            None,
        )
        changed = catalogue.validate_entry(
            {"name": NODE, "visibility": "teachers"}, Image(id=1, **current)
        )
        self.assertEqual(
            (changed["friendly_name"], changed["logo"], changed["setup_command"]),
            ("Node", "nodejs", "npm i"),
        )
        self.assertEqual(changed["visibility"], "teachers")

    def test_bad_entries(self) -> None:
        for body in (
            {"name": "Not An Image"},
            {"name": NODE, "logo": "https://evil.example/x.png"},
            {"name": NODE, "logo": "<svg onload=alert(1)>"},
            {"name": NODE, "visibility": "students"},
            {"name": NODE, "setup_commands": ["echo a\nUSER root"]},
            {"name": NODE, "setup_commands": ["echo a \\"]},
            {"name": NODE, "setup_commands": ["x" * 1001]},
            {"name": NODE, "setup_commands": "echo a"},
            {"name": NODE, "setup_commands": ["echo\x85 a"]},
            {"name": NODE, "run_template": 5},
        ):
            with self.assertRaises(ValidationError, msg=str(body)[:60]):
                catalogue.validate_entry(body, None)

    def test_run_templates(self) -> None:
        """An image's own template wins; else one by name (Python, Node.js, PHP), else a stub."""
        self.assertIn("php -S", catalogue.run_template(None, "director/php:8.2"))
        self.assertIn("node -e", catalogue.run_template(None, NODE))
        self.assertIn("http.server", catalogue.run_template(None, "director/python:3"))
        self.assertIn("sleep infinity", catalogue.run_template(None, "other/x:1"))
        own = _image(NODE, run_template="#!/bin/sh\nexec node app.js\n")
        self.assertEqual(catalogue.run_template(own), own.run_template)

    def test_snippet_shape(self) -> None:
        """A snippet stays inside the server block: braces balance (quotes and comments aside)."""
        self.assertIsNone(validate_nginx_snippet(""))
        self.assertEqual(validate_nginx_snippet("add_header X-A b;"), "add_header X-A b;\n")
        ok = 'location /x { return 200 "}"; } # }\n'
        self.assertEqual(validate_nginx_snippet(ok), ok)
        for bad in ("}", "} server {", "location / {", 'return 200 "x;', "\x00", "x" * 10_001, 5):
            with self.assertRaises(ValidationError):
                validate_nginx_snippet(bad)


class SnippetErrorTests(SynchronousTestCase):
    def test_nginx_words_with_the_snippets_line(self) -> None:
        """nginx's complaint names the snippet's own line, and no scratch path."""
        from director.orchestrator.nginx_config import site_config, snippet_error
        from director.orchestrator.sites import HostedSite

        site = HostedSite(1, "web", "static", nginx_snippet="add_header A b;\nbogus on;\n")
        text = site_config(site, "127.0.0.1:1", "sites.test", Path("/s"), [])
        line = text.splitlines().index("bogus on;") + 1
        output = (
            f'nginx: [emerg] unknown directive "bogus" in /v/nginx/check-alone/{"a" * 32}.conf:'
            f"{line}\nnginx: configuration file /v/nginx/check.conf test failed\n"
        )
        self.assertEqual(
            snippet_error(output, text), 'unknown directive "bogus" at line 2 of the snippet'
        )
        self.assertEqual(snippet_error("", text), "nginx refused the configuration")


class CatalogueAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.student = self.h.user("alice")
        self.teacher = self.h.user("tina", role="teacher")
        self.admin = self.h.user("root", role="admin")
        self.h.result(self.h.store.put_image("director/python:3", "Python 3", "", None, True))

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return self.h.call(method, path, token, body)

    def put(self, token: str, **body: Any) -> tuple[int, Any]:
        return self.call("PUT", "/api/v1/images", token, body)

    def names(self, token: str) -> list[str]:
        return [i["name"] for i in self.call("GET", "/api/v1/images", token)[1]["images"]]

    def test_admins_add_and_edit_images_with_every_field(self) -> None:
        code, body = self.put(
            self.admin,
            name=NODE,
            friendly_name="Node.js 18",
            description="Debian 12 with Node.js and npm",
            logo="nodejs",
            visibility="teachers",
            setup_commands=["npm install -g nodemon", "node --version"],
            run_template="#!/bin/sh\nexec node server.js\n",
        )
        self.assertEqual(code, 200, body)
        entry = next(i for i in body["images"] if i["name"] == NODE)
        self.assertEqual(
            entry,
            {
                "name": NODE,
                "friendly_name": "Node.js 18",
                "description": "Debian 12 with Node.js and npm",
                "logo": "nodejs",
                "visibility": "teachers",
                "setup_commands": ["npm install -g nodemon", "node --version"],
                "run_template": "#!/bin/sh\nexec node server.js\n",
                "is_default": False,
            },
        )
        # An edit changes what it sends and keeps the rest.
        code, body = self.put(self.admin, name=NODE, visibility="everyone", setup_commands=[])
        entry = next(i for i in body["images"] if i["name"] == NODE)
        self.assertEqual((entry["visibility"], entry["setup_commands"]), ("everyone", []))
        self.assertEqual(entry["logo"], "nodejs")

    def test_bad_input_changes_nothing(self) -> None:
        self.put(self.admin, name=NODE, friendly_name="Node")
        before = self.call("GET", "/api/v1/images", self.admin)[1]
        for body in (
            {"name": NODE, "logo": "javascript:alert(1)"},
            {"name": NODE, "visibility": "nobody"},
            {"name": NODE, "setup_commands": ["ok", "two\nlines"]},
            {"name": NODE, "unknown": 1},
            {"name": NODE, "setup_command": "echo a"},
        ):
            code, answer = self.put(self.admin, **body)
            self.assertEqual(code, 400, answer)
        self.assertEqual(self.call("GET", "/api/v1/images", self.admin)[1], before)
        code, _ = self.put(self.student, name=NODE, friendly_name="mine")
        self.assertEqual(code, 403)
        # The default image is for everyone: a hidden default is a conflict, and nothing changes.
        self.assertEqual(
            self.put(self.admin, name=NODE, is_default=True, visibility="hidden")[0], 409
        )
        code, body = self.put(self.admin, name="director/python:3", visibility="teachers")
        self.assertEqual((code, body["error"]), (409, "default_visibility"))
        self.assertEqual(self.call("GET", "/api/v1/images", self.admin)[1], before)

    def test_students_neither_see_nor_choose_restricted_images(self) -> None:
        self.put(self.admin, name=NODE, visibility="teachers")
        self.put(self.admin, name="director/secret:1", visibility="hidden")
        self.assertEqual(self.names(self.student), ["director/python:3"])
        self.assertEqual(self.names(self.teacher), ["director/python:3", NODE])
        self.assertEqual(self.names(self.admin), ["director/python:3", NODE, "director/secret:1"])
        # Choosing one at creation or later is refused, as for an image not in the catalogue.
        code, body = self.call(
            "POST", "/api/v1/sites", self.student, {"name": "web", "image": NODE}
        )
        self.assertEqual((code, body["error"]), (409, "unknown_image"))
        self.assertEqual(self.call("GET", "/api/v1/sites", self.student)[1]["sites"], [])
        code, _ = self.call("POST", "/api/v1/sites", self.student, {"name": "web"})
        self.assertEqual(code, 202)
        code, body = self.call("PATCH", "/api/v1/sites/web", self.student, {"image": NODE})
        self.assertEqual((code, body["error"]), (409, "unknown_image"))
        code, body = self.call(
            "PATCH", "/api/v1/sites/web", self.student, {"image": "director/secret:1"}
        )
        self.assertEqual((code, body["error"]), (409, "unknown_image"))
        self.assertEqual(self.h.result(self.h.store.get_site("web")).image, "director/python:3")
        # A teacher may.
        code, body = self.call(
            "POST", "/api/v1/sites", self.teacher, {"name": "tsite", "image": NODE}
        )
        self.assertEqual(code, 202, body)
        self.assertEqual(self.h.result(self.h.store.get_site("tsite")).image, NODE)

    def test_a_new_dynamic_site_gets_its_images_run_sh(self) -> None:
        """The image's run.sh template is written (0755) and the process restarted with it."""
        self.put(self.admin, name=NODE, run_template="#!/bin/sh\nexec node app.js\n")
        code, body = self.call(
            "POST",
            "/api/v1/sites",
            self.admin,
            {"name": "nodeapp", "type": "dynamic", "image": NODE},
        )
        self.assertEqual(code, 202, body)
        site_id = body["site"]["id"]
        entry = self.h.orchestrator.files[site_id][("run.sh",)]
        self.assertEqual((entry.data, entry.mode), (b"#!/bin/sh\nexec node app.js\n", 0o755))
        restarts = [c for c in self.h.orchestrator.calls if c[1].endswith("/restart")]
        self.assertEqual(len(restarts), 1)
        # A static site gets none.
        self.call("POST", "/api/v1/sites", self.admin, {"name": "plain"})
        plain = self.h.result(self.h.store.get_site("plain"))
        self.assertNotIn(("run.sh",), self.h.orchestrator.files.get(plain.id, {}))

    def test_nginx_snippets_are_for_admins_and_checked(self) -> None:
        self.call("POST", "/api/v1/sites", self.student, {"name": "web"})
        code, body = self.call(
            "PATCH", "/api/v1/sites/web", self.student, {"nginx_snippet": "add_header X-A b;"}
        )
        self.assertEqual(code, 403)
        # nginx refuses it: 400 with nginx's words, nothing kept, no operation.
        ops = len(self.h.orchestrator.calls)
        code, body = self.call(
            "PATCH", "/api/v1/sites/web", self.admin, {"nginx_snippet": "bogus_directive on;"}
        )
        self.assertEqual((code, body["error"]), (400, "bad_nginx_snippet"), body)
        self.assertIn("unknown directive", body["message"])
        code, body = self.call("PATCH", "/api/v1/sites/web", self.admin, {"nginx_snippet": "}"})
        self.assertEqual((code, body["error"]), (400, "bad_nginx_snippet"))
        self.assertIsNone(self.h.result(self.h.store.get_site("web")).nginx_snippet)
        checks = [c for c in self.h.orchestrator.calls[ops:] if c[1].endswith("/nginx-check")]
        self.assertEqual(len(self.h.orchestrator.calls[ops:]), len(checks))
        # A good one is kept and sent with the site.
        code, body = self.call(
            "PATCH", "/api/v1/sites/web", self.admin, {"nginx_snippet": "add_header X-A b;"}
        )
        self.assertEqual(code, 202, body)
        self.assertEqual(body["site"]["nginx_snippet"], "add_header X-A b;\n")
        spec = [k["json"] for m, p, k in self.h.orchestrator.calls if m == "PUT" and "json" in k]
        self.assertEqual(spec[-1]["nginx_snippet"], "add_header X-A b;\n")
        # Members do not see it.
        self.assertNotIn("nginx_snippet", self.call("GET", "/api/v1/sites/web", self.student)[1])


class MigrationTests(SynchronousTestCase):
    def test_up_and_down(self) -> None:
        """
        0009 adds the image fields (a non-public image becomes hidden), drops is_public and
        adds the sites' nginx snippet, with plain column changes: the members are kept.
        """
        db = manager_database.migrated_to("0008_orchestrators")
        db.execute(
            *manager_database.SITE_WITH_MEMBER,
            "INSERT INTO images (name, friendly_name, description, is_default, is_public)"
            " VALUES ('a/open:1', 'Open', '', true, true), ('a/shut:1', 'Shut', '', false, false)",
        )
        db.upgrade("0009_catalogue")
        self.assertTrue({"logo", "visibility", "run_template"} <= db.columns("images"))
        self.assertNotIn("is_public", db.columns("images"))
        self.assertIn("nginx_snippet", db.columns("sites"))
        self.assertEqual(
            db.scalar("SELECT visibility FROM images WHERE name = 'a/shut:1'"), "hidden"
        )
        self.assertEqual(
            db.scalar("SELECT visibility FROM images WHERE name = 'a/open:1'"), "everyone"
        )
        self.assertEqual(db.scalar("SELECT COUNT(*) FROM site_members"), 1)
        db.downgrade("0008_orchestrators")
        self.assertNotIn("visibility", db.columns("images"))
        self.assertFalse(db.scalar("SELECT is_public FROM images WHERE name = 'a/shut:1'"))
        self.assertTrue(db.scalar("SELECT is_public FROM images WHERE name = 'a/open:1'"))
        self.assertNotIn("nginx_snippet", db.columns("sites"))
        self.assertEqual(db.scalar("SELECT COUNT(*) FROM site_members"), 1)


class CataloguePageTests(SynchronousTestCase):
    def setUp(self) -> None:
        from tests.unit.test_dashboard import DashboardHarness

        self.d = DashboardHarness()
        self.d.user("alice")
        self.d.user("root", role="admin")
        store = self.d.h.store
        self.d.result(store.put_image("director/python:3", "Python 3", "", None, True))
        self.d.result(
            store.put_image(
                NODE, "Node.js", "", "npm -v", False, visibility="hidden", logo="nodejs"
            )
        )
        self.site = self.d.site("alice-site", ["alice"])
        self.alice = self.d.session("alice")[0]
        self.root = self.d.session("root")[0]

    def test_students_settings_page_lists_only_their_images(self) -> None:
        _, page = self.d.request("GET", "/sites/alice-site/settings", self.alice)
        self.assertIn('value="director/python:3"', page)
        self.assertNotIn(NODE, page)
        self.assertNotIn("nginx-snippet", page)  # the snippet form is the admins'
        _, page = self.d.request("GET", "/sites/alice-site/settings", self.root)
        self.assertIn(f'value="{NODE}"', page)
        self.assertIn('src="/static/logos/nodejs.svg"', page)
        self.assertIn('id="nginx-snippet"', page)

    def test_admin_images_page_shows_every_field(self) -> None:
        self.assertEqual(self.d.request("GET", "/admin/images", self.alice)[0].code, 404)
        response, page = self.d.request("GET", "/admin/images", self.root)
        self.assertEqual(response.code, 200)
        self.assertIn('src="/static/logos/nodejs.svg"', page)
        self.assertIn("RUN npm -v", page)
        self.assertIn("hidden", page)
        response, _ = self.d.request("GET", "/static/logos/nodejs.svg", self.root)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["image/svg+xml"])

    def test_admin_domains_page(self) -> None:
        """Every custom domain with its site; the certificate is unknown without a router's word."""
        store = self.d.h.store
        self.d.result(store.update_site(self.site.id, {}, domains=["www.alice.example"]))
        self.assertEqual(self.d.request("GET", "/admin/domains", self.alice)[0].code, 404)
        response, page = self.d.request("GET", "/admin/domains", self.root)
        self.assertEqual(response.code, 200)
        row = re.search(r'<tr data-domain="www.alice.example">(.*?)</tr>', page, re.S)
        assert row is not None
        self.assertIn('href="/sites/alice-site/settings"', row.group(1))


class FakeAPI:
    """What `director images` sends, answered from a list of catalogue entries."""

    def __init__(self) -> None:
        self.images: list[dict[str, Any]] = [
            {"name": "director/python:3", "friendly_name": "Python 3", "visibility": "everyone"}
            | {"is_default": True, "setup_commands": []}
        ]
        self.sent: list[tuple[str, str, Any]] = []

    def get(self, path: str) -> Any:
        return {"images": self.images}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        self.sent.append((method, path, body))
        return {"images": self.images}

    def delete(self, path: str) -> Any:
        self.sent.append(("DELETE", path, None))
        return {}


class ImagesCommandTests(SynchronousTestCase):
    def run_cli(self, api: FakeAPI, *argv: str) -> int:
        import argparse

        from director.cli_images import add_parsers

        parser = argparse.ArgumentParser()
        add_parsers(
            parser.add_subparsers(dest="command"), "etc/director.toml", lambda a, h: h(a, api)
        )
        args = parser.parse_args(["images", *argv])
        return int(args.func(args))

    def test_add_sends_every_option_and_edit_only_what_is_given(self) -> None:
        api = FakeAPI()
        code = self.run_cli(
            api,
            "add",
            NODE,
            "--friendly-name",
            "Node.js",
            "--logo",
            "nodejs",
            "--visibility",
            "teachers",
            "--setup",
            "npm -v",
            "--setup",
            "node -v",
        )
        self.assertEqual(code, 0)
        self.assertEqual(
            api.sent[-1],
            (
                "PUT",
                "/api/v1/images",
                {
                    "name": NODE,
                    "friendly_name": "Node.js",
                    "logo": "nodejs",
                    "visibility": "teachers",
                    "setup_commands": ["npm -v", "node -v"],
                },
            ),
        )
        api.images.append({"name": NODE})
        self.assertEqual(self.run_cli(api, "edit", NODE, "--visibility", "hidden"), 0)
        self.assertEqual(api.sent[-1][2], {"name": NODE, "visibility": "hidden"})
        self.assertEqual(self.run_cli(api, "add", NODE), 1)  # there already: use edit
        self.assertEqual(self.run_cli(api, "edit", "director/none:1"), 1)
        self.assertEqual(self.run_cli(api, "delete", NODE), 0)
        self.assertEqual(api.sent[-1][:2], ("DELETE", "/api/v1/images?name=director%2Fnode%3A18"))
