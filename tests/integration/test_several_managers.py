"""
Two real manager processes on one PostgreSQL and one Redis, in front of one real orchestrator
and router (tests/integration/manager_pair.py): a site made through A is served and its
operation ran once; a dashboard websocket on B sees the progress of an operation started on
A; a session from signing in on A works on B; wrong passwords count across both; the
reconcile runs on one manager at a time; kill -9 of the manager running an operation (the
orchestrator held with SIGSTOP) and the other finishes it once the lease runs out, and takes
over the reconcile.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from manager_pair import (
    SITES,
    ManagerPair,
    Process,
    admin_password,
    discard,
    start_pair,
    wait,
)
from services import PostgresServer, RedisServer

LEASE = 3.0


@pytest.fixture(scope="module")
def pair(
    postgres_server: PostgresServer, redis_server: RedisServer, docker_swarm: Any
) -> Iterator[ManagerPair]:
    p = start_pair(
        postgres_server,
        redis_server,
        f"manager.operation_lease={LEASE}",
        f"manager.leader_lease={LEASE}",
        "manager.reconcile_interval=1.0",
        "manager.write_burst=100000.0",
        prefix="director-managers-",
    )
    try:
        yield p
    finally:
        discard(p, postgres_server)


class EventSocket:
    """A blocking websocket client for /ws/events, as the dashboard's page opens it."""

    def __init__(
        self, port: int, path: str, cookie: str, origin: str, address: str = "127.0.0.1"
    ) -> None:
        self.sock = socket.create_connection((address, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {address}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
                f"Cookie: director_session={cookie}\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the manager closed the websocket")
        return chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def message(self, timeout: float) -> Any:
        """The next JSON message (answering pings), within C{timeout} seconds."""
        deadline = time.monotonic() + timeout
        payload = b""
        while True:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            first, second = self._take(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._take(2), "big")
            elif length == 127:
                length = int.from_bytes(self._take(8), "big")
            data = self._take(length)
            opcode = first & 0x0F
            if opcode == 9:  # ping: a masked pong with the same data
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + mask + masked)
                continue
            if opcode == 8:
                raise ConnectionError(f"closed: {data!r}")
            payload += data
            if first & 0x80:
                return json.loads(payload)

    def operation_until_ended(
        self, op_id: int, timeout: float, details: Any = lambda: ""
    ) -> list[dict[str, Any]]:
        """Every state of operation C{op_id} this socket is sent, up to its end."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not seen or seen[-1]["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, (seen, details())
            try:
                message = self.message(timeout=timeout)
            except (OSError, ValueError) as e:
                raise AssertionError(f"{e}; seen {seen}\n{details()}") from None
            if message.get("type") == "operation" and message["operation"]["id"] == op_id:
                seen.append(message["operation"])
        return seen

    def send(self, message: Any) -> None:
        """One masked text frame, as a browser sends it."""
        data = json.dumps(message).encode()
        assert len(data) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes([0x81, 0x80 | len(data)]) + mask + masked)

    def close(self) -> None:
        self.sock.close()


def actions_run(pair: ManagerPair, op_id: int) -> list[tuple[str, str]]:
    """Each (action, worker) the managers' logs say they ran for operation C{op_id}."""
    found = []
    for manager in (pair.a, pair.b):
        for match in re.finditer(rf"operation {op_id} \(\w+\): (\w+) by (\S+)", manager.log()):
            found.append((match.group(1), match.group(2)))
    return found


