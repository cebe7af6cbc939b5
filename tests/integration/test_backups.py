"""
Site backups on real restic, PostgreSQL 15 and MariaDB: the orchestrator's L{SiteBackups}
makes a snapshot of a site's files and a dump of its database; a deleted file and a dropped
table both come back from it; a restore of one path leaves the rest of the site as it is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from services import MariaDBServer, PostgresServer

from director.common.restic import Restic, ResticSettings
from director.common.threads import BlockingPool
from director.orchestrator.backups import BackupError, DatabaseTarget, SiteBackups
from director.orchestrator.databases import DatabaseHost, make_database_admin, new_password


@pytest.fixture
def state() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="director-backups-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pool() -> Iterator[BlockingPool]:
    from twisted.internet import reactor

    pool = BlockingPool(reactor, "test-backups", size=4, timeout=120)
    pool.startService()
    yield pool
    pool.stopService()


def _backups(state: Path, pool: BlockingPool) -> SiteBackups:
    from twisted.internet import reactor

    settings = ResticSettings(
        repository=str(state / "backups" / "restic"),
        password_file=state / "secrets" / "restic-password",
        cache_dir=state / "backups" / "cache",
    )
    return SiteBackups(reactor, Restic(reactor, settings, timeout=300), state, pool)


def _site(state: Path, site_id: int, files: dict[str, str]) -> Path:
    site = state / "sites" / str(site_id)
    for path, text in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(text)
    return site


def _host(kind: Any, server: Any) -> DatabaseHost:
    return DatabaseHost(
        kind,
        server.host,
        server.port,
        server.admin_user,
        server.admin_password,
    )


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
@pytest_twisted.ensureDeferred
async def test_deleted_file_and_dropped_table_come_back(
    kind: str,
    state: Path,
    pool: BlockingPool,
    postgres_server: PostgresServer,
    mariadb_server: MariaDBServer,
) -> None:
    site_id = 4100 if kind == "postgres" else 4101
    host = _host(kind, postgres_server if kind == "postgres" else mariadb_server)
    admin = make_database_admin(pool, host)
    site_db = host.site_database(f"site_{site_id}", f"site_{site_id}", new_password())
    await admin.create(site_db)
    try:
        await admin.query(site_db, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)", 10, 10)
        await admin.query(site_db, "INSERT INTO notes VALUES (1, 'first'), (2, 'second')", 10, 10)
        site = _site(
            state, site_id, {"public/index.html": "<h1>hello</h1>", "private/data.txt": "data"}
        )
        backups = _backups(state, pool)
        made = await backups.backup(site_id, DatabaseTarget(host, site_db))
        assert made["bytes"] > 0
        listed = await backups.snapshots(site_id)
        assert [s["short_id"] for s in listed] == [made["snapshot"][:8]]
        assert listed[0]["database"] == kind
        assert listed[0]["bytes"] == made["bytes"]
        assert not (state / "backups" / "dumps" / str(site_id)).exists()

        # the bad day: a file deleted, a table dropped, a stray file added
        (site / "public" / "index.html").unlink()
        (site / "public" / "stray.html").write_text("not in the backup")
        await admin.query(site_db, "DROP TABLE notes", 10, 10)

        await backups.restore_files(site_id, made["snapshot"], None)
        await backups.restore_database(
            site_id, made["snapshot"], DatabaseTarget(host, site_db), admin
        )

        assert (site / "public" / "index.html").read_text() == "<h1>hello</h1>"
        assert (site / "private" / "data.txt").read_text() == "data"
        assert not (site / "public" / "stray.html").exists()
        rows = await admin.query(site_db, "SELECT id, body FROM notes ORDER BY id", 10, 10)
        assert rows["rows"] == [[1, "first"], [2, "second"]]
        # the site's own login still works and may change its table (it is the site's)
        await admin.query(site_db, "INSERT INTO notes VALUES (3, 'third')", 10, 10)
    finally:
        await admin.drop(site_db.name, site_db.username)


@pytest_twisted.ensureDeferred
async def test_restoring_one_path_leaves_the_rest_untouched(
    state: Path, pool: BlockingPool
) -> None:
    site = _site(
        state,
        7,
        {
            "public/index.html": "v1",
            "public/img/logo.txt": "logo v1",
            "private/notes.txt": "notes v1",
        },
    )
    backups = _backups(state, pool)
    made = await backups.backup(7, None)
    (site / "public" / "index.html").write_text("v2")
    (site / "public" / "img" / "logo.txt").write_text("logo v2")
    (site / "public" / "img" / "new.txt").write_text("new since")
    (site / "private" / "notes.txt").write_text("notes v2")

    await backups.restore_files(7, made["snapshot"][:8], "public/img")

    assert (site / "public" / "img" / "logo.txt").read_text() == "logo v1"
    assert not (site / "public" / "img" / "new.txt").exists()
    assert (site / "public" / "index.html").read_text() == "v2"
    assert (site / "private" / "notes.txt").read_text() == "notes v2"

    (site / "private" / "notes.txt").unlink()
    await backups.restore_files(7, made["snapshot"], "private/notes.txt")
    assert (site / "private" / "notes.txt").read_text() == "notes v1"
    assert (site / "public" / "index.html").read_text() == "v2"

    with pytest.raises(BackupError) as missing:
        await backups.restore_files(7, made["snapshot"], "public/never.html")
    assert missing.value.status == 404
    # another site's snapshot is not this site's
    with pytest.raises(BackupError) as other:
        await backups.restore_files(8, made["snapshot"], None)
    assert other.value.status == 404
    with pytest.raises(BackupError):
        await backups.restore_database(
            7,
            made["snapshot"],
            DatabaseTarget(
                DatabaseHost("postgres", "127.0.0.1", 1, "x", "y"),
                DatabaseHost("postgres", "127.0.0.1", 1, "x", "y").site_database(
                    "site_7", "site_7", new_password()
                ),
            ),
            make_database_admin(pool, DatabaseHost("postgres", "127.0.0.1", 1, "x", "y")),
        )


@pytest_twisted.ensureDeferred
async def test_the_repository_is_encrypted_with_a_private_password(
    state: Path, pool: BlockingPool
) -> None:
    backups = _backups(state, pool)
    _site(state, 3, {"public/secret.txt": "a sentence no one should read in the repository"})
    made = await backups.backup(3, None)
    password = state / "secrets" / "restic-password"
    assert password.stat().st_mode & 0o777 == 0o600
    for blob in (state / "backups" / "restic").rglob("*"):
        if blob.is_file():
            assert b"no one should read" not in blob.read_bytes()
    listing = subprocess.run(
        ["restic", "snapshots", "--json"],
        env={
            "RESTIC_REPOSITORY": str(state / "backups" / "restic"),
            "RESTIC_PASSWORD_FILE": str(password),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        check=True,
        timeout=60,
    )
    (snapshot,) = json.loads(listing.stdout)
    assert snapshot["id"].startswith(made["snapshot"])
    assert snapshot["hostname"] == "site-3"
    assert "site:3" in snapshot["tags"]


@pytest_twisted.ensureDeferred
async def test_restoring_a_path_never_writes_through_a_link_the_site_made(
    state: Path, pool: BlockingPool
) -> None:
    site = _site(state, 9, {"public/img/logo[1].txt": "logo", "public/img/logo1.txt": "other"})
    outside = state / "outside"
    outside.mkdir()
    backups = _backups(state, pool)
    made = await backups.backup(9, None)
    # the site replaces its directory with a link out of the site, and changes a file
    shutil.rmtree(site / "public" / "img")
    (site / "public" / "img").symlink_to(outside)
    (outside / "logo1.txt").write_text("changed")

    await backups.restore_files(9, made["snapshot"], "public/img/logo[1].txt")

    assert (site / "public" / "img").is_dir() and not (site / "public" / "img").is_symlink()
    assert (site / "public" / "img" / "logo[1].txt").read_text() == "logo"
    # only the path named: not its look-alike, and nothing was written outside the site
    assert not (site / "public" / "img" / "logo1.txt").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["logo1.txt"]
