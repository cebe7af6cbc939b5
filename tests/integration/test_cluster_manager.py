"""
Several nodes through the real manager: a two-node cluster (a dockerd and an orchestrator
per node) driven by a manager, a router and a shell on the host (what `make cluster`
starts). Sites placed on node 1, on node 2 and by the default placement are all served
through the one router; node 2's engine killed takes only node 2's dynamic site, which
serves again once the engine is back, without an administrator.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import pytest_twisted
from cluster_stack import ClusterStack, cluster_stack, wait
from test_browser import PASSWORD
from test_dashboard_ws import connect, next_message, session_cookie
from twisted.internet.threads import deferToThread

from director.cluster.nodes import ClusterError, docker


@pytest.fixture(scope="module")
def stack() -> Iterator[ClusterStack]:
    started = time.monotonic()
    with cluster_stack("dm") as made:
        made.cli("user", "add", "alice", "--student", "--password-stdin", stdin=PASSWORD + "\n")
        yield made
    print(f"test_cluster_manager: module took {time.monotonic() - started:.1f} s")


#: What each of the module's sites serves once made (dy2's page is rewritten and put back).
SERVED = {
    "st1": b"static on node 1",
    "st2": b"static on node 2",
    "dy2": b"dynamic on node 2",
    "dy1": b"dynamic on node 1",
}


def test_pool_lists_both_nodes(stack: ClusterStack) -> None:
    """The manager registered its configured orchestrator (node 1's) beside node 2's."""

    def both_up() -> bool:
        listed = stack.api("GET", "/api/v1/orchestrators")["orchestrators"]
        return sorted(o["name"] for o in listed) == ["node1", "node2"]

    wait(both_up, "both orchestrators in the pool", 30)


def test_sites_on_both_nodes_through_one_router(stack: ClusterStack) -> None:
    """
    Static and dynamic sites on node 1 and node 2 (the admin's choice) and one placed by
    the default (the fewest sites: node 1, which then has fewer), all through one router.
    """
    s = stack
    made = {
        "st1": s.create_site("st1", "static", b"static on node 1", "node1"),
        "st2": s.create_site("st2", "static", b"static on node 2", "node2"),
        "dy2": s.create_site("dy2", "dynamic", b"dynamic on node 2", "node2", ("alice",)),
    }
    # node 1 has 1 site, node 2 has 2: the default placement picks node 1
    made["dy1"] = s.create_site("dy1", "dynamic", b"dynamic on node 1")
    assert {name: site["orchestrator"] for name, site in made.items()} == {
        "st1": "node1",
        "st2": "node2",
        "dy2": "node2",
        "dy1": "node1",
    }
    for name, body in SERVED.items():
        s.wait_served(name, body)
    # files written through the API on a node-2 site show up served
    s.api("PUT", "/api/v1/sites/dy2/files/public/index.html", raw=b"rewritten on node 2")
    s.wait_served("dy2", b"rewritten on node 2", timeout=30)
    s.api("PUT", "/api/v1/sites/dy2/files/public/index.html", raw=b"dynamic on node 2")
    s.wait_served("dy2", b"dynamic on node 2", timeout=30)
    listed = {o["name"]: o for o in s.api("GET", "/api/v1/orchestrators")["orchestrators"]}
    assert (listed["node1"]["sites"], listed["node2"]["sites"]) == (2, 2), listed


@dataclass
class _Browser:
    """What the dashboard websocket helpers need of a Director: its URL."""

    url: str


def _ssh(s: ClusterStack, user: str, command: str) -> subprocess.CompletedProcess[bytes]:
    """The real OpenSSH client, through the host's shell, with alice's password."""
    args = [
        "sshpass", "-p", PASSWORD, "ssh", "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
        "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
        "-p", str(s.ports.shell), f"{user}@127.0.0.1", command,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return subprocess.run(args, capture_output=True, timeout=90, env=env, check=False)


@pytest_twisted.ensureDeferred
async def test_terminal_logs_and_ssh_reach_node2(stack: ClusterStack) -> None:
    """
    A member's browser terminal and log stream (through the host's manager) and an SSH
    session (the host's shell, the real OpenSSH client) reach the container of a site that
    runs on node 2: what SSH writes there is served through the router.
    """
    s = stack
    s.wait_served("dy2", b"dynamic on node 2")  # (made by the test before: fails, not skips)
    browser = _Browser(s.manager_url)
    alice = session_cookie(browser, "alice")
    terminal = await connect(browser, "/ws/sites/dy2/terminal", alice, s.manager_url)
    assert await next_message(terminal) == {"connected": True}
    output = await next_message(terminal, 90)
    terminal.sendMessage(b"echo term-$((40+2)); cat /site/public/index.html\r", isBinary=True)
    deadline = time.monotonic() + 30
    while b"term-42" not in output or b"dynamic on node 2" not in output:
        assert time.monotonic() < deadline, output
        message = await next_message(terminal)
        if isinstance(message, bytes):
            output += message
    terminal.sendClose(1000)
    await terminal.closed

    logs = await connect(browser, "/ws/sites/dy2/logs?tail=5", alice, s.manager_url)
    await deferToThread(s.front, "dy2", 5, "/?from-the-log-test")
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "no log line of the request"
        message = await next_message(logs, 30)
        if isinstance(message, dict) and "from-the-log-test" in message.get("line", ""):
            break
    logs.sendClose(1000)
    await logs.closed

    done = await deferToThread(
        _ssh, s, "alice/dy2", "echo written-over-ssh > /site/public/ssh.txt; echo ok"
    )
    assert (done.returncode, done.stdout) == (0, b"ok\n"), done
    got = await deferToThread(s.front, "dy2", 5, "/ssh.txt")
    assert got == (200, b"written-over-ssh\n"), got


def test_site_database_reached_from_node2(stack: ClusterStack) -> None:
    """
    A PostgreSQL database for a node-2 site, on the host's sites' server (registered by
    `make cluster`): the manager queries it, and the site's container on node 2 reaches it
    at DIRECTOR_DATABASE_URL (the host's hub address).
    """
    s = stack
    s.wait_operation(s.api("POST", "/api/v1/sites/dy2/database", {"type": "postgres"}))
    database = s.api("GET", "/api/v1/sites/dy2/database")
    assert f"@{s.layout.host_address}:{s.ports.postgres}/" in database["url"], database
    for sql in ("create table visits (n int)", "insert into visits values (7)"):
        s.api("POST", "/api/v1/sites/dy2/database/query", {"sql": sql})
    rows = s.api("POST", "/api/v1/sites/dy2/database/query", {"sql": "select n from visits"})
    assert rows["rows"] == [[7]]
    site_id = s.api("GET", "/api/v1/sites/dy2")["id"]
    probe = (
        "import os, socket, urllib.parse as u\n"
        "url = u.urlsplit(os.environ['DIRECTOR_DATABASE_URL'])\n"
        "socket.create_connection((url.hostname, url.port), timeout=5).close()\n"
        "print(os.environ['DIRECTOR_DATABASE_URL'])"
    )

    def reached() -> bool:
        listed = docker(s.layout, 2, "ps", "-q", "--filter", f"label=director.site={site_id}")
        if not listed.split():
            return False
        try:
            out = docker(s.layout, 2, "exec", listed.split()[0], "python3", "-c", probe)
        except ClusterError:
            return False
        return out.strip() == database["url"]

    wait(reached, "node 2's container reaching its database", 60, interval=1)


def test_cluster_status(stack: ClusterStack) -> None:
    """`director cluster status` lists both nodes running, both orchestrators ok, the router."""
    out = stack.cli("cluster", "status", "--cluster-state", str(stack.layout.state_file))
    lines = out.splitlines()
    for n in (1, 2):
        node = next(line for line in lines if line.startswith(f"  node {n} "))
        assert "engine running" in node and "orchestrator running" in node, out
        record = next(line for line in lines if line.startswith(f"  node{n} "))
        assert " active " in record and " 2 site(s)  ok " in record, out
    assert lines[-1].endswith("  ok"), out


def _node2(stack: ClusterStack) -> dict[str, object]:
    """Node 2's orchestrator as the manager's orchestrators API lists it."""
    listed = stack.api("GET", "/api/v1/orchestrators")["orchestrators"]
    found: dict[str, object] = next(o for o in listed if o["name"] == "node2")
    return found


def test_node2_engine_killed(stack: ClusterStack) -> None:
    """
    Node 2's dockerd killed: its dynamic site answers 503 through the router, node 1's sites
    (and node 2's static one, served by node 2's nginx without a container) keep serving
    with no failed request. The manager reports node 2 unavailable (its engine down: the
    orchestrators API, `director cluster status`, its sites' status) and refuses actions on
    its sites with 503 node_unavailable; once the engine is back its site serves again by
    itself and the manager sees node 2 healthy.
    """
    s = stack
    for name, body in SERVED.items():
        s.wait_served(name, body)  # (made by the tests before: fails, not skips)
    failures: list[tuple[str, int]] = []
    polls = {"count": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for name in ("st1", "dy1", "st2"):
                status = s.front(name)[0]
                if status != 200:
                    failures.append((name, status))
            polls["count"] += 1
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        s.kill_engine(2)
        wait(lambda: s.front("dy2")[0] == 503, "node 2's dynamic site answering 503", 60)
        # node 2's orchestrator process still runs, but its engine does not: the manager
        # says node 2 is unavailable (its health check), and so are its sites
        wait(lambda: _node2(s)["engine"] == "down", "the manager to see node 2's engine down", 60)
        listed = _node2(s)
        assert listed["healthy"] is False and listed["problem"], listed
        assert s.api("GET", "/api/v1/sites/dy2")["status"] == "node_unavailable"
        assert s.api("GET", "/api/v1/sites/st2")["status"] == "node_unavailable"
        assert s.api("GET", "/api/v1/sites/dy1")["status"] is None
        refused = s.api("GET", "/api/v1/sites/dy2/files/public/", ok=(503,))
        assert refused["error"] == "node_unavailable", refused
        status = s.cli("cluster", "status", "--cluster-state", str(s.layout.state_file))
        record = next(line for line in status.splitlines() if line.startswith("  node2 "))
        assert "engine down" in record, status
        print(f"node 2's engine down: {record.strip()}")
        started = time.monotonic()
        s.restart_engine(2)
        s.wait_served("dy2", b"dynamic on node 2", timeout=180)
        print(f"node 2's dynamic site back {time.monotonic() - started:.1f} s after its engine")
        # and the manager sees node 2 whole again
        wait(lambda: _node2(s)["healthy"] is True, "the manager to see node 2 healthy", 60)
        assert _node2(s)["engine"] == "ok"
        assert s.api("GET", "/api/v1/sites/dy2")["status"] is None
        assert "index.html" in str(s.api("GET", "/api/v1/sites/dy2/files/public/"))
    finally:
        stop.set()
        poller.join()
    assert polls["count"] > 10
    assert failures == [], failures
