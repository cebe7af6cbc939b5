"""
What L{OrchestratorClient} gets from an orchestrator. The same checks run against the real
app in memory (L{director.orchestrator.web.OrchestratorAPI} over C{StubTreq}, with the
verified Docker and database fakes) and against L{FakeOrchestrator}
(tests/unit/test_orchestrator_client_contract.py), which keeps the fake honest.

A test case mixes L{OrchestratorContract} in and provides C{client} (an L{OrchestratorClient})
and C{call} (the result of a coroutine, once everything it waits for has happened).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any

from director.clients.orchestrator import OrchestratorClient
from director.contract.databases import DatabaseHost, DatabaseSpec
from director.testing.component_contract import ComponentContract

IMAGE = "director/python:3"
HOST = {
    "kind": "postgres",
    "admin_host": "127.0.0.1",
    "admin_port": 5432,
    "admin_user": "postgres",
    "admin_password": "pw",
    "container_host": "172.17.0.1",
    "container_port": None,
}


def spec(name: str, kind: str = "static", **extra: Any) -> dict[str, Any]:
    """A site's spec as the manager sends it."""
    return {
        "name": name,
        "type": kind,
        "availability": "enabled",
        "image": IMAGE,
        "env": {},
        "limits": {},
        "custom_domains": [],
        **extra,
    }


#: A member of a test archive: (name, kind, mode, mtime, content or link target).
Member = tuple[str, str, int, int, Any]
GOOD: list[Member] = [
    ("public", "dir", 0o755, 1_700_000_000, None),
    ("public/index.html", "file", 0o640, 1_700_000_100, b"<h1>moved</h1>"),
    ("public/link", "link", 0o777, 1_700_000_200, "index.html"),
    ("public/empty", "dir", 0o700, 1_700_000_300, None),
    ("private", "dir", 0o700, 1_700_000_400, None),
    ("private/.env", "file", 0o600, 1_700_000_500, b"SECRET=1\n"),
    ("private/bin/run.sh", "file", 0o755, 1_700_000_600, b"#!/bin/sh\necho hi\n"),
    (".profile", "file", 0o644, 1_700_000_700, b"export A=1\n"),
]


