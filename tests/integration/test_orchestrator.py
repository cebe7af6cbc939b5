"""
The orchestrator in-process on the real reactor, with real dockerd (swarm), its real nginx
and the real site files: sites served, restarted, scaled, contained; files confined.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from services import free_port
from sites_network import (
    create_legacy_network,
    free_subnet,
    link_local,
    network_name,
    remove_network,
)
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool

from director.cli import main as director_main
from director.clients.orchestrator import OrchestratorClient
from director.common.client import ComponentCallError, ComponentClient, file_digest
from director.common.config import Config, load_config
from director.common.service import component_signer
from director.orchestrator.images import BASE_IMAGE, PYTHON_IMAGE
from director.orchestrator.service import build_service
from director.orchestrator.sites import STOP_LINGER


@dataclass
class Orchestrator:
    config: Config
    client: ComponentClient
    base: Path
    service: Any = None

    @property
    def nginx_port(self) -> int:
        return self.config.orchestrator.nginx_port

    def get(
        self,
        name: str,
        path: str = "/",
        host: str | None = None,
        timeout: float = 10,
        forwarded_host: str | None = None,
    ) -> tuple[int, bytes]:
        """
        GET through the orchestrator's nginx, as the router would (which sends custom
        domains under the site's host, with the domain in X-Forwarded-Host).
        """
        headers = {"Host": host or f"{name}.{self.config.director.sites_domain}"}
        if forwarded_host is not None:
            headers["X-Forwarded-Host"] = forwarded_host
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.nginx_port}{path}", headers=headers
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return 0, b""

    def wait_for(
        self,
        name: str,
        status: int,
        body: bytes | None = None,
        timeout: float = 30,
        forwarded_host: str | None = None,
    ):
        deadline = time.monotonic() + timeout
        got: tuple[int, bytes] = (0, b"")
        while time.monotonic() < deadline:
            got = self.get(name, forwarded_host=forwarded_host)
            if got[0] == status and (body is None or body in got[1]):
                return got
            time.sleep(0.05)
        raise AssertionError(f"{name}: wanted {status} {body!r}, last got {got!r}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


#: The site ids these tests use (their services and containers are removed at the end).
SITE_IDS = [*range(101, 113), *range(201, 209), *range(301, 309)]


async def served(
    o: Orchestrator, name: str, status: int, body: bytes | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    """
    Like L{Orchestrator.wait_for}, but polling from a thread so the reactor (and so the
    in-process orchestrator) keeps running: for changes the orchestrator makes on its own.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater
    from twisted.internet.threads import deferToThread

    deadline = time.monotonic() + timeout
    got: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        # a short timeout: a request nginx sent to a dead container must not hide a change
        got = await deferToThread(o.get, name, "/", None, 0.5)
        if got[0] == status and (body is None or body in got[1]):
            return got
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"{name}: wanted {status} {body!r}, last got {got!r}")