def test_one_operation_runs_once_and_b_shows_its_progress(pair: ManagerPair) -> None:
    """
    A session from signing in on A opens B's event socket; a site created through A: its
    operation's progress reaches the browser on B as it happens, each action ran once (on
    one manager, no retry), and the site is served through the router.
    """
    status, cookie = pair.sign_in(pair.a, "admin", admin_password(pair))
    assert status == 303 and cookie, status
    socket_b = EventSocket(pair.b.port, "/ws/events", cookie, pair.config.manager.url)
    orchestrator = pair.processes["orchestrator"]
    # The orchestrator held while B's page subscribes, so the progress is seen as it happens.
    orchestrator.send(signal.SIGSTOP)
    try:
        try:
            created = pair.api(pair.a, "POST", "/api/v1/sites", {"name": "twin", "type": "static"})
            socket_b.send({"subscribe": ["twin"]})
            answer = socket_b.message(timeout=30)
            assert answer == {"type": "subscribed", "site": "twin"}, answer
        finally:
            orchestrator.send(signal.SIGCONT)
        op_id = created["operation"]["id"]
        seen = socket_b.operation_until_ended(op_id, 120, pair.logs)
    finally:
        socket_b.close()
    assert seen[-1]["status"] == "succeeded", seen
    # Live progress: B's browser saw the operation running, action by action, before the end.
    assert any(op["status"] == "running" for op in seen[:-1]), seen
    steps = [[a["status"] for a in op["actions"]] for op in seen]
    assert ["running", "pending"] in steps or ["succeeded", "running"] in steps, steps
    ran = actions_run(pair, op_id)
    assert sorted(name for name, _ in ran) == ["apply_orchestrator", "apply_router"], ran
    assert len({worker for _, worker in ran}) == 1, ran
    rows = pair.sql("SELECT attempts, status FROM operations WHERE id = %s", op_id)
    assert rows == [(0, "succeeded")], rows
    assert pair.sql("SELECT count(*) FROM operations WHERE site_name = 'twin'") == [(1,)]
    pair.api(pair.b, "PUT", "/api/v1/sites/twin/files/public/index.html", raw=b"twin site")
    wait(lambda: pair.front(f"twin.{SITES}") == (200, b"twin site"), "twin served", 30)
    assert pair.api(pair.b, "GET", "/api/v1/sites/twin")["name"] == "twin"


