"""
The terminal's database shell on the all-in-one daemon, with real PostgreSQL and MariaDB:
over the browser websocket (`?shell=database`) a member gets psql or mysql connected to the
site's database and `SELECT 40+2;` answers 42; the password is on no command line in the
container; a site without a database is refused (409 no_database) and an unknown shell
(400 bad_shell) before anything opens.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import pytest_twisted
from services import MariaDBServer, PostgresServer
from test_browser import Director, _wait_operation
from test_dashboard_ws import Client, connect, director, next_message, session_cookie

__all__ = ["director"]  # the daemon fixture, shared with the websocket tests

#: Counts, from inside the container, the command lines holding the password (read from
#: the environment, so it is on none of this one's) and the running database clients.
LEAK_CHECK = (
    "python3 -c \"import os, glob; pw = os.environ['DIRECTOR_DATABASE_PASSWORD'].encode(); "
    "lines = [open(p, 'rb').read() for p in glob.glob('/proc/[0-9]*/cmdline')]; "
    "print('leaks=%d clients=%d' % (sum(pw in c for c in lines), "
    "sum(c.split(b'\\\\0')[0].endswith((b'psql', b'mysql')) for c in lines)))\"\r"
)


def add_host(d: Director, kind: str, server: PostgresServer | MariaDBServer) -> int:
    code, body = d.api(
        "PUT",
        "/api/v1/database-hosts",
        {
            "kind": kind,
            "admin_host": server.host,
            "admin_port": server.port,
            "admin_user": server.admin_user,
            "admin_password": server.admin_password,
            "container_host": server.bridge_host or server.host,
            "container_port": server.port,
        },
    )
    assert code == 200, body
    return int(body["id"])


def site_with_database(d: Director, name: str, kind: str, host_id: int) -> None:
    code, body = d.api("POST", "/api/v1/sites", {"name": name, "users": ["alice"]})
    assert code == 202, body
    assert _wait_operation(d, body["operation"]["id"])["status"] == "succeeded"
    code, body = d.api("POST", f"/api/v1/sites/{name}/database", {"type": kind, "host_id": host_id})
    assert code == 202, body
    assert _wait_operation(d, body["operation"]["id"])["status"] == "succeeded"


def remove_site(d: Director, name: str) -> None:
    code, body = d.api("DELETE", f"/api/v1/sites/{name}")
    if code == 202:
        _wait_operation(d, body["operation"]["id"])


async def read_until(client: Client, wanted: bytes, output: bytes = b"") -> bytes:
    deadline = time.monotonic() + 60
    while wanted not in output:
        assert time.monotonic() < deadline, output
        message = await next_message(client, 60)
        assert not isinstance(message, dict) or "error" not in message, message
        if isinstance(message, bytes):
            output += message
    return output


def plain_get(d: Director, path: str, cookie: str) -> tuple[int, Any]:
    """The route's answer before any upgrade (what a refused handshake gets)."""
    request = urllib.request.Request(
        d.url + path, headers={"Cookie": f"director_session={cookie}", "Origin": d.url}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
@pytest_twisted.ensureDeferred
async def test_database_shell_answers_42(
    director: Director,
    postgres_server: PostgresServer,
    mariadb_server: MariaDBServer,
    kind: str,
) -> None:
    server = postgres_server if kind == "postgres" else mariadb_server
    name = f"dbshell-{'pg' if kind == 'postgres' else 'my'}"
    site_with_database(director, name, kind, add_host(director, kind, server))
    try:
        alice = session_cookie(director, "alice")
        shell = await connect(
            director, f"/ws/sites/{name}/terminal?shell=database", alice, director.url
        )
        assert await next_message(shell) == {"connected": True}
        prompt = b"=>" if kind == "postgres" else b"]>"  # site_x=> and MariaDB [site_x]>
        banner = await read_until(shell, prompt)
        shell.sendMessage(b"SELECT 40+2;\r", isBinary=True)
        answer = await read_until(shell, b"42", b"")
        assert b"42" in answer.split(b"SELECT 40+2;", 1)[-1], (banner, answer)

        login = await connect(director, f"/ws/sites/{name}/terminal", alice, director.url)
        assert await next_message(login) == {"connected": True}
        await read_until(login, b"$")
        login.sendMessage(LEAK_CHECK.encode(), isBinary=True)
        await read_until(login, b"leaks=0 clients=1")

        shell.sendMessage(b"\\q\r" if kind == "postgres" else b"exit\r", isBinary=True)
        while not isinstance(message := await next_message(shell, 30), dict):
            pass
        assert message == {"exit": 0}
        for client in (shell, login):
            client.sendClose(1000)
            await client.closed
    finally:
        remove_site(director, name)


@pytest_twisted.ensureDeferred
async def test_database_shell_needs_a_database(director: Director) -> None:
    """relay-site has no database: 409 no_database, and nothing opens; bad shells are 400."""
    alice = session_cookie(director, "alice")
    path = "/ws/sites/relay-site/terminal"
    code, body = plain_get(director, path + "?shell=database", alice)
    assert (code, body["error"]) == (409, "no_database")
    code, body = plain_get(director, path + "?shell=bash", alice)
    assert (code, body["error"]) == (400, "bad_shell")
    with pytest.raises(ConnectionError):
        await connect(director, path + "?shell=database", alice, director.url)
    bob = session_cookie(director, "bob")  # not a member: the usual 4404, nothing more
    client = await connect(director, path + "?shell=database", bob, director.url)
    assert await client.closed == 4404