def running_container(site_id: int) -> str:
    result = subprocess.run(
        ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=director.site={site_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def orchestrator(docker_swarm: Any) -> Iterator[Orchestrator]:
    from twisted.internet import reactor

    base = Path(tempfile.mkdtemp(prefix="director-orch-", dir="/tmp"))
    base.chmod(0o755)
    config_path = base / "director.toml"
    api_port = free_port()
    # A sites network of its own (made the way orchestrators made it before the firewall),
    # so its firewall touches no other run's sites.
    network, subnet = network_name(), free_subnet()
    create_legacy_network(network, subnet)
    assert (
        director_main(
            [
                "init",
                "--config",
                str(config_path),
                "--state-dir",
                str(base / "var"),
                "--set",
                f"orchestrator.port={api_port}",
                "--set",
                f'orchestrator.url="http://127.0.0.1:{api_port}"',
                "--set",
                f"orchestrator.nginx_port={free_port()}",
                "--set",
                f'orchestrator.sites_network="{network}"',
                "--set",
                f'orchestrator.sites_subnet="{subnet}"',
                "--set",
                "orchestrator.bundled_databases=false",
                "--set",
                "orchestrator.ready_timeout=10",
            ]
        )
        == 0
    )
    (base / "var").chmod(0o755)
    config = load_config(config_path)
    service = build_service(reactor, config)
    service.privilegedStartService()
    service.startService()
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = ComponentClient(
        reactor,
        component_signer(reactor, config, "manager"),
        "orchestrator",
        config.orchestrator.url,
        HTTPClient(Agent(reactor, pool=pool)),
        timeout=120,
    )
    yield Orchestrator(config, client, base, service)
    for site_id in list(os.listdir(base / "var" / "orchestrator" / "applied")):
        subprocess.run(
            ["docker", "service", "rm", f"site_{site_id.split('.')[0]}"],
            capture_output=True,
            check=False,
        )
    subprocess.run(  # terminals of sites the tests did not delete
        ["docker", "rm", "-f", *(f"site_{site_id}_terminal" for site_id in SITE_IDS)],
        capture_output=True,
        check=False,
    )
    pytest_twisted.blockon(service.stopService())
    remove_network(network, subnet)
    shutil.rmtree(base, ignore_errors=True)


def docker_exec(site_id: int, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command in the site's running container, as the site's user."""
    deadline = time.monotonic() + 30
    container = ""
    while not container and time.monotonic() < deadline:
        container = (
            subprocess.run(
                ["docker", "ps", "-q", "--filter", f"label=director.site={site_id}"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.split("\n")[0]
            .strip()
        )
        if not container:
            time.sleep(0.2)
    assert container, f"no running container for site {site_id}"
    return subprocess.run(
        ["docker", "exec", container, *argv], capture_output=True, text=True, timeout=timeout
    )


async def put_file(o: Orchestrator, site_id: int, path: str, data: bytes, mode: str = "") -> None:
    params = {"mode": mode} if mode else None
    await o.client.json("PUT", f"/v1/sites/{site_id}/files/{path}", data=data, params=params)


RUN_SH = b'#!/bin/sh\nexec python3 -m http.server "$PORT" --directory /site/public\n'


@pytest_twisted.ensureDeferred
async def test_static_site_served(orchestrator: Orchestrator) -> None:
    """A static site's public/index.html is served through the orchestrator's nginx."""
    o = orchestrator
    status = await o.client.json("PUT", "/v1/sites/101", json={"name": "static1", "type": "static"})
    assert status["served"] is True
    await put_file(o, 101, "public/index.html", b"<h1>static one</h1>")
    o.wait_for("static1", 200, b"static one", timeout=5)
    assert o.get("nosuchsite")[0] == 404


@pytest_twisted.ensureDeferred
async def test_dynamic_site_lifecycle(orchestrator: Orchestrator) -> None:
    """run.sh serving python3 -m http.server is served, restarted, scaled to 0 and back."""
    o = orchestrator
    await o.client.json("PUT", "/v1/sites/102", json={"name": "dyn1", "type": "static"})
    await put_file(o, 102, "run.sh", RUN_SH, mode="755")
    await put_file(o, 102, "public/index.html", b"dynamic one")
    spec = {"name": "dyn1", "type": "dynamic", "image": PYTHON_IMAGE}
    status = await o.client.json("PUT", "/v1/sites/102", json=spec)
    assert status["upstream"], status
    o.wait_for("dyn1", 200, b"dynamic one")
    before = status["upstream"]
    restarted = await o.client.json("POST", "/v1/sites/102/restart")
    assert restarted["upstream"]
    o.wait_for("dyn1", 200, b"dynamic one")
    info = await o.client.json("GET", "/v1/sites/102")
    assert info["running"] and info["run_sh_exists"], info
    await o.client.json("PUT", "/v1/sites/102", json=dict(spec, availability="not-served"))
    o.wait_for("dyn1", 503)
    await o.client.json("PUT", "/v1/sites/102", json=spec)
    o.wait_for("dyn1", 200, b"dynamic one")
    assert before is not None
    await o.client.json("PUT", "/v1/sites/102", json=dict(spec, availability="disabled"))
    o.wait_for("dyn1", 403, b"disabled")
    removed = await o.client.json("DELETE", "/v1/sites/102")
    assert removed == {"removed": True}
    o.wait_for("dyn1", 404)


@pytest_twisted.ensureDeferred
async def test_containment(orchestrator: Orchestrator) -> None:
    """
    The site's process is not root, has no capabilities and no_new_privs, a read-only root,
    and cannot exceed its memory or PID limits or reach the orchestrator's API.
    """
    o = orchestrator
    await o.client.json("PUT", "/v1/sites/103", json={"name": "jail", "type": "static"})
    await put_file(o, 103, "run.sh", RUN_SH, mode="755")
    spec = {
        "name": "jail",
        "type": "dynamic",
        "image": PYTHON_IMAGE,
        "limits": {"memory_mb": 64, "pids": 64},
    }
    await o.client.json("PUT", "/v1/sites/103", json=spec)
    status = docker_exec(103, "cat", "/proc/self/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[0] != "0"
    assert int(fields["CapEff"].strip(), 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    assert docker_exec(103, "touch", "/usr/x").returncode != 0  # read-only root
    assert docker_exec(103, "touch", "/tmp/x").returncode == 0  # tmpfs
    assert docker_exec(103, "touch", "/site/private/x").returncode == 0  # its own files
    hog = docker_exec(103, "python3", "-c", "b = bytearray(300 * 1024 * 1024); print(len(b))")
    assert hog.returncode == 137, hog  # killed by the memory limit
    bomb = docker_exec(
        103,
        "sh",
        "-c",
        "n=0; while [ $n -lt 200 ]; do sleep 30 & n=$((n+1)); done 2>&1; echo started $n",
    )
    assert "started 200" not in bomb.stdout, bomb
    docker_exec(103, "sh", "-c", "pkill sleep; true")
    # The killed sleeps are reaped asynchronously; until then an exec may hit the pids limit.
    for _ in range(100):
        if docker_exec(103, "true").returncode == 0:
            break
        time.sleep(0.1)
    api_port = o.config.orchestrator.port
    probe = (
        "import socket, sys\n"
        "gw = open('/proc/net/route').read().split('\\n')[1].split()[2]\n"
        "ip = '.'.join(str(int(gw[i:i+2], 16)) for i in (6, 4, 2, 0))\n"
        f"for host in (ip, '127.0.0.1', '172.17.0.1'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {api_port}), timeout=3).close()\n"
        "        print('reached', host)\n"
        "    except OSError as e:\n"
        "        print('refused', host, e)\n"
    )
    result = docker_exec(103, "python3", "-c", probe)
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("refused") for line in lines), result
    await o.client.json("DELETE", "/v1/sites/103")


PROBE = (
    "import json, socket, sys\n"
    "for host, port in json.loads(sys.argv[1]):\n"
    "    try:\n"
    "        socket.create_connection((host, port), timeout=3).close()\n"
    "        print('reached', host, port)\n"
    "    except OSError as e:\n"
    "        print('refused', host, port, e)\n"
)


def _listener(host: str) -> socket.socket:
    """A listening socket of the test's own on one of this machine's addresses."""
    s = socket.socket()
    s.bind((host, 0))
    s.listen(16)
    return s


@pytest_twisted.ensureDeferred
async def test_sites_cannot_reach_each_other_or_the_host(orchestrator: Orchestrator) -> None:
    """
    A site's container reaches neither another site's container (on a sites network made
    before the firewall, so without Docker's own inter-container switch), nor listeners on
    this machine's addresses (the sites network's gateway, the Docker bridge, a link-local
    address of the host), nor a link-local address beyond the machine; nginx still serves
    both sites. The firewall's rules are in place, link-local included.
    """
    o = orchestrator
    subnet = o.config.orchestrator.sites_subnet
    upstreams = {}
    for site_id, name in ((111, "wall1"), (112, "wall2")):
        await o.client.json("PUT", f"/v1/sites/{site_id}", json={"name": name, "type": "static"})
        await put_file(o, site_id, "run.sh", RUN_SH, mode="755")
        await put_file(o, site_id, "public/index.html", name.encode())
        spec = {"name": name, "type": "dynamic", "image": PYTHON_IMAGE}
        upstreams[site_id] = (await o.client.json("PUT", f"/v1/sites/{site_id}", json=spec))[
            "upstream"
        ]
    gateway = str(next(ipaddress.IPv4Network(subnet).hosts()))
    listeners = [_listener(gateway), _listener("172.17.0.1")]
    try:
        with link_local() as (local_address, far, far_port):
            listeners.append(_listener(local_address))
            targets = [
                (upstreams[112][0], 8080),
                *(s.getsockname() for s in listeners),
                (far, far_port),
            ]
            from twisted.internet.threads import deferToThread

            result = await deferToThread(
                docker_exec, 111, "python3", "-c", PROBE, json.dumps(targets)
            )
    finally:
        for s in listeners:
            s.close()
    lines = result.stdout.splitlines()
    assert len(lines) == len(targets), result
    assert all(line.startswith("refused") for line in lines), lines
    o.wait_for("wall1", 200, b"wall1")
    o.wait_for("wall2", 200, b"wall2")
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
    assert f"-A INPUT -s {subnet} -j DIRECTOR-IN-{subnet}" in rules
    assert f"-A DOCKER-USER -s {subnet} -j DIRECTOR-FW-{subnet}" in rules
    assert f"-A DIRECTOR-FW-{subnet} -d 169.254.0.0/16 -j REJECT" in rules, rules
    for site_id in (111, 112):
        await o.client.json("DELETE", f"/v1/sites/{site_id}")


@pytest_twisted.ensureDeferred
async def test_files_api_confined(orchestrator: Orchestrator) -> None:
    """Paths escaping the site, and links a user made inside it, never reach outside."""
    o = orchestrator
    await o.client.json("PUT", "/v1/sites/104", json={"name": "files1", "type": "static"})
    await put_file(o, 104, "public/a.txt", b"A")
    listing = await o.client.json("GET", "/v1/sites/104/files/public")
    assert [e["name"] for e in listing["entries"]] == [
        "a.txt",
        "index.html",
    ]  # index.html: the welcome page
    site_dir = o.base / "var" / "sites" / "104"
    os.symlink("/etc", site_dir / "public" / "evil")
    for path in ("public/evil/passwd", "../105/x", "public/../../etc/passwd"):
        with pytest.raises(ComponentCallError) as info:
            await o.client.json("GET", f"/v1/sites/104/files/{path}")
        assert info.value.status in (400, 403, 404, 409), info.value
    with pytest.raises(ComponentCallError):
        await put_file(o, 104, "public/evil/owned", b"x")
    assert not Path("/etc/owned").exists()
    await o.client.json("PATCH", "/v1/sites/104/files/public/a.txt", json={"mode": "600"})
    assert oct((site_dir / "public/a.txt").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ComponentCallError) as info:
        await o.client.json("PATCH", "/v1/sites/104/files/public/a.txt", json={"mode": "4755"})
    assert info.value.status == 400
    await o.client.json(
        "PATCH", "/v1/sites/104/files/public/a.txt", json={"move_to": "private/b.txt"}
    )
    assert (site_dir / "private/b.txt").read_bytes() == b"A"
    await o.client.json("PUT", "/v1/sites/104/files/public/dir/")
    await o.client.json("DELETE", "/v1/sites/104/files/public/dir")
    response: Any = await o.client.request(
        "GET", "/v1/sites/104/files/private", params={"zip": "1"}
    )
    assert response.code == 200
    assert (await response.content()).startswith(b"PK")


@pytest_twisted.ensureDeferred
async def test_bad_input(orchestrator: Orchestrator) -> None:
    """Unknown sites, malformed JSON and invalid fields get 4xx with a message; nothing changes."""
    o = orchestrator
    cases = [
        ("GET", "/v1/sites/999", None, None, 404),
        ("PUT", "/v1/sites/105", None, b"{not json", 400),
        ("PUT", "/v1/sites/105", {"name": "Bad Name", "type": "static"}, None, 400),
        ("PUT", "/v1/sites/105", {"name": "ok", "type": "weird"}, None, 400),
        (
            "PUT",
            "/v1/sites/105",
            {"name": "ok", "type": "dynamic", "image": "nope/none:1"},
            None,
            400,
        ),
        (
            "PUT",
            "/v1/sites/105",
            {"name": "ok", "type": "static", "limits": {"pids": 1}},
            None,
            400,
        ),
    ]
    for method, path, body, raw, status in cases:
        with pytest.raises(ComponentCallError) as info:
            await o.client.json(method, path, json=body, data=raw)
        assert info.value.status == status, (path, body, info.value)
        assert info.value.detail
    assert not (o.base / "var" / "orchestrator" / "applied" / "105.json").exists()
    listing = await o.client.json("GET", "/v1/sites")
    assert 105 not in [site["id"] for site in listing["sites"]]
    assert BASE_IMAGE


async def collect_until(proto: Any, needle: bytes, timeout: float = 30) -> bytes:
    """Read binary frames until C{needle} shows up (terminal output comes in pieces)."""
    from twisted.internet import reactor
    from twisted.internet.defer import TimeoutError as DeferredTimeout

    data = b""
    deadline = reactor.seconds() + timeout
    while needle not in data:
        left = deadline - reactor.seconds()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen; got {data[-500:]!r}")
        try:
            message = await proto.next_message(left)
        except DeferredTimeout:
            continue
        if isinstance(message, bytes):
            data += message
    return data


def ws_url(o: Orchestrator, path: str) -> str:
    return "ws" + o.config.orchestrator.url[4:] + path


@pytest_twisted.ensureDeferred
async def test_terminal(orchestrator: Orchestrator) -> None:
    """The web terminal runs `id`, and `stty size` reports the size after a resize."""
    from twisted.internet import reactor

    from director.common.client import connect_websocket

    o = orchestrator
    await o.client.json(
        "PUT", "/v1/sites/106", json={"name": "term1", "type": "static", "image": PYTHON_IMAGE}
    )
    signer = component_signer(reactor, o.config, "manager")
    proto = await connect_websocket(
        reactor, signer, "orchestrator", ws_url(o, "/ws/sites/106/terminal"), timeout=60
    )
    proto.sendMessage(b"id -u; echo user-$(whoami)-$((6*7))\n", isBinary=True)
    out = await collect_until(proto, b"-42")
    assert str(100_106).encode() in out
    assert b"user-site-42" in out and b"I have no name" not in out
    proto.sendMessage(json.dumps({"resize": [40, 120]}).encode(), isBinary=False)
    proto.sendMessage(b"stty size\n", isBinary=True)
    await collect_until(proto, b"40 120")
    proto.sendMessage(b"exit 7\n", isBinary=True)
    while True:
        message = await proto.next_message(30)
        if isinstance(message, str) and "exit" in message:
            assert json.loads(message)["exit"] == 7
            break
    await proto.closed


@pytest_twisted.ensureDeferred
async def test_large_output_is_complete(orchestrator: Orchestrator) -> None:
    """A `cat` of a large file arrives complete through the terminal (flow-controlled)."""
    from twisted.internet import reactor

    from director.common.client import connect_websocket

    o = orchestrator
    await o.client.json("PUT", "/v1/sites/107", json={"name": "term2", "type": "static"})
    await put_file(o, 107, "private/big", b"0123456789abcde\n" * (8 * 1024 * 1024 // 16))
    signer = component_signer(reactor, o.config, "manager")
    proto = await connect_websocket(
        reactor, signer, "orchestrator", ws_url(o, "/ws/sites/107/terminal"), timeout=60
    )
    proto.sendMessage(
        b"stty -echo; cat /site/private/big; echo; echo END-OF-$((1+1))-CAT\n",
        isBinary=True,
    )
    data = await collect_until(proto, b"END-OF-2-CAT", timeout=120)
    assert data.count(b"0123456789abcde") >= 8 * 1024 * 1024 // 16
    proto.sendClose(1000)
    await proto.closed


@pytest_twisted.ensureDeferred
async def test_logs_stream(orchestrator: Orchestrator) -> None:
    """The log websocket shows the start marker, then new lines as the site writes them."""
    from twisted.internet import reactor

    from director.common.client import connect_websocket

    o = orchestrator
    await o.client.json("PUT", "/v1/sites/108", json={"name": "logs1", "type": "static"})
    script = b"#!/bin/sh\nwhile :; do echo tick-$(date +%s%N); sleep 0.2; done\n"
    await put_file(o, 108, "run.sh", script, mode="755")
    await o.client.json("PUT", "/v1/sites/108", json={"name": "logs1", "type": "dynamic"})
    signer = component_signer(reactor, o.config, "manager")
    proto = await connect_websocket(
        reactor, signer, "orchestrator", ws_url(o, "/ws/sites/108/logs?tail=50"), timeout=60
    )
    seen: list[str] = []
    while not (
        any("DIRECTOR: Starting server" in s for s in seen) and sum("tick-" in s for s in seen) >= 3
    ):
        seen.append(json.loads(await proto.next_message(30))["line"])
    proto.sendClose(1000)
    await proto.closed
    await o.client.json("DELETE", "/v1/sites/108")


@pytest_twisted.ensureDeferred
async def test_shell_bridge_token_once(orchestrator: Orchestrator) -> None:
    """
    The shell bridge runs a command with a manager-minted token and returns its output and
    exit status; the same token is refused the second time, and disabled sites are refused.
    """
    from twisted.internet import reactor

    from director.common.client import connect_websocket
    from director.common.keys import load_private_key
    from director.common.tokens import mint

    o = orchestrator
    await o.client.json("PUT", "/v1/sites/109", json={"name": "shell1", "type": "static"})
    await put_file(o, 109, "public/index.html", b"hello from the site")
    manager_key = load_private_key(o.config.auth.keys_dir, "manager")
    shell = component_signer(reactor, o.config, "shell")
    token = mint(manager_key, reactor, 109, "alice", 60)
    url = ws_url(o, "/ws/shell-server/109/ssh-shell")

    async def run(token: str, command: str) -> tuple[bytes, Any]:
        proto = await connect_websocket(reactor, shell, "orchestrator", url, timeout=60)
        proto.sendMessage(json.dumps({"token": token, "command": command}).encode(), False)
        out, last = b"", None
        while True:
            message = await proto.next_message(30)
            if isinstance(message, bytes):
                out += message[1:]
            else:
                last = json.loads(message)
                if "exit" in last or "error" in last:
                    break
        await proto.closed
        return out, last

    out, last = await run(token, "cat /site/public/index.html; exit 3")
    assert out == b"hello from the site" and last == {"exit": 3}
    out, last = await run(token, "id")
    assert last["code"] == "replayed" and out == b""
    await o.client.json(
        "PUT",
        "/v1/sites/109",
        json={"name": "shell1", "type": "static", "availability": "disabled"},
    )
    out, last = await run(mint(manager_key, reactor, 109, "alice", 60), "id")
    assert "disabled" in last["error"]
    out, last = await run(mint(manager_key, reactor, 101, "alice", 60), "id")
    assert last["code"] == "wrong_site"


@pytest_twisted.ensureDeferred
async def test_custom_image_and_databases(
    orchestrator: Orchestrator, postgres_server: Any, mariadb_server: Any
) -> None:
    """
    A site image with extra packages builds and the site runs it; a misspelt package fails
    the build with its log and the site keeps its image; PostgreSQL and MariaDB databases
    are created and the site's container reaches them with DIRECTOR_DATABASE_URL.
    """
    o = orchestrator
    tag = "director/site-110:1"
    built = await o.client.json(
        "POST",
        "/v1/images/build",
        json={
            "tag": tag,
            "parent": PYTHON_IMAGE,
            "packages": ["postgresql-client", "mariadb-client"],
        },
        timeout=600,
    )
    assert built["tag"] == tag
    with pytest.raises(ComponentCallError) as info:
        await o.client.json(
            "POST",
            "/v1/images/build",
            json={"tag": "director/site-110:2", "parent": tag, "packages": ["postgresql-clinet"]},
            timeout=600,
        )
    assert info.value.status == 422
    failed = json.loads(info.value.body)
    assert "Debian has no package called postgresql-clinet" in failed["message"], failed

    def host(server: Any, kind: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "admin_host": "127.0.0.1",
            "admin_port": server.port,
            "admin_user": server.admin_user,
            "admin_password": server.admin_password,
            "container_host": "172.17.0.1",
            "container_port": server.port,
        }

    pg = {
        "host": host(postgres_server, "postgres"),
        "name": "site_110",
        "username": "site_110",
        "password": "pg-secret-110",
    }
    my = {
        "host": host(mariadb_server, "mysql"),
        "name": "site_110",
        "username": "site_110",
        "password": "my-secret-110",
    }
    pg_env = (await o.client.json("PUT", "/v1/databases", json=pg))["environment"]
    my_env = (await o.client.json("PUT", "/v1/databases", json=my))["environment"]
    assert pg_env["DIRECTOR_DATABASE_URL"].startswith("postgresql://site_110:")
    await o.client.json("PUT", "/v1/sites/110", json={"name": "db1", "type": "static"})
    await put_file(o, 110, "run.sh", RUN_SH, mode="755")
    spec = {"name": "db1", "type": "dynamic", "image": tag, "env": pg_env}
    await o.client.json("PUT", "/v1/sites/110", json=spec)
    sql = "create table t (x int); insert into t values (42); select x from t"
    result = docker_exec(110, "sh", "-c", f'psql "$DIRECTOR_DATABASE_URL" -tA -c "{sql}"')
    assert result.stdout.strip().endswith("42"), result
    admin = docker_exec(
        110,
        "sh",
        "-c",
        f"PGPASSWORD={postgres_server.admin_password} psql -h 172.17.0.1 "
        f"-p {postgres_server.port} -U {postgres_server.admin_user} -c 'select 1' postgres",
    )
    assert admin.returncode != 0  # containers never get the administrator's account
    await o.client.json("PUT", "/v1/sites/110", json=dict(spec, env=my_env))
    result = docker_exec(
        110,
        "sh",
        "-c",
        'mariadb -h "$DIRECTOR_DATABASE_HOST" -P "$DIRECTOR_DATABASE_PORT" '
        '-u "$DIRECTOR_DATABASE_USERNAME" -p"$DIRECTOR_DATABASE_PASSWORD" '
        '"$DIRECTOR_DATABASE_NAME" -N -e "select 6*7"',
    )
    assert result.stdout.strip() == "42", result
    rows = await o.client.json("POST", "/v1/databases/query", json=dict(pg, sql="select x from t"))
    assert rows["rows"] == [[42]]
    await o.client.json("DELETE", "/v1/sites/110")
    await o.client.json("POST", "/v1/databases/delete", json=pg)
    await o.client.json("POST", "/v1/databases/delete", json=my)
    # Deleting the site removes its images once swarm has removed its containers.
    await eventually(lambda: not image_exists(tag), "the deleted site's image removed")


@pytest_twisted.ensureDeferred
async def test_killed_task_followed(orchestrator: Orchestrator) -> None:
    """
    When a dynamic site's container is killed, nginx follows on its own: the die event
    turns the site to "not running" at once, and swarm's replacement task is served within
    seconds, at the new container's address, with no API call.
    """
    o = orchestrator
    await o.client.json("PUT", "/v1/sites/201", json={"name": "follow1", "type": "static"})
    await put_file(o, 201, "run.sh", RUN_SH, mode="755")
    await put_file(o, 201, "public/index.html", b"following")
    spec = {"name": "follow1", "type": "dynamic", "image": PYTHON_IMAGE}
    await o.client.json("PUT", "/v1/sites/201", json=spec)
    await served(o, "follow1", 200, b"following")
    old = running_container(201)
    assert old
    started = time.monotonic()
    subprocess.run(["docker", "kill", old], capture_output=True, check=True)
    await served(o, "follow1", 503, b"not running", timeout=10)
    await served(o, "follow1", 200, b"following", timeout=20)
    elapsed = time.monotonic() - started
    new = running_container(201)
    assert new and new != old
    address = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            new,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    listing = await o.client.json("GET", "/v1/sites")
    (site,) = [s for s in listing["sites"] if s["id"] == 201]
    assert site["upstream"] == [address]
    # swarm waits 2 s before restarting a task; the rest is Docker, events and one reload
    assert elapsed < 8, elapsed
    await o.client.json("DELETE", "/v1/sites/201")


@pytest_twisted.ensureDeferred
async def test_site_user_has_a_name(orchestrator: Orchestrator) -> None:
    """
    The site's uid has a passwd entry in its containers (read-only): no "I have no name!"
    in shells, and the home directory is /site/.home.
    """
    o = orchestrator
    await o.client.json("PUT", "/v1/sites/202", json={"name": "named1", "type": "static"})
    await put_file(o, 202, "run.sh", RUN_SH, mode="755")
    spec = {"name": "named1", "type": "dynamic", "image": PYTHON_IMAGE}
    await o.client.json("PUT", "/v1/sites/202", json=spec)
    result = docker_exec(202, "sh", "-c", "id -un; id -gn; getent passwd $(id -u)")
    lines = result.stdout.splitlines()
    assert lines[:2] == ["site", "site"], result
    assert lines[2] == "site:x:100202:100202:Director site:/site/.home:/bin/bash"
    assert docker_exec(202, "sh", "-c", "echo x >> /etc/passwd").returncode != 0
    await o.client.json("DELETE", "/v1/sites/202")


@pytest_twisted.ensureDeferred
async def test_file_monitor(orchestrator: Orchestrator) -> None:
    """
    The file monitor websocket lists a watched directory, then reports files the API (or
    anyone) creates, writes, moves and deletes; links and escapes are refused; heartbeats
    are echoed; after a remove nothing more is reported.
    """
    from twisted.internet import reactor

    from director.common.client import connect_websocket

    o = orchestrator
    await o.client.json("PUT", "/v1/sites/203", json={"name": "monitor1", "type": "static"})
    await put_file(o, 203, "public/index.html", b"hello")
    site_dir = o.base / "var" / "sites" / "203"
    os.symlink("/etc", site_dir / "public" / "evil")
    signer = component_signer(reactor, o.config, "manager")
    proto = await connect_websocket(
        reactor, signer, "orchestrator", ws_url(o, "/ws/sites/203/files/monitor"), timeout=30
    )

    async def until(event: str, path: str) -> list[dict[str, Any]]:
        """Messages up to and including the one for C{event} on C{path} (inotify may report
        other changes, such as a new directory's attributes, in between)."""
        seen: list[dict[str, Any]] = []
        while not seen or (seen[-1].get("event"), seen[-1].get("path")) != (event, path):
            seen.append(json.loads(await proto.next_message(30)))
        return seen

    def send(message: dict[str, Any]) -> None:
        proto.sendMessage(json.dumps(message).encode(), isBinary=False)

    send({"action": "add", "path": "public"})
    listing = await until("watched", "public")
    assert [(m["event"], m["path"], m["type"]) for m in listing[:-1]] == [
        ("create", "public/evil", "link"),
        ("create", "public/index.html", "file"),
    ]
    assert listing[0]["target"] == "/etc"
    await put_file(o, 203, "public/new.txt", b"12345")
    created = (await until("create", "public/new.txt"))[-1]
    assert created["type"] == "file" and created["size"] == 5
    await put_file(o, 203, "public/new.txt", b"1234567")
    updated = (await until("update", "public/new.txt"))[-1]
    assert updated["size"] == 7
    await o.client.json("PUT", "/v1/sites/203/files/public/sub/")
    made = (await until("create", "public/sub"))[-1]
    assert made["type"] == "dir"
    await o.client.json(
        "PATCH", "/v1/sites/203/files/public/new.txt", json={"move_to": "public/moved.txt"}
    )
    moved = (await until("move", "public/moved.txt"))[-1]
    assert moved["from"] == "public/new.txt"
    await o.client.json("DELETE", "/v1/sites/203/files/public/moved.txt")
    await until("delete", "public/moved.txt")
    for path, code in (("public/evil", "is_a_symlink"), ("../101", "bad_path")):
        send({"action": "add", "path": path})
        error = (await until("error", path))[-1]
        assert error["code"] == code, error
    send({"heartbeat": 7})
    while (message := json.loads(await proto.next_message(10))) != {"heartbeat": 7}:
        assert message.get("event") != "error", message
    send({"action": "remove", "path": "public"})
    await until("unwatched", "public")
    await put_file(o, 203, "public/late.txt", b"x")
    send({"heartbeat": 8})
    assert json.loads(await proto.next_message(10)) == {"heartbeat": 8}  # nothing in between
    proto.sendClose(1000)
    await proto.closed
    await o.client.json("DELETE", "/v1/sites/203")


def image_exists(tag: str) -> bool:
    inspect = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    return inspect.returncode == 0


async def eventually(check: Any, what: str, timeout: float = 60) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.2, lambda: None)


@pytest_twisted.ensureDeferred
async def test_setup_command_runs_and_unused_images_go(orchestrator: Orchestrator) -> None:
    """
    A custom image runs the catalogue's setup commands; the image a site ran before a switch
    is removed once its container stops, and a deleted site's images go with it.
    """
    o = orchestrator
    tags = ["director/site-204:1", "director/site-204:2"]

    async def build(n: int) -> None:
        await o.client.json(
            "POST",
            "/v1/images/build",
            json={
                "tag": tags[n - 1],
                "parent": PYTHON_IMAGE,
                "packages": [],
                # one RUN step each, in order (the second sees the first's file)
                "setup_commands": [
                    f"echo setup-{n} > /setup-ran",
                    "test -s /setup-ran && echo ran >> /setup-steps",
                ],
            },
            timeout=600,
        )

    try:
        await o.client.json("PUT", "/v1/sites/204", json={"name": "img1", "type": "static"})
        await put_file(o, 204, "run.sh", RUN_SH, mode="755")
        await build(1)
        spec = {"name": "img1", "type": "dynamic", "image": tags[0]}
        await o.client.json("PUT", "/v1/sites/204", json=spec)
        from twisted.internet.threads import deferToThread

        result = await deferToThread(docker_exec, 204, "cat", "/setup-ran")
        assert result.stdout.strip() == "setup-1", result
        result = await deferToThread(docker_exec, 204, "cat", "/setup-steps")
        assert result.stdout.strip() == "ran", result
        await build(2)
        assert image_exists(tags[0]) and image_exists(tags[1])  # running, and not yet applied
        await o.client.json("PUT", "/v1/sites/204", json=dict(spec, image=tags[1]))
        await eventually(lambda: not image_exists(tags[0]), "the superseded image removed")
        assert image_exists(tags[1])
        result = await deferToThread(docker_exec, 204, "cat", "/setup-ran")
        assert result.stdout.strip() == "setup-2", result
        await o.client.json("DELETE", "/v1/sites/204")
        await eventually(lambda: not image_exists(tags[1]), "the deleted site's image removed")
    finally:
        subprocess.run(["docker", "service", "rm", "site_204"], capture_output=True, check=False)
        for tag in tags:
            if image_exists(tag):
                await eventually(
                    lambda t=tag: (
                        subprocess.run(["docker", "rmi", "-f", t], capture_output=True).returncode
                        == 0
                    ),
                    "cleanup",
                )


def _runtime(o: Orchestrator) -> Any:
    """The orchestrator's site runtime (to stop it following Docker, as if dockerd were away)."""
    from director.orchestrator.service import _FollowTasks

    for child in o.service:
        if isinstance(child, _FollowTasks):
            return child._runtime
    raise AssertionError("no runtime in the orchestrator service")


@pytest_twisted.ensureDeferred
async def test_custom_domain_keeps_the_own_address(orchestrator: Orchestrator) -> None:
    """
    A site with a custom domain answers 200 on its own address (the router decides about
    redirects, once the domain has a certificate) and on the domain, for static and dynamic
    sites, whatever primary_url an older manager sends.
    """
    o = orchestrator
    own = f"domains1.{o.config.director.sites_domain}"
    spec = {
        "name": "domains1",
        "type": "static",
        "custom_domains": ["www.domains1.test"],
        "primary_url": "https://www.domains1.test",
    }
    await o.client.json("PUT", "/v1/sites/301", json=spec)
    await put_file(o, 301, "public/index.html", b"domains one")
    for forwarded in (own, "www.domains1.test"):
        assert o.get("domains1", forwarded_host=forwarded) == (200, b"domains one")
    await put_file(o, 301, "run.sh", RUN_SH, mode="755")
    await o.client.json("PUT", "/v1/sites/301", json=dict(spec, type="dynamic", image=PYTHON_IMAGE))
    # (the process may still be starting, and nginx's old workers answer for a moment)
    for forwarded in (own, "www.domains1.test"):
        o.wait_for("domains1", 200, b"domains one", 30, forwarded_host=forwarded)
    time.sleep(1)  # the reload is through: only the dynamic site's configuration answers
    for forwarded in (own, "www.domains1.test"):
        assert o.get("domains1", forwarded_host=forwarded) == (200, b"domains one")
    await o.client.json("DELETE", "/v1/sites/301")


@pytest_twisted.ensureDeferred
async def test_new_static_site_has_a_page(orchestrator: Orchestrator) -> None:
    """
    A new static site answers 200 with a welcome page (public/index.html, saying how to
    edit it); the user's own index.html replaces it and is live within 1 s. A site whose
    public/ already had files gets no page added; a folder without an index gets a page
    that says so, not nginx's bare 403, on the fast path and with a file of its own.
    """
    o = orchestrator
    await o.client.json("PUT", "/v1/sites/302", json={"name": "fresh1", "type": "static"})
    status, body = o.get("fresh1")
    assert status == 200 and b"Welcome to fresh1" in body and b"public/index.html" in body
    listing = await o.client.json("GET", "/v1/sites/302/files/public")
    assert [e["name"] for e in listing["entries"]] == ["index.html"], listing
    started = time.monotonic()
    await put_file(o, 302, "public/index.html", b"my own page")
    o.wait_for("fresh1", 200, b"my own page", timeout=1)
    assert time.monotonic() - started < 1
    # Files already there (kept from before): nothing is added to them.
    public = o.base / "var" / "sites" / "303" / "public"
    public.mkdir(parents=True)
    (public / "other.html").write_text("other")
    public.chmod(0o755)
    (public / "other.html").chmod(0o644)
    await o.client.json("PUT", "/v1/sites/303", json={"name": "kept1", "type": "static"})
    assert not (public / "index.html").exists()
    assert o.get("kept1", "/other.html") == (200, b"other")
    for spec in ({}, {"limits": {"client_max_body_size": "5m"}}):
        await o.client.json(
            "PUT", "/v1/sites/303", json={"name": "kept1", "type": "static", **spec}
        )
        # (nginx may still be reloading when the site moves to a file of its own)
        o.wait_for("kept1", 404, b"No page here yet", timeout=5)
    await o.client.json("DELETE", "/v1/sites/302")
    await o.client.json("DELETE", "/v1/sites/303")


@pytest_twisted.ensureDeferred
async def test_availability_on_every_address(orchestrator: Orchestrator) -> None:
    """
    not-served: the "not served" page (503) on the site's host and its custom domains, for a
    static site as for a dynamic one; disabled: the disabled page (403) everywhere.
    """
    o = orchestrator
    own = f"avail1.{o.config.director.sites_domain}"
    addresses = (own, "www.avail1.test")
    spec: dict[str, Any] = {"name": "avail1", "custom_domains": ["www.avail1.test"]}
    await o.client.json("PUT", "/v1/sites/304", json=dict(spec, type="static"))
    await put_file(o, 304, "public/index.html", b"available")
    await put_file(o, 304, "run.sh", RUN_SH, mode="755")
    dynamic = dict(spec, type="dynamic", image=PYTHON_IMAGE)
    for kind in (dict(spec, type="static"), dynamic):
        await o.client.json("PUT", "/v1/sites/304", json=kind)
        o.wait_for("avail1", 200, b"available")
        # (nginx's old workers may answer for a moment after each change: polled)
        await o.client.json("PUT", "/v1/sites/304", json=dict(kind, availability="not-served"))
        for forwarded in addresses:
            o.wait_for("avail1", 503, b"not being served", 5, forwarded_host=forwarded)
        await o.client.json("PUT", "/v1/sites/304", json=dict(kind, availability="disabled"))
        for forwarded in addresses:
            o.wait_for("avail1", 403, b"disabled", 5, forwarded_host=forwarded)
    await o.client.json("PUT", "/v1/sites/304", json=dynamic)
    o.wait_for("avail1", 200, b"available")
    await o.client.json("DELETE", "/v1/sites/304")


class _DockerAway:
    """The real gateway, except that Docker does not answer about tasks (dockerd restarting)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.asked = 0

    def tasks(self, name: str, network: str) -> Any:
        from twisted.internet.defer import fail

        from director.orchestrator.docker_gateway import DockerError

        self.asked += 1
        return fail(DockerError("Cannot connect to the Docker daemon"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest_twisted.ensureDeferred
async def test_site_down_says_not_running(orchestrator: Orchestrator) -> None:
    """
    A dynamic site whose container dies while Docker does not answer (dockerd restarting)
    answers 503 "not running", never a bare 502, and never whatever now has its old address
    (another site's container, say); once Docker answers, the site is served again.
    """
    from twisted.internet.threads import deferToThread

    o = orchestrator
    await o.client.json("PUT", "/v1/sites/305", json={"name": "down1", "type": "static"})
    await put_file(o, 305, "run.sh", RUN_SH, mode="755")
    await put_file(o, 305, "public/index.html", b"up again")
    spec = {"name": "down1", "type": "dynamic", "image": PYTHON_IMAGE}
    await o.client.json("PUT", "/v1/sites/305", json=spec)
    await served(o, "down1", 200, b"up again")
    runtime = _runtime(o)
    real = runtime._docker
    away = runtime._docker = _DockerAway(real)
    try:
        subprocess.run(
            ["docker", "service", "scale", "--detach", "site_305=0"],
            capture_output=True,
            check=True,
        )
        deadline = time.monotonic() + 30
        while running_container(305) and time.monotonic() < deadline:
            await deferToThread(time.sleep, 0.1)
        assert not running_container(305)
        await served(o, "down1", 503, b"not running", timeout=10)
        assert away.asked  # the die event was followed, and Docker did not answer
        for _ in range(3):
            status, body = await deferToThread(o.get, "down1", "/", None, 15)
            assert status == 503 and b"not running" in body, (status, body)
    finally:
        runtime._docker = real
    await o.client.json("PUT", "/v1/sites/305", json=spec)  # what the manager's repair does
    await served(o, "down1", 200, b"up again")
    await o.client.json("DELETE", "/v1/sites/305")


class RequestLoop:
    """
    GETs through the orchestrator's nginx from a thread, one new connection each, until
    stopped (at most C{limit}); counts the answers that were not 200 with C{body}.
    """

    def __init__(self, o: Orchestrator, name: str, body: bytes, limit: int = 20_000) -> None:
        self.o, self.name, self.body, self.limit = o, name, body, limit
        self.ok = 0
        self.failed: list[tuple[int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for _ in range(self.limit):
            if self._stop.is_set():
                return
            status, body = self.o.get(self.name, timeout=10)
            if status == 200 and self.body in body:
                self.ok += 1
            else:
                self.failed.append((status, body[:200]))
            time.sleep(0.005)

    async def stop(self) -> None:
        from twisted.internet.threads import deferToThread

        self._stop.set()
        await deferToThread(self._thread.join, 30)


def container_address(container: str) -> str:
    return subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


async def dynamic_site(o: Orchestrator, site_id: int, name: str, page: bytes) -> dict[str, Any]:
    await o.client.json("PUT", f"/v1/sites/{site_id}", json={"name": name, "type": "static"})
    await put_file(o, site_id, "run.sh", RUN_SH, mode="755")
    await put_file(o, site_id, "public/index.html", page)
    spec = {"name": name, "type": "dynamic", "image": PYTHON_IMAGE}
    await o.client.json("PUT", f"/v1/sites/{site_id}", json=spec)
    await served(o, name, 200, page)
    return spec


@pytest_twisted.ensureDeferred
async def test_restarts_and_changes_drop_no_request(orchestrator: Orchestrator) -> None:
    """
    A request loop through nginx sees every request answered by the site while it is
    restarted several times and its settings change: the new task serves before the old
    one stops, and each time a different container serves.
    """
    o = orchestrator
    spec = await dynamic_site(o, 205, "nogap1", b"always here")
    seen = {running_container(205)}
    loop = RequestLoop(o, "nogap1", b"always here")
    try:
        for _ in range(4):
            status = await o.client.json("POST", "/v1/sites/205/restart")
            assert len(status["upstream"]) == 1, status
            seen.add(running_container(205).split()[0])
        status = await o.client.json(
            "PUT", "/v1/sites/205", json=dict(spec, env={"CHANGED": "yes"})
        )
        assert status["upstream"], status
        result = docker_exec(205, "sh", "-c", 'echo "$CHANGED"')
        assert result.stdout.strip() == "yes", result
    finally:
        await loop.stop()
    assert loop.failed == [], loop.failed[:5]
    assert loop.ok > 50, loop.ok
    assert len(seen) >= 5, seen
    # the old tasks are gone: one container serves, at the address nginx uses
    await eventually(lambda: len(running_container(205).split()) == 1, "old tasks stopped", 30)
    assert [container_address(running_container(205))] == status["upstream"]
    await o.client.json("DELETE", "/v1/sites/205")


@pytest_twisted.ensureDeferred
async def test_restart_that_never_serves_keeps_the_old_task(orchestrator: Orchestrator) -> None:
    """
    A restart whose new process never listens on $PORT fails with the process's own log
    lines (and no internal id), and the old process keeps serving throughout; so does one
    whose new process exits, which fails without waiting out the timeout.
    """
    o = orchestrator
    await dynamic_site(o, 206, "keepold1", b"the old one")
    old = running_container(206)
    loop = RequestLoop(o, "keepold1", b"the old one")
    try:
        await put_file(
            o, 206, "run.sh", b'#!/bin/sh\necho "warming the caches"\nexec sleep 600\n', mode="755"
        )
        started = time.monotonic()
        with pytest.raises(ComponentCallError) as caught:
            await o.client.json("POST", "/v1/sites/206/restart")
        assert caught.value.status == 422 and caught.value.code == "not_ready"
        assert "warming the caches" in caught.value.detail, caught.value.detail
        assert "did not accept connections on port 8080 within 10 s" in caught.value.detail
        assert old[:12] not in caught.value.detail
        assert time.monotonic() - started < 30
        await put_file(o, 206, "run.sh", b'#!/bin/sh\necho "bad config"\nexit 3\n', mode="755")
        started = time.monotonic()
        with pytest.raises(ComponentCallError) as caught:
            await o.client.json("POST", "/v1/sites/206/restart")
        assert "exited before it accepted connections" in caught.value.detail
        assert "bad config" in caught.value.detail, caught.value.detail
        assert time.monotonic() - started < 8
        await deferLater_(2)  # the loop goes on meanwhile
    finally:
        await loop.stop()
    assert loop.failed == [], loop.failed[:5]
    # (a retry swarm started for the exited process before the rollback goes away)
    await eventually(lambda: running_container(206) == old, "only the old container runs", 30)
    listing = await o.client.json("GET", "/v1/sites")
    (site,) = [s for s in listing["sites"] if s["id"] == 206]
    assert site["upstream"] == [container_address(old)]
    await o.client.json("DELETE", "/v1/sites/206")


async def deferLater_(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_sigterm_stops_the_process_cleanly(orchestrator: Orchestrator) -> None:
    """
    The site's process runs under Docker's init (PID 1 is docker-init, not the site's
    shell), so a SIGTERM to the container reaches it, and python's http.server stops
    cleanly once the linger is over (sites.STOP_LINGER: it serves meanwhile), rather than
    being killed after the grace period.
    """
    o = orchestrator
    await dynamic_site(o, 207, "sigterm1", b"stops")
    container = running_container(207)
    pid1 = docker_exec(207, "cat", "/proc/1/cmdline").stdout
    assert pid1.split("\0")[0].endswith("docker-init"), pid1
    started = time.monotonic()
    subprocess.run(
        ["docker", "kill", "--signal", "TERM", container], check=True, capture_output=True
    )
    assert o.get("sigterm1", "/", None, 5) == (200, b"stops")  # it lingers, serving
    while time.monotonic() - started < 10:
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if state[0] == "false":
            break
        await deferLater_(0.02)
    elapsed = time.monotonic() - started
    assert state == ["false", "0"], state
    assert STOP_LINGER - 0.5 < elapsed < STOP_LINGER + 1.0, elapsed
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
    assert "DIRECTOR: Stopped server" in logs, logs
    await o.client.json("DELETE", "/v1/sites/207")


@pytest_twisted.ensureDeferred
async def test_a_site_that_cannot_run_says_why(orchestrator: Orchestrator) -> None:
    """
    Where a gap cannot be avoided (the only process exits), visitors get the 503 "not
    running" page and the site's status gives the reason: the task's error and its log.
    """
    o = orchestrator
    await o.client.json("PUT", "/v1/sites/208", json={"name": "cannotrun1", "type": "static"})
    await put_file(
        o, 208, "run.sh", b'#!/bin/sh\necho "SECRET_KEY is missing"\nexit 3\n', mode="755"
    )
    spec = {"name": "cannotrun1", "type": "dynamic", "image": PYTHON_IMAGE}
    await o.client.json("PUT", "/v1/sites/208", json=spec)
    await served(o, "cannotrun1", 503, b"This site is not running", timeout=20)
    status: dict[str, Any] = {}

    async def says_why() -> bool:
        status.update(await o.client.json("GET", "/v1/sites/208"))
        return any("SECRET_KEY is missing" in line for line in status["log"])

    for _ in range(100):
        if await says_why():
            break
        await deferLater_(0.2)
    assert not status["running"], status
    assert any("SECRET_KEY is missing" in line for line in status["log"]), status
    assert any("exited with status 3" in line for line in status["log"]), status
    await o.client.json("DELETE", "/v1/sites/208")


class _HangUp(Protocol):
    """Reads the first chunk of a body, then closes the connection."""

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        transport: Any = self.transport
        transport.stopProducing()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)


@pytest_twisted.ensureDeferred
async def test_site_files_move_as_an_archive(orchestrator: Orchestrator) -> None:
    """
    A site's files out as a tar and into another site: contents, modes, times, links as
    links, owned by the new site's uid and served by nginx at once; an archive that would
    escape the site is refused and changes nothing.
    """
    from twisted.internet import reactor

    o = orchestrator
    client = OrchestratorClient(o.client)
    sites = o.base / "var" / "sites"
    await client.put_site(307, {"name": "moving", "type": "static"})
    await put_file(o, 307, "public/index.html", b"<h1>the moving page</h1>")
    await put_file(o, 307, "private/.secret", b"s3cret", mode="600")
    link = sites / "307" / "public" / "latest.html"
    link.symlink_to("index.html")
    os.lchown(link, 100_307, 100_307)
    os.utime(sites / "307" / "public" / "index.html", (1_700_000_000, 1_700_000_000))
    with (sites / "307" / "private" / "big.bin").open("wb") as big:
        big.truncate(24 * 1024 * 1024)  # many chunks, sent as the client reads them
    chunks: list[bytes] = []
    size = await client.export_files(307, chunks.append, reactor)
    data = b"".join(chunks)
    assert size == len(data) > 0
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert members["public/latest.html"].issym()
    assert members["public/latest.html"].linkname == "index.html"
    assert members["private/.secret"].mode == 0o600
    assert members["public/index.html"].mtime == 1_700_000_000
    assert {"public", "private", ".home"} <= set(members)
    assert members["private/big.bin"].size == 24 * 1024 * 1024
    # Clients that hang up after the first chunk free their threads (the pool has two):
    # a whole export still goes through after three of them.
    for _ in range(3):
        response: Any = await o.client.request("GET", "/v1/sites/307/archive", stream=True)
        hang_up = _HangUp()
        response.deliverBody(hang_up)
        await hang_up.done
    again: list[bytes] = []
    assert await client.export_files(307, again.append, reactor) == len(data)

    await client.put_site(308, {"name": "moved", "type": "static"})
    with tempfile.TemporaryFile() as body:
        body.write(data)
        digest = await file_digest(reactor, body)
        answer = await client.import_files(308, body, digest)
    assert answer["imported"] == 308 and answer["entries"] == len(members), answer
    target = sites / "308"
    o.wait_for("moved", 200, b"the moving page", timeout=10)
    assert os.readlink(target / "public" / "latest.html") == "index.html"
    assert (target / "private" / ".secret").read_bytes() == b"s3cret"
    assert (target / "private" / "big.bin").stat().st_size == 24 * 1024 * 1024
    assert (target / "private" / ".secret").stat().st_mode & 0o777 == 0o600
    assert (target / "public" / "index.html").stat().st_mtime == 1_700_000_000
    for path in [target, *target.rglob("*")]:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (100_308, 100_308), path

    escaping = io.BytesIO()
    with tarfile.open(fileobj=escaping, mode="w") as archive:
        for name, content in (("public/index.html", b"replaced"), ("../../escaped", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    with tempfile.TemporaryFile() as body:
        body.write(escaping.getvalue())
        digest = await file_digest(reactor, body)
        with pytest.raises(ComponentCallError) as refused:
            await client.import_files(308, body, digest)
    assert (refused.value.status, refused.value.code) == (400, "bad_archive")
    assert "'..'" in refused.value.detail
    o.wait_for("moved", 200, b"the moving page", timeout=5)
    assert not (o.base / "escaped").exists() and not (o.base / "var" / "escaped").exists()
    assert not [p for p in sites.iterdir() if p.name.startswith(".import-")]
    for site_id in (307, 308):
        assert await client.remove_site(site_id, purge=True)