def test_a_session_from_one_manager_works_on_the_other(pair: ManagerPair) -> None:
    """Sessions live in the shared database: signed in on A, recognised by B."""
    import urllib.error
    import urllib.request

    status, cookie = pair.sign_in(pair.a, "admin", admin_password(pair))
    assert status == 303 and cookie

    def sites(manager: Process, cookie: str | None) -> int:
        headers = {"Cookie": f"director_session={cookie}"} if cookie else {}
        request = urllib.request.Request(pair.url(manager) + "/api/v1/sites", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    assert sites(pair.b, cookie) == 200
    assert sites(pair.b, None) == 401
    assert sites(pair.b, "not-a-session") == 401


def test_wrong_passwords_count_across_managers(pair: ManagerPair) -> None:
    """
    Ten wrong passwords for one account from one address, five on each manager: the
    right one is then refused (429) on both. Each manager alone saw only five.
    """
    password = admin_password(pair)
    subprocess_user(pair, "carol", "right-password-1")
    for i in range(10):
        status, _ = pair.sign_in((pair.a, pair.b)[i % 2], "carol", f"wrong-{i}")
        assert status == 401, (i, status)
    assert pair.sign_in(pair.a, "carol", "right-password-1")[0] == 429
    assert pair.sign_in(pair.b, "carol", "right-password-1")[0] == 429
    assert pair.sign_in(pair.b, "admin", password)[0] == 303, "another account is not blocked"


def subprocess_user(pair: ManagerPair, name: str, password: str) -> None:
    import subprocess

    from manager_pair import BIN

    subprocess.run(
        [str(BIN / "director"), "user", "add", name, "--student", "--password-stdin",
         "--config", str(pair.a.config_path)],
        input=password + "\n", check=True, capture_output=True, text=True,
    )  # fmt: skip


def passes(manager: Process) -> int:
    return manager.log().count("reconcile: a pass by")


def test_the_reconcile_runs_on_one_manager_at_a_time(pair: ManagerPair) -> None:
    """
    Both managers try a pass every second; only the leader's log shows passes, and a drift
    (the site's host link removed by hand) is repaired by one repair operation, the leader's.
    """
    before = {m.name: passes(m) for m in (pair.a, pair.b)}
    time.sleep(5)
    grew = {m.name: passes(m) - before[m.name] for m in (pair.a, pair.b)}
    leaders = [name for name, n in grew.items() if n > 0]
    assert len(leaders) == 1, (grew, pair.logs())
    assert grew[leaders[0]] >= 3, grew
    leads = [m.name for m in (pair.a, pair.b) if "leads the reconcile now" in m.log()]
    assert leads == leaders, leads
    # A drift: the static site's host link in the orchestrator's nginx removed by hand; one
    # repair, by the leader, puts it back.
    site_id = pair.api(pair.b, "GET", "/api/v1/sites/twin")["id"]
    links = [p for p in (pair.base / "var").rglob("twin") if p.is_symlink()]
    assert len(links) == 1, links
    links[0].unlink()
    wait(links[0].is_symlink, "the host link back", 60, pair.logs)
    wait(lambda: pair.front(f"twin.{SITES}") == (200, b"twin site"), "twin served", 30)
    wait(lambda: pair.api(pair.a, "GET", "/api/v1/sites/twin")["operation"] is None, "idle", 60)
    time.sleep(3)  # more passes: a repaired site is not repaired again
    repairs = pair.sql(
        "SELECT claimed_by FROM operations WHERE site_id = %s AND type = 'repair'", site_id
    )
    assert len(repairs) == 1, repairs
    lead = pair.a if leaders == ["manager-a"] else pair.b
    assert "twin drifted; repairing it" in lead.log()
    other = pair.b if lead is pair.a else pair.a
    assert "drifted; repairing it" not in other.log()


def holder(pair: ManagerPair, op_id: int) -> str | None:
    rows = pair.sql("SELECT claimed_by, status FROM operations WHERE id = %s", op_id)
    return rows[0][0] if rows and rows[0][1] == "running" else None


def test_kill_9_mid_operation_the_other_manager_finishes_it(pair: ManagerPair) -> None:
    """
    The orchestrator held (SIGSTOP) so a creation stays in its first action; the manager
    running it killed with SIGKILL. The other manager takes the operation once the lease
    runs out, runs the interrupted action again and the rest, and the site is served; it
    also leads the reconcile from then on.
    """
    leader = pair.a if "leads the reconcile now" in pair.a.log() else pair.b
    orchestrator = pair.processes["orchestrator"]
    orchestrator.send(signal.SIGSTOP)
    try:
        created = pair.api(leader, "POST", "/api/v1/sites", {"name": "lasting", "type": "static"})
        op_id = created["operation"]["id"]
        wait(lambda: holder(pair, op_id) is not None, "the operation claimed", 30, pair.logs)
        claimed = holder(pair, op_id)
        assert claimed is not None
        victim = pair.a if claimed.startswith(pair.identity(pair.a) + "/") else pair.b
        survivor = pair.b if victim is pair.a else pair.a
        assert claimed.startswith(pair.identity(victim) + "/"), claimed
        wait(
            lambda: ("apply_orchestrator", claimed) in actions_run(pair, op_id),
            "the first action started",
            30,
            pair.logs,
        )
        victim.send(signal.SIGKILL)
        assert victim.popen is not None
        victim.popen.wait(10)
        killed_at = time.monotonic()
    finally:
        orchestrator.send(signal.SIGCONT)
    result = pair.wait_operation(survivor, op_id, timeout=120)
    took = time.monotonic() - killed_at
    assert result["status"] == "succeeded"
    ran = actions_run(pair, op_id)
    mine = [name for name, worker in ran if worker.startswith(pair.identity(survivor) + "/")]
    assert mine == ["apply_orchestrator", "apply_router"], ran
    assert [name for name, worker in ran if worker == claimed] == ["apply_orchestrator"], ran
    assert took < 60, f"the survivor took {took:.1f} s"
    pair.api(survivor, "PUT", "/api/v1/sites/lasting/files/public/index.html", raw=b"lasting")
    wait(lambda: pair.front(f"lasting.{SITES}") == (200, b"lasting"), "lasting served", 30)
    if victim is leader:
        wait(
            lambda: "leads the reconcile now" in survivor.log(),
            "the survivor leading the reconcile",
            LEASE * 4,
            pair.logs,
        )
    before = passes(survivor)
    time.sleep(3)
    assert passes(survivor) > before, "the survivor reconciles"