def tar_of(members: list[Member], compress: bool = False) -> bytes:
    """A tar (gzip with C{compress}) of C{members}, written as a person's tar tool would."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if compress else "w") as archive:
        for name, kind, mode, mtime, value in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, mtime
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, value
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, value
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                info.size = len(value)
                archive.addfile(info, io.BytesIO(value))
                continue
            archive.addfile(info)
    return out.getvalue()


def read_tar(data: bytes) -> dict[str, tuple[str, int, int, Any]]:
    """What an exported archive holds: name -> (kind, mode, mtime, content or target)."""
    found: dict[str, tuple[str, int, int, Any]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for info in archive:
            if info.isdir():
                found[info.name] = ("dir", info.mode, int(info.mtime), None)
            elif info.issym():
                found[info.name] = ("link", 0o777, int(info.mtime), info.linkname)
            else:
                reader = archive.extractfile(info)
                content = reader.read() if reader is not None else b""
                found[info.name] = ("file", info.mode, int(info.mtime), content)
    return found


class OrchestratorContract(ComponentContract):
    client: OrchestratorClient
    #: the clock the client's archive downloads time out on
    clock: Any

    def exported(self, site_id: int) -> dict[str, tuple[str, int, int, Any]]:
        chunks: list[bytes] = []
        size = self.call(self.client.export_files(site_id, chunks.append, self.clock))
        data = b"".join(chunks)
        self.assertEqual(size, len(data))
        return read_tar(data)

    def imported(self, site_id: int, data: bytes) -> Any:
        digest = hashlib.sha256(data).hexdigest()
        return self.client.import_files(site_id, io.BytesIO(data), digest)

    def test_site_files_round_trip(self) -> None:
        """An archive in and out keeps contents, modes, times and links as links."""
        self.call(self.client.put_site(3, spec("web")))
        fresh = self.exported(3)
        for name, mode in (("public", 0o755), ("private", 0o700), (".home", 0o700)):
            self.assertEqual(fresh[name][:2], ("dir", mode))
        answer = self.call(self.imported(3, tar_of(GOOD, compress=True)))
        self.assertEqual(answer["imported"], 3)
        self.assertEqual(answer["entries"], len(GOOD) + 1)  # and private/bin, made for run.sh
        got = self.exported(3)
        for name, kind, mode, mtime, value in GOOD:
            want = (kind, mode, mtime, value)
            self.assertEqual(got[name], want, name)
        self.assertEqual(got["private/bin"][:2], ("dir", 0o755))
        self.assertEqual(got[".home"][:2], ("dir", 0o700))  # the layout is made if missing
        # What one orchestrator exports, another imports as it was.
        self.call(self.client.put_site(4, spec("copy")))
        chunks: list[bytes] = []
        self.call(self.client.export_files(3, chunks.append, self.clock))
        self.call(self.imported(4, b"".join(chunks)))
        self.assertEqual(self.exported(4), got)

    def test_an_escaping_archive_is_refused_and_changes_nothing(self) -> None:
        self.call(self.client.put_site(3, spec("web")))
        self.call(self.imported(3, tar_of(GOOD)))
        before = self.exported(3)
        new: Member = ("public/new.txt", "file", 0o644, 1_700_000_000, b"new")
        big: Member = ("public/big.bin", "file", 0o644, 1_700_000_000, b"x" * 100_000)
        cases: list[tuple[str, bytes]] = [
            ("a parent path", tar_of([new, ("../evil", "file", 0o644, 0, b"x")])),
            ("an absolute path", tar_of([new, ("/srv/evil", "file", 0o644, 0, b"x")])),
            ("a climbing path", tar_of([new, ("public/../../evil", "file", 0o644, 0, b"x")])),
            ("a link out", tar_of([new, ("public/out", "link", 0o777, 0, "../../etc")])),
            ("an absolute link", tar_of([new, ("public/pw", "link", 0o777, 0, "/etc/passwd")])),
            (
                "a path through a link",
                tar_of(
                    [
                        new,
                        ("public/l", "link", 0o777, 0, "."),
                        ("public/l/x", "file", 0o644, 0, b""),
                    ]
                ),
            ),
            (
                "a link out through another link",
                tar_of(
                    [
                        new,
                        ("public/e", "link", 0o777, 0, "d/../.."),  # d is not known yet
                        ("public/d", "link", 0o777, 0, "."),
                    ]
                ),
            ),
            ("a device", tar_of([new, ("public/null", "chr", 0o666, 0, None)])),
            ("a FIFO", tar_of([new, ("public/pipe", "fifo", 0o644, 0, None)])),
            ("a hard link", tar_of([new, ("public/h", "hardlink", 0o644, 0, "public/new.txt")])),
            ("a path twice", tar_of([new, new])),
            ("a cut-off archive", tar_of([new, big])[:60_000]),
            ("an archive cut off between members", tar_of([new, big])[:1024]),
            ("not an archive", b"this is not a tar file at all" * 40),
        ]
        for what, data in cases:
            e = self.refused(self.imported(3, data))
            self.assertEqual((e.status, e.code), (400, "bad_archive"), what)
            self.assertTrue(e.detail, what)
            self.assertEqual(self.exported(3), before, what)

    def test_an_archive_over_the_quota_is_refused(self) -> None:
        self.call(self.client.put_site(5, spec("small", limits={"disk_quota_mb": 1})))
        before = self.exported(5)
        data = tar_of([("public/big.bin", "file", 0o644, 0, b"x" * (2 * 1024 * 1024))])
        e = self.refused(self.imported(5, data))
        self.assertEqual((e.status, e.code), (413, "quota_exceeded"))
        self.assertEqual(self.exported(5), before)

    def test_the_archive_of_an_unknown_site(self) -> None:
        e = self.refused(self.client.export_files(9, lambda _: None, self.clock))
        self.assertEqual((e.status, e.code), (404, "unknown_site"))
        e = self.refused(self.imported(9, tar_of(GOOD)))
        self.assertEqual((e.status, e.code), (404, "unknown_site"))

    def ids(self) -> list[int]:
        return [s["id"] for s in self.call(self.client.list_sites())]

    def stop_engine(self) -> None:
        """Make the orchestrator's Docker engine stop answering (its process still does)."""
        raise NotImplementedError

    def test_health(self) -> None:
        """An orchestrator whose engine runs is healthy: engine ok, its swarm node ready."""
        report = self.call(self.client.health(timeout=5))
        self.assertEqual(report["component"], "orchestrator")
        self.assertTrue(report["healthy"])
        self.assertEqual(report["engine"]["error"], None)
        self.assertTrue(report["engine"]["ok"])
        self.assertEqual(report["swarm"]["local_state"], "active")
        self.assertEqual(report["swarm"]["state"], "ready")
        self.assertTrue(report["swarm"]["node"])

    def test_health_of_a_stopped_engine(self) -> None:
        """Its engine stopped, the orchestrator still answers: unhealthy, saying why."""
        self.stop_engine()
        report = self.call(self.client.health(timeout=5))
        self.assertFalse(report["healthy"])
        self.assertFalse(report["engine"]["ok"])
        self.assertIn("does not answer", report["engine"]["error"])
        self.assertEqual(self.call(self.client.whoami())["component"], "orchestrator")

    def test_whoami(self) -> None:
        self.assertEqual(self.call(self.client.whoami())["component"], "orchestrator")

    def test_a_static_site(self) -> None:
        status = self.call(self.client.put_site(3, spec("web")))
        self.assertEqual(
            {k: status[k] for k in ("id", "name", "type", "availability", "served", "upstream")},
            {
                "id": 3,
                "name": "web",
                "type": "static",
                "availability": "enabled",
                "served": True,
                "upstream": [],
            },
        )
        (listed,) = self.call(self.client.list_sites())
        self.assertEqual((listed["id"], listed["name"], listed["healthy"]), (3, "web", True))
        now = self.call(self.client.site_status(3))
        self.assertEqual((now["name"], now["running"], now["starting"]), ("web", True, False))
        self.assertEqual(now["error"], None)
        self.assertIn("log", now)

    def test_a_dynamic_site(self) -> None:
        status = self.call(self.client.put_site(4, spec("app", "dynamic")))
        self.assertEqual(len(status["upstream"]), 1)
        self.assertTrue(self.call(self.client.site_status(4))["running"])
        disabled = self.call(
            self.client.put_site(4, spec("app", "dynamic", availability="disabled"))
        )
        self.assertEqual((disabled["served"], disabled["upstream"]), (False, []))
        self.assertFalse(self.call(self.client.site_status(4))["running"])

    def test_a_bad_spec_is_refused_and_changes_nothing(self) -> None:
        self.call(self.client.put_site(3, spec("web")))
        for bad in (
            spec("-web"),
            spec("web", kind="php"),
            {**spec("web"), "colour": "red"},
            spec("web", env={"PATH": "/x"}),
        ):
            e = self.refused(self.client.put_site(3, bad))
            self.assertEqual((e.status, e.code), (400, "invalid"), bad)
        self.assertEqual(self.call(self.client.list_sites())[0]["type"], "static")

    def test_a_name_belongs_to_one_site(self) -> None:
        self.call(self.client.put_site(3, spec("web")))
        e = self.refused(self.client.put_site(5, spec("web")))
        self.assertEqual((e.status, e.code), (400, "invalid"))
        self.assertEqual(self.ids(), [3])

    def test_an_unknown_image_is_refused(self) -> None:
        e = self.refused(self.client.put_site(4, spec("app", "dynamic", image="director/nope:1")))
        self.assertEqual((e.status, e.code), (400, "invalid"))
        self.assertEqual(self.ids(), [])

    def test_unknown_sites(self) -> None:
        for call in (self.client.site_status(9), self.client.restart_site(9)):
            e = self.refused(call)
            self.assertEqual((e.status, e.code), (404, "unknown_site"))

    def test_removal(self) -> None:
        self.call(self.client.put_site(3, spec("web")))
        self.assertTrue(self.call(self.client.remove_site(3, purge=True)))
        self.assertFalse(self.call(self.client.remove_site(3, purge=False)))
        self.assertEqual(self.ids(), [])
        self.assertEqual(self.refused(self.client.site_status(3)).status, 404)

    def test_restart(self) -> None:
        self.call(self.client.put_site(4, spec("app", "dynamic")))
        status = self.call(self.client.restart_site(4))
        self.assertEqual((status["id"], status["name"], status["served"]), (4, "app", True))
        self.assertTrue(self.call(self.client.site_status(4))["running"])

    def test_tasks_run_only_on_served_sites(self) -> None:
        self.call(self.client.put_site(6, spec("off", "dynamic", availability="disabled")))
        e = self.refused(self.client.run_task(6, "true", 5, 1024))
        self.assertEqual((e.status, e.code), (409, "not_served"))
        e = self.refused(self.client.run_task(9, "true", 5, 1024))
        self.assertEqual((e.status, e.code), (404, "unknown_site"))
        self.call(self.client.put_site(6, spec("off", "dynamic")))
        e = self.refused(self.client.run_task(6, "", 5, 1024))
        self.assertEqual((e.status, e.code), (400, "bad_request"))

    def test_disk(self) -> None:
        self.call(self.client.put_site(3, spec("web", limits={"disk_quota_mb": 5})))
        report = self.call(self.client.disk())
        self.assertEqual(
            report["sites"],
            [{"id": 3, "disk_usage_bytes": None, "disk_quota_bytes": 5 * 1024 * 1024}],
        )

    def test_image_builds(self) -> None:
        e = self.refused(self.client.build_image("mine:1", IMAGE, []))
        self.assertEqual((e.status, e.code), (400, "bad_tag"))
        e = self.refused(self.client.build_image("director/site-3:1", "director/nope:1", []))
        self.assertEqual((e.status, e.code), (404, "bad_parent"))
        # A setup command is one RUN step: a line break or a trailing backslash (which would
        # join the next Dockerfile line) is refused before anything is built.
        for bad in ("echo a\nRUN echo b", "echo a \\", "x" * 1001):
            e = self.refused(self.client.build_image("director/site-3:1", IMAGE, [], [bad]))
            self.assertEqual((e.status, e.code), (400, "bad_packages"), bad)
        built = self.call(
            self.client.build_image("director/site-3:1", IMAGE, ["cowsay"], ["echo ready"])
        )
        self.assertEqual(built["tag"], "director/site-3:1")
        self.call(self.client.put_site(3, spec("web", "dynamic", image="director/site-3:1")))

    def test_check_nginx(self) -> None:
        """A spec's server block is checked without changing anything; bad shapes are 400."""
        self.call(self.client.check_nginx(3, spec("web", nginx_snippet="add_header X-A b;\n")))
        e = self.refused(self.client.check_nginx(3, spec("web", nginx_snippet="}")))
        self.assertEqual(e.status, 400)
        e = self.refused(self.client.check_nginx(3, spec("web", nginx_snippet="server {")))
        self.assertEqual(e.status, 400)

    def test_create_file(self) -> None:
        """A new file is written once; a second write of it says it was there (False)."""
        self.call(self.client.put_site(3, spec("web", "dynamic")))
        self.assertTrue(self.call(self.client.create_file(3, "run.sh", b"#!/bin/sh\n", "755")))
        self.assertFalse(self.call(self.client.create_file(3, "run.sh", b"other\n", "755")))
        e = self.refused(self.client.create_file(99, "run.sh", b"x"))
        self.assertEqual(e.status, 404)

    def test_databases(self) -> None:
        login = DatabaseSpec(
            DatabaseHost.from_record(HOST), "site_db", "site_user", "secret-password"
        )
        environment = self.call(self.client.put_database(login))
        self.assertEqual(
            (environment["DIRECTOR_DATABASE_NAME"], environment["DIRECTOR_DATABASE_HOST"]),
            ("site_db", "172.17.0.1"),
        )
        self.assertEqual(environment["DATABASE_URL"], environment["DIRECTOR_DATABASE_URL"])
        result = self.call(self.client.query_database(login, "SELECT 7"))
        self.assertEqual(result["rows"], [[7]])
        wrong = DatabaseSpec(
            DatabaseHost.from_record(HOST), "site_db", "site_user", "wrong-password"
        )
        e = self.refused(self.client.query_database(wrong, "SELECT 7"))
        self.assertEqual((e.status, e.code), (422, "access_denied"))
        self.call(self.client.put_database(wrong))  # a new password
        self.assertEqual(self.call(self.client.query_database(wrong, "SELECT 1"))["rows"], [[1]])
        self.call(self.client.drop_database(HOST, "site_db", "site_user"))
        e = self.refused(self.client.query_database(wrong, "SELECT 1"))
        self.assertEqual((e.status, e.code), (422, "access_denied"))

    def test_a_bad_database_host_is_refused(self) -> None:
        host = {k: v for k, v in HOST.items() if k != "admin_port"}
        e = self.refused(
            self.client.put_database(DatabaseSpec(DatabaseHost.from_record(host), "d", "u", "p"))
        )
        self.assertEqual((e.status, e.code), (400, "bad_request"))
