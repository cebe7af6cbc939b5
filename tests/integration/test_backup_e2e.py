"""
Backups end to end, through the real manager, orchestrator and router (separate twistd
processes) with real restic, PostgreSQL and MariaDB: a site's deleted file and dropped table
come back through the API's restore; then the whole installation is restored with
`director restore --from` onto an empty state directory, and its users, sites (served again
through the router) and databases are back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from services import MariaDBServer, PostgresServer, Services, free_port
from sites_network import free_subnet, network_name, remove_network
from test_daemon import stop_nginx
from test_manager_e2e import BIN, SITES, Stack, wait

from director.common.config import load_config


def _director(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(BIN / "director"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def _add_host(config: Path, kind: str, server: Any) -> None:
    _director(
        "database-host",
        "add",
        "--kind",
        kind,
        "--admin-host",
        "127.0.0.1",
        "--admin-port",
        str(server.port),
        "--admin-user",
        server.admin_user,
        "--password-stdin",
        "--container-host",
        "172.17.0.1",
        "--container-port",
        str(server.port),
        "--config",
        str(config),
        stdin=server.admin_password + "\n",
    )


@pytest.fixture(scope="module")
def installation(
    services: Services,
    postgres_server: PostgresServer,
    mariadb_server: MariaDBServer,
    docker_swarm: Any,
) -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="director-backup-e2e-", dir="/tmp"))
    base.chmod(0o755)
    ports = {name: free_port() for name in ("manager", "orchestrator", "router")}
    nginx_port = free_port()
    network, subnet = network_name() + "-bk", free_subnet()
    settings = [
        *(f"{c}.port={p}" for c, p in ports.items()),
        *(f'{c}.url="http://127.0.0.1:{p}"' for c, p in ports.items()),
        f"orchestrator.nginx_port={nginx_port}",
        f'router.upstreams="127.0.0.1:{nginx_port}"',
        f"router.http_port={free_port()}",
        f"router.https_port={free_port()}",
        'router.public_host="127.0.0.1"',
        'shell.host="127.0.0.1"',
        f"shell.port={free_port()}",
        "manager.bcrypt_rounds=4",
        "manager.operation_lease=3.0",
        "manager.write_burst=100000.0",
        "orchestrator.bundled_databases=false",
        f'orchestrator.sites_network="{network}"',
        f'orchestrator.sites_subnet="{subnet}"',
        "backup.enabled=false",  # on demand only: the test says when
    ]
    config_path = base / "director.toml"
    args = ["init", "--config", str(config_path), "--state-dir", str(base / "var")]
    for setting in settings:
        args += ["--set", setting]
    _director(*args)
    (base / "var").chmod(0o755)
    _add_host(config_path, "postgres", postgres_server)
    _add_host(config_path, "mysql", mariadb_server)
    token = _director("token", "create", "admin", "--config", str(config_path)).strip()
    stack = Stack(base, config_path, load_config(config_path), token, None, postgres_server)
    stacks = [stack]
    stack.stacks = stacks  # the restored one joins it
    try:
        for component in ("orchestrator", "router", "manager"):
            stack.start(component)
        yield stack
    finally:
        for s in stacks:
            for component in list(s.processes):
                s.stop(component)
            stop_nginx(s.config)
        remove_network(network, subnet)
        shutil.rmtree(base, ignore_errors=True)


def _query(s: Stack, site: str, sql: str) -> Any:
    return s.api("POST", f"/api/v1/sites/{site}/database/query", {"sql": sql})


def _backups(s: Stack, site: str) -> dict[str, Any]:
    answer: dict[str, Any] = s.api("GET", f"/api/v1/sites/{site}/backups", ok=(200, 503))
    assert "snapshots" in answer, (answer, s.log_tail())
    return answer


def _back_up_site(s: Stack, site: str) -> dict[str, Any]:
    run = s.api("POST", f"/api/v1/sites/{site}/backups", {})["backup"]
    found: dict[str, Any] = {}

    def finished() -> bool:
        runs = _backups(s, site)["runs"]
        found.update(next(r for r in runs if r["id"] == run["id"]))
        return found["status"] != "running"

    wait(finished, f"the backup of {site}", 120, s.log_tail)
    assert found["status"] == "succeeded", (found, s.log_tail())
    return found


def test_backup_and_restore_through_the_api(installation: Stack) -> None:
    s = installation
    s.api("POST", "/api/v1/users", {"username": "alice", "role": "student"})
    for name, kind in (("bk-pg", "postgres"), ("bk-my", "mysql")):
        s.wait_operation(
            s.api("POST", "/api/v1/sites", {"name": name, "type": "static", "users": ["alice"]})
        )
        s.api("PUT", f"/api/v1/sites/{name}/files/public/index.html", raw=f"{name} home".encode())
        s.api("PUT", f"/api/v1/sites/{name}/files/public/about.html", raw=b"about v1")
        s.wait_operation(s.api("POST", f"/api/v1/sites/{name}/database", {"type": kind}))
        _query(s, name, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        _query(s, name, "INSERT INTO notes VALUES (1, 'kept')")
        assert s.front(f"{name}.{SITES}") == (200, f"{name} home".encode())

        made = _back_up_site(s, name)
        snapshots = _backups(s, name)["snapshots"]
        assert [x["short_id"] for x in snapshots] == [made["snapshot"][:8]]
        assert snapshots[0]["bytes"] > 0 and snapshots[0]["database"] == kind

        # the bad day
        s.api("DELETE", f"/api/v1/sites/{name}/files/public/index.html")
        s.api("PUT", f"/api/v1/sites/{name}/files/public/about.html", raw=b"about v2")
        _query(s, name, "DROP TABLE notes")
        assert s.front(f"{name}.{SITES}")[0] in (403, 404)

        # one path first: the rest stays as it is now
        s.wait_operation(
            s.api(
                "POST",
                f"/api/v1/sites/{name}/backups/{made['snapshot']}/restore",
                {"path": "public/index.html", "database": False},
            )
        )
        assert s.front(f"{name}.{SITES}") == (200, f"{name} home".encode())
        assert s.front(f"{name}.{SITES}", "/about.html") == (200, b"about v2")
        # the table is still gone
        s.api(
            "POST",
            f"/api/v1/sites/{name}/database/query",
            {"sql": "SELECT id FROM notes"},
            ok=(422,),
        )
        # then the database alone, from the short id
        op = s.wait_operation(
            s.api(
                "POST",
                f"/api/v1/sites/{name}/backups/{made['snapshot'][:8]}/restore",
                {"files": False},
            )
        )
        assert [a["status"] for a in op["actions"]] == ["succeeded"] * 5
        assert _query(s, name, "SELECT id, body FROM notes")["rows"] == [[1, "kept"]]
        assert s.front(f"{name}.{SITES}", "/about.html") == (200, b"about v2")

    # a member sees their site's backups; a stranger's restore changes nothing
    alice = _director("token", "create", "alice", "--config", str(s.config_path)).strip()
    listing = urllib.request.Request(
        s.config.manager.url + "/api/v1/sites/bk-pg/backups",
        headers={"Authorization": f"Bearer {alice}"},
    )
    with urllib.request.urlopen(listing, timeout=30) as response:
        assert len(json.loads(response.read())["snapshots"]) == 1


def test_whole_installation_restore_onto_an_empty_state_directory(
    installation: Stack, postgres_server: PostgresServer, mariadb_server: MariaDBServer
) -> None:
    s = installation
    if "bk-pg" not in json.dumps(s.api("GET", "/api/v1/sites?all=1")):
        test_backup_and_restore_through_the_api(s)
    # everything, through the CLI
    out = subprocess.run(
        [str(BIN / "director"), "backup", "now", "--config", str(s.config_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"DIRECTOR_TOKEN": s.token, "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0 and "backup succeeded" in out.stdout, (out, s.log_tail())
    listed = subprocess.run(
        [str(BIN / "director"), "backup", "list", "--config", str(s.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DIRECTOR_TOKEN": s.token, "PATH": "/usr/bin:/bin"},
    ).stdout
    assert "bk-pg" in listed and "manager" in listed, listed
    ids = {x["name"]: x["id"] for x in s.api("GET", "/api/v1/sites?all=1")["sites"]}

    # the machine is lost: daemons, nginx, state, and the sites' databases
    for component in list(s.processes):
        s.stop(component)
    stop_nginx(s.config)
    old_state = s.config.director.state_dir
    repository = s.base / "offsite" / "restic"
    password = s.base / "offsite" / "restic-password"
    repository.parent.mkdir()
    shutil.copytree(old_state / "backups" / "restic", repository)
    shutil.copy2(old_state / "secrets" / "restic-password", password)
    shutil.rmtree(old_state)
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE site_{ids['bk-pg']} WITH (FORCE)")
    my = pymysql.connect(
        host=mariadb_server.host,
        port=mariadb_server.port,
        user=mariadb_server.admin_user,
        password=mariadb_server.admin_password,
    )
    with my.cursor() as cur:
        cur.execute(f"DROP DATABASE site_{ids['bk-my']}")
    my.close()

    # a fresh machine: `director restore --from`, then Director starts
    new_base = s.base / "new"
    new_config = new_base / "director.toml"
    out = subprocess.run(
        [
            str(BIN / "director"),
            "restore",
            "--from",
            str(repository),
            "--password-file",
            str(password),
            "--config",
            str(new_config),
            "--state-dir",
            str(new_base / "var"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "2 site(s) will be restored" in out.stdout, out.stdout
    new_base.chmod(0o755)
    # step 4 of docs/operations.md: `make run` runs `director init`, which keeps all of it
    init = _director("init", "--config", str(new_config), "--state-dir", str(new_base / "var"))
    assert "keeping it" in init and "created the administrator" not in init, init
    restored = Stack(new_base, new_config, load_config(new_config), s.token, None, postgres_server)
    s.stacks.append(restored)
    assert restored.config.director.state_dir == (new_base / "var").resolve()
    assert restored.config.backup.repository == str(repository)
    for component in ("orchestrator", "router", "manager"):
        restored.start(component)

    # users are back (the old token works: it is in the restored database)
    users = [u["username"] for u in restored.api("GET", "/api/v1/users")["users"]]
    assert "alice" in users and "admin" in users
    # sites are served again, with their files and databases
    for name in ("bk-pg", "bk-my"):
        wait(
            lambda name=name: restored.front(f"{name}.{SITES}") == (200, f"{name} home".encode()),
            f"{name} served again",
            180,
            restored.log_tail,
        )
        assert restored.front(f"{name}.{SITES}", "/about.html") == (200, b"about v2")

        def rows(name: str = name) -> bool:
            try:
                answer = restored.api(
                    "POST",
                    f"/api/v1/sites/{name}/database/query",
                    {"sql": "SELECT id, body FROM notes"},
                    ok=(200, 409, 422),
                )
            except AssertionError:
                return False
            return bool(answer.get("rows") == [[1, "kept"]])

        wait(rows, f"{name}'s database back", 120, restored.log_tail)
    assert not (restored.config.director.state_dir / "backups" / "restore-pending.json").exists()
