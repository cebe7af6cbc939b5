"""
Several nodes through the real front door: a two-node cluster (a dockerd and an orchestrator
per node) driven by two managers, two routers and a shell on the host (what `make cluster`
starts). Sites placed on node 1, on node 2 and by the default placement are all served
through the routers; node 2's engine killed takes only node 2's dynamic site, which serves
again once the engine is back, without an administrator. The dashboard answers through
both routers, a site made through manager a shows its progress live on manager b, and
kill -9 of a manager mid-operation, of a router's daemon and of node 2 loses no operation,
no file and no visitor of node 1's sites.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from cluster_stack import ClusterStack, cluster_stack, wait
from request_loop import RequestLoop
from test_browser import PASSWORD
from test_dashboard_ws import connect, next_message, session_cookie
from test_several_managers import EventSocket
from twisted.internet.threads import deferToThread

from director.cluster.nodes import ClusterError, docker


@pytest.fixture(scope="module")
def stack() -> Iterator[ClusterStack]:
    started = time.monotonic()
    # short leases: a killed manager's operation is taken over within seconds
    settings = ("manager.operation_lease=10", "manager.leader_lease=10",
                "manager.write_burst=100000.0")  # fmt: skip
    with cluster_stack("dm", settings) as made:
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
    """
    `director cluster status` lists both nodes running, both orchestrators ok, both
    managers and both routers up.
    """
    out = stack.cli("cluster", "status", "--cluster-state", str(stack.layout.state_file))
    lines = out.splitlines()
    for n in (1, 2):
        node = next(line for line in lines if line.startswith(f"  node {n} "))
        assert "engine running" in node and "orchestrator running" in node, out
        record = next(line for line in lines if line.startswith(f"  node{n} "))
        assert " active " in record and " 2 site(s)  ok " in record, out
    assert _front_door(stack, out) == ["up"] * 4, out


def _front_door(s: ClusterStack, status: str) -> list[str]:
    """What `director cluster status` says of managers a and b and routers a and b."""
    lines = status.splitlines()
    urls = [s.ports.manager_url(0), s.ports.manager_url(1)]
    urls += [s.ports.router_url(0), s.ports.router_url(1)]
    return [
        next(line for line in lines if f" {url} " in line).split(url)[1].split()[0] for url in urls
    ]


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


@dataclass
class ApiLoop:
    """
    A stream of API calls through both managers, in turn: the sites listed, and every
    fourth call a static site created (on node 1 and node 2 in turn). Calls to a manager
    in C{down} (being killed) may fail; any other failure is counted, as is every operation
    started (its id) and every create whose answer never came (its manager was killed).
    """

    stack: ClusterStack
    down: set[int] = field(default_factory=set)
    started: dict[int, str] = field(default_factory=dict)
    unanswered: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failures: list[tuple[int, str, int, bytes]] = field(default_factory=list)
    calls: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % 4:
                self.call(n % 2, "GET", "/api/v1/sites")
            else:
                k = n // 4  # creates: through a and b in turn, on node 1 twice, node 2 twice
                name = f"ld{k}"
                body = {"name": name, "type": "static", "orchestrator": f"node{k // 2 % 2 + 1}"}
                status, content = self.call(k % 2, "POST", "/api/v1/sites", body)
                if status == 202:
                    self.started[json.loads(content)["operation"]["id"]] = name
                elif status == 0 and b"refused" not in content:
                    self.unanswered.append(name)  # in flight when its manager was killed
            time.sleep(0.25)

    def call(self, i: int, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        down = i in self.down
        status, content = self.stack.api_on(i, method, path, body)
        self.calls += 1
        if status in (409, 503) and _error(content) in NODE_DOWN:
            self.refused.append(path)  # a node that is down: said clearly, nothing started
        elif status not in (200, 202) and not down and i not in self.down:
            self.failures.append((i, method, status, content[:300]))
        return status, content


#: the errors of a call that needs a node that is down (nothing was started)
NODE_DOWN = ("node_unavailable", "orchestrator_unavailable")


def _error(content: bytes) -> str:
    try:
        return str(json.loads(content).get("error"))
    except (ValueError, AttributeError):
        return ""


def _wait_op(s: ClusterStack, op_id: int, timeout: float, on: int = 1) -> dict[str, Any]:
    """Operation C{op_id} once ended, asked of manager C{on}; it must have succeeded."""
    found: dict[str, Any] = {}

    def ended() -> bool:
        status, content = s.api_on(on, "GET", f"/api/v1/operations/{op_id}")
        if status == 200:
            found.update(json.loads(content))
        return found.get("status") in ("succeeded", "failed")

    wait(ended, f"operation {op_id} to end", timeout, s.log_tail, interval=0.2)
    assert found["status"] == "succeeded", (found, s.log_tail())
    return found


def _op_running(s: ClusterStack, op_id: int) -> bool:
    status, content = s.api_on(1, "GET", f"/api/v1/operations/{op_id}")
    return status == 200 and json.loads(content)["status"] == "running"


def test_dashboard_and_sites_through_both_routers(stack: ClusterStack) -> None:
    """
    The dashboard answers through either router by its host name; a site created through
    manager a is served by both routers, and a browser's websocket on manager b sees its
    operation's progress as it happens (node 1's orchestrator held while b's page
    subscribes).
    """
    s = stack
    for router in (0, 1):
        status, page = s.front_host(s.config.manager.dashboard_host, path="/login", router=router)
        assert status == 200 and b'name="csrf"' in page, (router, status, page[:300])
    cookie = session_cookie(_Browser(s.ports.manager_url(1)), "alice")
    socket_b = EventSocket(
        s.ports.manager, "/ws/events", cookie, s.config.manager.url, s.ports.addresses[1]
    )
    orchestrator = s.pid("orchestrator-1")
    try:
        os.kill(orchestrator, signal.SIGSTOP)
        try:
            request = {"name": "fd1", "type": "static", "orchestrator": "node1", "users": ["alice"]}
            op_id = s.api("POST", "/api/v1/sites", request)["operation"]["id"]
            socket_b.send({"subscribe": ["fd1"]})
            answer = socket_b.message(timeout=30)
            assert answer == {"type": "subscribed", "site": "fd1"}, answer
        finally:
            os.kill(orchestrator, signal.SIGCONT)
        seen = socket_b.operation_until_ended(op_id, 120, s.log_tail)
    finally:
        socket_b.close()
    assert seen[-1]["status"] == "succeeded", seen
    assert any(op["status"] == "running" for op in seen[:-1]), seen
    s.api("PUT", "/api/v1/sites/fd1/files/public/index.html", raw=b"front door")
    for router in (0, 1):
        wait(lambda r=router: s.front("fd1", router=r) == (200, b"front door"),
             f"fd1 through router {router}", 60, s.log_tail)  # fmt: skip


def test_kill_9_loses_no_operation_no_data_no_visitor(stack: ClusterStack) -> None:
    """
    Under a stream of API calls through both managers and visitors of node 1's static sites
    through both routers, kill -9 (by pid) in turn: manager a in the middle of an operation
    (b finishes it once its lease runs out), router b's twistd (its nginx keeps serving;
    the change made meanwhile reaches it once it is back), and node 2 as in a power cut
    (its orchestrator, nginx and dockerd; its operations wait until it is back). Every
    operation started succeeds, the files written before are all there, the visitors see no
    failed request, and calls to a manager that is not the one killed never fail.
    """
    s = stack
    s.create_site("fd2", "dynamic", b"turned dynamic", "node1")  # static on node 1 so far
    s.wait_operation(s.api("PATCH", "/api/v1/sites/fd2", {"type": "static"}))
    s.api("PUT", "/api/v1/sites/st2/files/public/kept.txt", raw=b"kept on node 2")
    s.api("PUT", "/api/v1/sites/fd1/files/public/kept.txt", raw=b"kept on node 1")
    for name, body in (("fd1", b"front door"), ("st1", SERVED["st1"])):
        for router in (0, 1):
            wait(lambda n=name, b=body, r=router: s.front(n, router=r) == (200, b),
                 f"{name} through router {router}", 60, s.log_tail)  # fmt: skip
    visitors = [
        RequestLoop(s.ports.http, f"{name}.{s.sites_domain}", body, interval=0.05,
                    address=s.ports.addresses[router])
        for name, body in (("fd1", b"front door"), ("st1", SERVED["st1"]))
        for router in (0, 1)
    ]  # fmt: skip
    calls = ApiLoop(s)
    caller = threading.Thread(target=calls.run, daemon=True)
    for loop in visitors:
        loop.start()
    caller.start()
    started = time.monotonic()
    timeline: list[str] = []

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:.1f} s {what}")

    try:
        time.sleep(3)
        # 1. manager a killed in the middle of an operation (node 1's orchestrator held for
        # a moment, so that the operation is surely still running)
        orchestrator = s.pid("orchestrator-1")
        os.kill(orchestrator, signal.SIGSTOP)
        try:
            mid = s.api("PATCH", "/api/v1/sites/fd2", {"type": "dynamic"})["operation"]["id"]
            wait(lambda: _op_running(s, mid), "the operation running", 30, s.log_tail)
            calls.down.add(0)
            s.kill("host-manager-a")
            mark(f"manager a killed, operation {mid} running")
        finally:
            os.kill(orchestrator, signal.SIGCONT)
        said = s.cli("cluster", "status", "--cluster-state", str(s.layout.state_file))
        assert _front_door(s, said)[:2] == ["DOWN", "up"], said
        _wait_op(s, mid, 120)
        mark(f"operation {mid} finished by manager b")
        s.restart("host-manager-a")
        calls.down.discard(0)
        mark("manager a restarted")
        # 2. router b's twistd killed: its nginx serves on; a change made meanwhile
        s.kill("host-router-b")
        mark("router b killed")
        made = s.api_on(1, "POST", "/api/v1/sites", {"name": "rk", "type": "static",
                                                      "orchestrator": "node1"})  # fmt: skip
        assert made[0] == 202, made
        _wait_op(s, json.loads(made[1])["operation"]["id"], 60)
        s.api("PUT", "/api/v1/sites/rk/files/public/index.html", raw=b"made meanwhile")
        time.sleep(2)
        s.restart("host-router-b")
        mark("router b restarted")
        wait(lambda: s.front("rk", router=1) == (200, b"made meanwhile"),
             "router b serving the site made while it was down", 60, s.log_tail)  # fmt: skip
        mark("router b serves rk")
        # 3. node 2 down: its orchestrator, nginx and dockerd killed
        s.kill_node(2)
        mark("node 2 killed")
        during = s.api_on(1, "POST", "/api/v1/sites", {"name": "nk", "type": "static",
                                                        "orchestrator": "node2"})  # fmt: skip
        if during[0] == 202:
            calls.started[json.loads(during[1])["operation"]["id"]] = "nk"
        mark(f"site on node 2 asked for: {during[0]}")
        time.sleep(5)
        s.restart_node(2)
        mark("node 2 restarted")
        for op_id in sorted(calls.started):
            _wait_op(s, op_id, 180)
        mark(f"all {len(calls.started)} operations of the stream succeeded")
        time.sleep(2)
    finally:
        calls.stop.set()
        caller.join(60)
        for loop in visitors:
            loop.stop()
        print("; ".join(timeline))
    print(
        f"{calls.calls} API calls ({len(calls.started)} operations, {len(calls.refused)} "
        f"refused: node down, {len(calls.unanswered)} unanswered: {calls.unanswered}); "
        + ", ".join(f"{v.host}@{v.address}: {v.ok} ok" for v in visitors)
    )
    for loop in visitors:
        assert loop.failures == [], (loop.host, loop.address, loop.failures[:5])
        assert loop.ok > 100, (loop.host, loop.ok)
    assert calls.failures == [], calls.failures[:5]
    assert len(calls.started) >= 10, calls.started
    # a create whose answer never came: there, its operation done, or not there at all
    for name in calls.unanswered:
        status, content = s.api_on(0, "GET", f"/api/v1/sites/{name}")
        assert status in (200, 404), (name, status, content[:300])
    # no data lost: files written before, on both nodes, served again
    kept = (200, b"kept on node 2")
    for router in (0, 1):
        wait(lambda r=router: s.front("st2", path="/kept.txt", router=r) == kept,
             f"st2's file through router {router}", 120, s.log_tail)  # fmt: skip
        assert s.front("fd1", path="/kept.txt", router=router) == (200, b"kept on node 1")
    assert s.api("GET", "/api/v1/sites/st2/files/public/kept.txt") == b"kept on node 2"
    s.wait_served("fd2", b"turned dynamic")
    # and the sites made during the stream, on both nodes, through both routers
    for name in sorted(set(calls.started.values()))[:6]:
        s.api("PUT", f"/api/v1/sites/{name}/files/public/index.html", raw=name.encode())
        for router in (0, 1):
            wait(lambda n=name, r=router: s.front(n, router=r) == (200, n.encode()),
                 f"{name} through router {router}", 60, s.log_tail)  # fmt: skip
