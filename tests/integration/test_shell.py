"""
The shell server in-process on the real reactor, with the real OpenSSH client (`ssh`,
`sshpass`, `ssh-keygen`, tmux for a terminal), the fake manager served over real HTTP behind
the real guard (minting real tokens with the manager key `director init` wrote), and the
real orchestrator with real dockerd and its nginx. Sites use ids 300-399.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from services import free_port
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.server import Site

from director.cli import main as director_main
from director.common.client import ComponentClient, HTTPPoolService, connect_websocket
from director.common.config import Config, load_config
from director.common.keys import load_private_key
from director.common.service import component_signer, component_verifier
from director.orchestrator.service import build_service as build_orchestrator
from director.shell.service import build_service as build_shell
from director.testing.fake_shell_manager import FakeShellManager

SITE = 301
DISABLED_SITE = 302
INDEX = b"<h1>hello from the shell test site</h1>\n"
BIN = Path(sys.executable).parent
ALICE_PASSWORD = "alice-pw"


@dataclass
class Stack:
    config: Config
    base: Path
    manager: FakeShellManager
    orchestrator: ComponentClient
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.config.shell.port

    def ssh_args(self, user: str, *, password: bool = True, key: Path | None = None) -> list[str]:
        args = [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=20",
            "-p",
            str(self.port),
        ]
        if key is not None:
            args += ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
            args += ["-o", "PasswordAuthentication=no"]
        elif password:
            args += ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
        return [*args, f"{user}@127.0.0.1"]

    async def ssh(
        self,
        user: str,
        *command: str,
        password: str | None = ALICE_PASSWORD,
        key: Path | None = None,
        stdin: bytes = b"",
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `ssh` in a thread (the server runs on this reactor) and return what it did."""
        args = self.ssh_args(user, password=password is not None, key=key) + list(command)
        if key is None and password is not None:
            args = ["sshpass", "-p", password, *args]
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        result: subprocess.CompletedProcess[bytes] = await deferToThread(
            subprocess.run, args, input=stdin, capture_output=True, timeout=timeout, env=env
        )
        return result

    def session_events(self, text: str) -> list[str]:
        return [m for m in (formatEvent(e) for e in self.events) if text in m]


def _observe(stack: Stack) -> Any:
    def observer(event: dict[str, Any]) -> None:
        if event.get("shell_event"):
            stack.events.append(event)

    return observer


@pytest.fixture(scope="module")
def stack(docker_swarm: Any) -> Iterator[Stack]:
    from twisted.internet import reactor

    base = Path(tempfile.mkdtemp(prefix="director-shell-", dir="/tmp"))
    base.chmod(0o755)
    orchestrator_port, manager_port = free_port(), free_port()
    assert (
        director_main(
            [
                "init",
                "--config",
                str(base / "director.toml"),
                "--state-dir",
                str(base / "var"),
                "--set",
                f"orchestrator.port={orchestrator_port}",
                "--set",
                f'orchestrator.url="http://127.0.0.1:{orchestrator_port}"',
                "--set",
                f"orchestrator.nginx_port={free_port()}",
                "--set",
                f'manager.url="http://127.0.0.1:{manager_port}"',
                "--set",
                'shell.host="127.0.0.1"',
                "--set",
                f"shell.port={free_port()}",
                "--set",
                "shell.failure_delay=0.5",
                "--set",
                "orchestrator.bundled_databases=false",
            ]
        )
        == 0
    )
    (base / "var").chmod(0o755)
    config = load_config(base / "director.toml")
    fake = FakeShellManager(
        reactor,
        load_private_key(config.auth.keys_dir, "manager"),
        f"ws://127.0.0.1:{orchestrator_port}",
    )
    manager_site = Site(fake.resource(component_verifier(reactor, config, "manager")))
    manager_site.noisy = False
    endpoint = TCP4ServerEndpoint(reactor, manager_port, interface="127.0.0.1")
    manager_listener = pytest_twisted.blockon(endpoint.listen(manager_site))
    orchestrator = build_orchestrator(reactor, config)
    orchestrator.privilegedStartService()
    orchestrator.startService()
    shell = build_shell(reactor, config)
    shell.privilegedStartService()
    shell.startService()
    pool = HTTPPoolService(reactor)
    client = ComponentClient(
        reactor,
        component_signer(reactor, config, "manager"),
        "orchestrator",
        config.orchestrator.url,
        pool.http,
        timeout=120,
    )
    s = Stack(config, base, fake, client)
    observer = _observe(s)
    globalLogPublisher.addObserver(observer)

    async def create_sites() -> None:
        await client.json("PUT", f"/v1/sites/{SITE}", json={"name": "shellsite", "type": "static"})
        await client.json("PUT", f"/v1/sites/{SITE}/files/public/index.html", data=INDEX)
        await client.json(
            "PUT",
            f"/v1/sites/{DISABLED_SITE}",
            json={"name": "shelloff", "type": "static", "availability": "disabled"},
        )

    async def remove_sites() -> None:
        for site_id in (SITE, DISABLED_SITE):
            await client.json("DELETE", f"/v1/sites/{site_id}", params={"purge": "1"})

    fake.add_site(SITE, "shellsite")
    fake.add_site(DISABLED_SITE, "shelloff", availability="disabled")
    fake.add_site(303, "bobsite")
    fake.add_user("alice", "alice-pw", sites=("shellsite", "shelloff"))
    fake.add_user("bob", "bob-pw", sites=("bobsite",))
    fake.add_user("carol", "carol-pw", sites=("shellsite",), active=False)
    fake.add_user("dora", "dora-pw", sites=("shelloff",), admin=True)
    try:
        pytest_twisted.blockon(Deferred.fromCoroutine(create_sites()))
        yield s
    finally:
        globalLogPublisher.removeObserver(observer)
        errors: list[Exception] = []
        for step in (
            lambda: Deferred.fromCoroutine(remove_sites()),
            shell.stopService,
            orchestrator.stopService,
            pool.stopService,
            manager_listener.stopListening,
        ):
            try:
                pytest_twisted.blockon(step())
            except Exception as e:  # every step runs, whatever an earlier one did
                errors.append(e)
        for name in ("site_301", "site_302"):
            subprocess.run(["docker", "service", "rm", name], capture_output=True, check=False)
            subprocess.run(["docker", "rm", "-f", f"{name}_terminal"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        if errors:
            raise errors[0]


@pytest_twisted.ensureDeferred
async def test_command_output_and_exit_status(stack: Stack) -> None:
    """
    `ssh alice/shellsite@host 'cat /site/public/index.html'` prints the file and exits 0;
    `exit 3` gives 3; stdout and stderr stay apart; piped input and its EOF reach the command.
    """
    result = await stack.ssh("alice/shellsite", "cat /site/public/index.html")
    assert (result.stdout, result.returncode) == (INDEX, 0), result.stderr
    result = await stack.ssh("alice/shellsite", "exit 3")
    assert result.returncode == 3, result.stderr
    result = await stack.ssh("alice/shellsite", "echo out; echo err >&2; pwd")
    assert (result.stdout, result.stderr) == (b"out\n/site\n", b"err\n")
    result = await stack.ssh("alice/shellsite", "tr a-z A-Z", stdin=b"piped input\n")
    assert (result.stdout, result.returncode) == (b"PIPED INPUT\n", 0)
    opened = stack.session_events("shell session opened: user=alice site=shellsite")
    assert opened and "source=127.0.0.1 command pty=no" in opened[-1]


@pytest_twisted.ensureDeferred
async def test_large_binary_transfers_both_ways(stack: Stack) -> None:
    """Megabytes of binary data go up and come back intact (`cat` pipes replace scp)."""
    import hashlib

    data = os.urandom(3 * 1024 * 1024)
    try:
        result = await stack.ssh(
            "alice/shellsite",
            "cat > /site/private/blob && sha256sum /site/private/blob",
            stdin=data,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
        result = await stack.ssh("alice/shellsite", "cat /site/private/blob")
        assert result.returncode == 0 and result.stdout == data
    finally:
        (_site_dir(stack) / "private/blob").unlink(missing_ok=True)


@pytest_twisted.ensureDeferred
async def test_key_login(stack: Stack) -> None:
    """A key registered in the manager logs in; an unregistered one is refused."""
    keys = stack.base / "client-keys"
    keys.mkdir()
    for name in ("registered", "stranger"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    line = (keys / "registered.pub").read_text()
    stack.manager.users["alice"].keys.add(" ".join(line.split()[:2]))
    result = await stack.ssh("alice/shellsite", "echo key works", key=keys / "registered")
    assert (result.stdout, result.returncode) == (b"key works\n", 0), result.stderr
    result = await stack.ssh("alice/shellsite", "true", key=keys / "stranger")
    assert result.returncode == 255 and b"Permission denied" in result.stderr
    logins = stack.session_events("shell login accepted: user=alice site=shellsite")
    assert any("method=publickey (SHA256:" in m for m in logins)


@pytest_twisted.ensureDeferred
async def test_refusals(stack: Stack) -> None:
    """A wrong password, a non-member, a disabled site and an inactive account are refused."""
    # sshpass exits 5 when the password is refused.
    result = await stack.ssh("alice/shellsite", "true", password="wrong")
    assert result.returncode == 5 and b"Permission denied" in result.stderr
    result = await stack.ssh("bob/shellsite", "true", password="bob-pw")
    assert (result.returncode, result.stderr) == (1, b"You have no site called shellsite.\n")
    result = await stack.ssh("alice/shelloff", "true")
    assert (result.returncode, result.stderr) == (1, b"The site shelloff is disabled.\n")
    result = await stack.ssh("carol/shellsite", "true", password="carol-pw")
    assert result.returncode == 5 and b"Permission denied" in result.stderr
    # An administrator still enters a disabled site (to look into why it was disabled).
    result = await stack.ssh("dora/shelloff", "echo in", password="dora-pw")
    assert (result.returncode, result.stdout) == (0, b"in\n"), result.stderr
    result = await stack.ssh("x" * 300, "true")
    assert result.returncode == 255 and b"user name too long" in result.stderr
    # The manager was asked about users, never told the site in the user name.
    logins = [body for path, body in stack.manager.calls if path == "login"]
    assert all("/" not in body["username"] and "site" not in body for body in logins)


@pytest_twisted.ensureDeferred
async def test_replayed_token_is_refused(stack: Stack) -> None:
    """A token the shell server has used is refused when replayed against the orchestrator."""
    from twisted.internet import reactor

    result = await stack.ssh("alice/shellsite", "true")
    assert result.returncode == 0
    grant = stack.manager.grants[-1]
    signer = component_signer(reactor, stack.config, "shell")
    bridge = await connect_websocket(
        reactor, signer, "orchestrator", grant["websocket_url"], timeout=30
    )
    bridge.sendMessage(json.dumps({"token": grant["token"], "command": "id"}).encode(), False)
    answer = json.loads(await bridge.next_message(30))
    assert answer["code"] == "replayed"
    await bridge.closed


async def _tmux(stack: Stack, *args: str, check: bool = True) -> str:
    result: subprocess.CompletedProcess[str] = await deferToThread(
        subprocess.run,
        ["tmux", "-S", str(stack.base / "tmux.sock"), "-f", "/dev/null", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0 or not check, result.stderr
    return result.stdout


async def _screen_shows(stack: Stack, pattern: str, timeout: float = 60) -> str:
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = await _tmux(stack, "capture-pane", "-p", "-t", "shell")
        if re.search(pattern, screen):
            return screen
        await deferLater(reactor, 0.2, lambda: None)
    raise AssertionError(f"{pattern!r} never appeared; the screen was:\n{screen}")


@pytest_twisted.ensureDeferred
async def test_interactive_menu_and_resize(stack: Stack) -> None:
    """
    Under a real terminal (tmux): the menu lists the sites, a wrong answer gets one line,
    choosing opens a shell whose `stty size` is the terminal's, and follows a resize;
    the exit status reaches the client.
    """
    ssh = " ".join(["sshpass", "-p", "alice-pw", *stack.ssh_args("alice")])
    await _tmux(
        stack,
        "new-session",
        "-d",
        "-s",
        "shell",
        "-x",
        "100",
        "-y",
        "30",
        f"env -u SSH_AUTH_SOCK {ssh}; echo EXIT=$?; sleep 60",
    )
    try:
        screen = await _screen_shows(stack, r"Choose a site")
        assert "1) shelloff (static, disabled)" in screen
        assert "2) shellsite (static)" in screen
        await _tmux(stack, "send-keys", "-t", "shell", "nosuch", "Enter")
        await _screen_shows(stack, r"You have no site called nosuch\.")
        await _tmux(stack, "send-keys", "-t", "shell", "2", "Enter")
        await _screen_shows(stack, r"/site\$")
        await _tmux(stack, "send-keys", "-t", "shell", "stty size", "Enter")
        await _screen_shows(stack, r"\n30 100\n")
        await _tmux(stack, "resize-window", "-t", "shell", "-x", "120", "-y", "40")
        await _tmux(stack, "send-keys", "-t", "shell", "clear; stty size", "Enter")
        await _screen_shows(stack, r"40 120\n")
        await _tmux(stack, "send-keys", "-t", "shell", "sleep 30", "Enter", "C-c")
        await _tmux(stack, "send-keys", "-t", "shell", "echo after-ctrl-c", "Enter")
        await _screen_shows(stack, r"\nafter-ctrl-c\n")
        await _tmux(stack, "send-keys", "-t", "shell", "exit 7", "Enter")
        await _screen_shows(stack, r"EXIT=7")
    finally:
        await _tmux(stack, "kill-server", check=False)


@pytest_twisted.ensureDeferred
async def test_dropped_connection_closes_the_bridge(stack: Stack) -> None:
    """An SSH client that vanishes mid-session has its websocket to the orchestrator closed."""
    from twisted.internet import reactor

    before = len(stack.session_events("client left"))
    opened_before = len(stack.session_events("shell session opened"))
    args = ["sshpass", "-p", "alice-pw", *stack.ssh_args("alice/shellsite"), "-tt"]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    client = subprocess.Popen(
        [*args, "sleep 300"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while len(stack.session_events("shell session opened")) == opened_before:
            assert time.monotonic() < deadline, "the session never opened"
            await deferLater(reactor, 0.2, lambda: None)
    finally:
        client.kill()
        await deferToThread(client.wait, 30)
    deadline = time.monotonic() + 30
    while len(stack.session_events("client left")) == before and time.monotonic() < deadline:
        await deferLater(reactor, 0.2, lambda: None)
    assert len(stack.session_events("client left")) == before + 1


def _processes(site_id: int) -> str:
    return subprocess.run(
        [
            "docker",
            "exec",
            f"site_{site_id}_terminal",
            "sh",
            "-c",
            'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline; echo; done',
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout


@pytest_twisted.ensureDeferred
async def test_dropped_connection_leaves_nothing_running(stack: Stack) -> None:
    """After an SSH client vanishes, its command is no longer running in the container."""
    from twisted.internet import reactor

    args = ["sshpass", "-p", "alice-pw", *stack.ssh_args("alice/shellsite")]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    client = subprocess.Popen([*args, "sleep 311"], stdout=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while "sleep 311" not in await deferToThread(_processes, SITE):
            assert time.monotonic() < deadline, "the command never started"
            await deferLater(reactor, 0.2, lambda: None)
    finally:
        client.kill()
        await deferToThread(client.wait, 30)
    await deferLater(reactor, 5, lambda: None)
    assert "sleep 311" not in await deferToThread(_processes, SITE)


@pytest_twisted.ensureDeferred
async def test_ssh_audit_finds_nothing_failing(stack: Stack) -> None:
    """ssh-audit (from PyPI) reports no failing algorithm, no CVE and no failure exit."""
    result: subprocess.CompletedProcess[str] = await deferToThread(
        subprocess.run,
        [str(BIN / "ssh-audit"), "-j", "-p", str(stack.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    failing = [
        (kind, algorithm["algorithm"], algorithm["notes"]["fail"])
        for kind in ("kex", "key", "enc", "mac")
        for algorithm in report[kind]
        if algorithm.get("notes", {}).get("fail")
    ]
    assert failing == []
    assert report["cves"] == []
    assert report["compression"] == ["none"]
    assert result.returncode in (0, 2), result.stdout  # 2: warnings only; 3 would be a failure


# -- files over SSH: sftp, scp, rsync (the image's own servers, through the exec bridge) ------


def _tool_options(stack: Stack, key: Path) -> list[str]:
    return [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(key),
    ]


@pytest.fixture(scope="module")
def alice_key(stack: Stack) -> Path:
    """A key registered for alice (sftp -b and rsync/git need a login without prompts)."""
    keys = stack.base / "tool-keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "alice")])
    line = (keys / "alice.pub").read_text()
    stack.manager.users["alice"].keys.add(" ".join(line.split()[:2]))
    return keys / "alice"


async def _run(
    args: list[str], stdin: bytes = b"", cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    result: subprocess.CompletedProcess[bytes] = await deferToThread(
        subprocess.run,
        args,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    return result


async def _sftp(
    stack: Stack, key: Path, batch: str, user: str = "alice/shellsite"
) -> subprocess.CompletedProcess[bytes]:
    args = ["sftp", *_tool_options(stack, key), "-P", str(stack.port), "-b", "-"]
    return await _run([*args, f"{user}@127.0.0.1"], stdin=batch.encode())


def _site_dir(stack: Stack, site_id: int = SITE) -> Path:
    from director.orchestrator.runtime import RuntimePaths

    return RuntimePaths(stack.config.director.state_dir).site_dir(site_id)


def _get(stack: Stack, name: str, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.config.orchestrator.nginx_port}{path}",
        headers={"Host": f"{name}.{stack.config.director.sites_domain}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest_twisted.ensureDeferred
async def test_sftp_upload_download_rename_delete_mkdir(stack: Stack, alice_key: Path) -> None:
    """The real `sftp` client works in /site as the site's user: put, get, rename, rm, mkdir."""
    work = stack.base / "sftp-work"
    work.mkdir()
    data = os.urandom(300 * 1024)
    (work / "up.bin").write_bytes(data)
    result = await _sftp(
        stack,
        alice_key,
        f"pwd\nmkdir private/made\nput {work}/up.bin private/made/up.bin\n"
        f"rename private/made/up.bin private/made/moved.bin\n"
        f"get private/made/moved.bin {work}/down.bin\nls -l private/made\n",
    )
    assert result.returncode == 0, result.stderr
    assert b"Remote working directory: /site" in result.stdout
    assert (work / "down.bin").read_bytes() == data
    stored = _site_dir(stack) / "private/made/moved.bin"
    assert stored.read_bytes() == data
    assert not (_site_dir(stack) / "private/made/up.bin").exists()
    # owned by the site's user, as anything the site writes
    assert stored.stat().st_uid == _site_dir(stack).stat().st_uid != 0
    result = await _sftp(stack, alice_key, "rm private/made/moved.bin\nrmdir private/made\n")
    assert result.returncode == 0, result.stderr
    assert not (_site_dir(stack) / "private/made").exists()
    # Nothing outside /site is writable (the container's root is read-only).
    result = await _sftp(stack, alice_key, f"put {work}/up.bin /etc/up.bin\n")
    assert result.returncode != 0
    opened = stack.session_events("shell session opened: user=alice site=shellsite")
    assert any("sftp pty=no" in m for m in opened)


@pytest_twisted.ensureDeferred
async def test_sftp_planted_symlink_reaches_no_host_file(stack: Stack, alice_key: Path) -> None:
    """A symlink in the site to a file of the host is neither read nor written over SFTP."""
    work = stack.base / "symlink-work"
    work.mkdir()
    secret = stack.base / "host-secret.txt"
    secret.write_bytes(b"host secret\n")
    secret.chmod(0o644)
    (_site_dir(stack) / "private/link").symlink_to(secret)
    (work / "evil.txt").write_bytes(b"overwritten\n")
    try:
        result = await _sftp(stack, alice_key, f"get private/link {work}/got.txt\n")
        assert result.returncode != 0
        assert (
            not (work / "got.txt").exists() or b"host secret" not in (work / "got.txt").read_bytes()
        )
        result = await _sftp(stack, alice_key, f"put {work}/evil.txt private/link\n")
        assert secret.read_bytes() == b"host secret\n"
        result = await _sftp(stack, alice_key, f"get ../../../../{secret} {work}/got2.txt\n")
        assert result.returncode != 0 and not (work / "got2.txt").exists()
    finally:
        (_site_dir(stack) / "private/link").unlink()


@pytest_twisted.ensureDeferred
async def test_sftp_refusals(stack: Stack, alice_key: Path) -> None:
    """A disabled site, a site that is not yours, and no site named are refused."""
    result = await _sftp(stack, alice_key, "ls\n", user="alice/shelloff")
    assert result.returncode != 0 and b"The site shelloff is disabled." in result.stderr
    result = await _sftp(stack, alice_key, "ls\n", user="alice/bobsite")
    assert result.returncode != 0 and b"You have no site called bobsite." in result.stderr
    result = await _sftp(stack, alice_key, "ls\n", user="alice")
    assert result.returncode != 0 and b"Name the site in the user name" in result.stderr
    # bob's password gets him nothing in alice's site either
    args = ["sshpass", "-p", "bob-pw", "sftp", "-F", "/dev/null", "-P", str(stack.port)]
    args += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    args += ["-o", "PubkeyAuthentication=no", "bob/shellsite@127.0.0.1"]
    result = await _run(args, stdin=b"ls\n")
    assert result.returncode != 0 and b"You have no site called shellsite." in result.stderr


@pytest_twisted.ensureDeferred
async def test_scp_upload_is_served(stack: Stack, alice_key: Path) -> None:
    """`scp` (SFTP underneath) puts a page in public/, which the site then serves."""
    page = stack.base / "scp-page.html"
    page.write_bytes(b"<p>copied with scp</p>\n")
    args = ["scp", *_tool_options(stack, alice_key), "-P", str(stack.port)]
    result = await _run([*args, "-o", "User=alice/shellsite", str(page), "127.0.0.1:public/"])
    assert result.returncode == 0, result.stderr
    assert await deferToThread(_get, stack, "shellsite", "/scp-page.html") == (
        200,
        b"<p>copied with scp</p>\n",
    )
    # The URI form with the site in the (escaped) user name works too, both ways.
    target = f"scp://alice%2Fshellsite@127.0.0.1:{stack.port}/public/scp-page.html"
    result = await _run(["scp", *_tool_options(stack, alice_key), target, str(page) + ".back"])
    assert result.returncode == 0, result.stderr
    assert Path(str(page) + ".back").read_bytes() == b"<p>copied with scp</p>\n"


@pytest_twisted.ensureDeferred
async def test_rsync_twice_moves_nothing_the_second_time(stack: Stack, alice_key: Path) -> None:
    """`rsync -e ssh` uploads a directory; run again, it transfers no file."""
    tree = stack.base / "rsync-tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"a\n" * 1000)
    (tree / "sub/b.bin").write_bytes(os.urandom(100_000))
    ssh = " ".join(["ssh", *_tool_options(stack, alice_key), "-p", str(stack.port)])
    ssh += " -l alice/shellsite"
    args = ["rsync", "-a", "--stats", "-e", ssh, f"{tree}/", "127.0.0.1:/site/public/synced/"]
    result = await _run(args)
    assert result.returncode == 0, result.stderr
    assert b"Number of regular files transferred: 2" in result.stdout
    assert (_site_dir(stack) / "public/synced/sub/b.bin").read_bytes() == (
        tree / "sub/b.bin"
    ).read_bytes()
    result = await _run(args)
    assert result.returncode == 0, result.stderr
    assert b"Number of regular files transferred: 0" in result.stdout


# -- git push deploys ---------------------------------------------------------------------


async def _git(
    stack: Stack, key: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    ssh = " ".join(["ssh", *_tool_options(stack, key)])
    env = ["env", f"GIT_SSH_COMMAND={ssh}", "GIT_TERMINAL_PROMPT=0"]
    ident = ["-c", "user.name=Test", "-c", "user.email=test@example.org"]
    return await _run([*env, "git", *ident, *args], cwd=cwd)


@pytest_twisted.ensureDeferred
async def test_git_push_deploys_a_static_site(stack: Stack, alice_key: Path) -> None:
    """
    `git push ssh://alice@host:PORT/shellsite.git main` deploys into public/ (served within
    2 s), prints the deploy; a clone gets the commit back; a failing deploy fails the push
    and leaves main where it was; a non-member is refused.
    """
    from twisted.internet import reactor

    url = f"ssh://alice@127.0.0.1:{stack.port}/shellsite.git"
    work = stack.base / "git-work"
    work.mkdir()
    assert (await _git(stack, alice_key, "init", "-q", "-b", "main", cwd=work)).returncode == 0
    (work / "deployed.html").write_bytes(b"<p>deployed by git</p>\n")
    await _git(stack, alice_key, "add", ".", cwd=work)
    await _git(stack, alice_key, "commit", "-q", "-m", "first", cwd=work)
    result = await _git(stack, alice_key, "push", url, "main", cwd=work)
    pushed = time.monotonic()
    assert result.returncode == 0, result.stderr
    assert b"remote: Director: deployed" in result.stderr
    assert b"Director: shellsite now runs" in result.stderr  # the deploy operation's outcome
    assert b"@director-deployed" not in result.stderr
    commit = (await _git(stack, alice_key, "rev-parse", "main", cwd=work)).stdout.strip()
    deploy_calls = [body for path, body in stack.manager.calls if path == "deploy"]
    assert deploy_calls[-1] == {"username": "alice", "site": "shellsite", "commit": commit.decode()}
    while (got := await deferToThread(_get, stack, "shellsite", "/deployed.html"))[0] != 200:
        assert time.monotonic() - pushed < 2, got
        await deferLater(reactor, 0.05, lambda: None)
    assert got == (200, b"<p>deployed by git</p>\n")
    deploys = stack.session_events("shell git push deployed: user=alice site=shellsite")
    assert deploys
    # When the deploy operation fails, so does the push.
    stack.manager.deploy_outcome = ("failed", "restart_process: the site did not start")
    try:
        (work / "again.html").write_bytes(b"again\n")
        await _git(stack, alice_key, "add", ".", cwd=work)
        await _git(stack, alice_key, "commit", "-q", "-m", "again", cwd=work)
        result = await _git(stack, alice_key, "push", url, "main", cwd=work)
        assert result.returncode != 0
        assert b"restarting shellsite failed" in result.stderr
    finally:
        stack.manager.deploy_outcome = ("succeeded", None)
    # clone and pull
    clone = stack.base / "git-clone"
    result = await _git(stack, alice_key, "clone", "-q", url, str(clone))
    assert result.returncode == 0, result.stderr
    assert (clone / "deployed.html").read_bytes() == b"<p>deployed by git</p>\n"
    # A deploy that cannot write its files fails the push, with the reason; main stays.
    locked = _site_dir(stack) / "public/locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        (work / "locked").mkdir()
        (work / "locked/page.html").write_bytes(b"x\n")
        await _git(stack, alice_key, "add", ".", cwd=work)
        await _git(stack, alice_key, "commit", "-q", "-m", "second", cwd=work)
        result = await _git(stack, alice_key, "push", url, "main", cwd=work)
        assert result.returncode != 0
        assert b"Director: deploy failed" in result.stderr
        heads = await _git(stack, alice_key, "ls-remote", url, "main")
        first = await _git(stack, alice_key, "rev-parse", "main~1", cwd=work)  # "again"
        assert heads.stdout.split()[0] == first.stdout.strip()
    finally:
        locked.chmod(0o755)
        shutil.rmtree(locked)
    # bob is no member of shellsite; an unknown site is refused too
    result = await _git(stack, alice_key, "ls-remote", url.replace("shellsite", "bobsite"))
    assert result.returncode != 0 and b"You have no site called bobsite." in result.stderr


@pytest_twisted.ensureDeferred
async def test_sftp_upload_wakes_the_file_monitor(stack: Stack, alice_key: Path) -> None:
    """A file put over SFTP shows up on the orchestrator's file monitor like any change."""
    from twisted.internet import reactor

    signer = component_signer(reactor, stack.config, "manager")
    url = "ws" + stack.config.orchestrator.url[4:] + f"/ws/sites/{SITE}/files/monitor"
    proto = await connect_websocket(reactor, signer, "orchestrator", url, timeout=30)
    try:
        proto.sendMessage(json.dumps({"action": "add", "path": "public"}).encode(), False)
        while json.loads(await proto.next_message(10)).get("event") != "watched":
            pass
        page = stack.base / "monitored.html"
        page.write_bytes(b"<p>watched</p>\n")
        result = await _sftp(stack, alice_key, f"put {page} public/monitored.html\n")
        assert result.returncode == 0, result.stderr
        while True:
            event = json.loads(await proto.next_message(10))
            if event.get("path") == "public/monitored.html" and event["event"] in (
                "create",
                "update",
            ):
                break
    finally:
        proto.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_sftp_refuses_uploads_once_over_the_disk_quota(stack: Stack, alice_key: Path) -> None:
    """
    A session may take the site past its quota (Director sees SFTP's data only afterwards);
    once measured, a new session refuses uploads and new directories with the quota
    message, and removing files still works, after which uploads are accepted again.
    """
    from twisted.internet import reactor

    work = stack.base / "sftp-quota"
    work.mkdir()
    (work / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (work / "small.txt").write_bytes(b"small\n")
    spec = {"name": "shellsite", "type": "static"}

    async def usage() -> tuple[int | None, int | None]:
        report = await stack.orchestrator.json("GET", "/v1/disk")
        mine = next(s for s in report["sites"] if s["id"] == SITE)
        return mine["disk_usage_bytes"], mine["disk_quota_bytes"]

    # The quota: 1 MB above what the site (with other tests' files) uses now, so the 2 MB
    # upload takes it over and removing that file brings it back under.
    for _ in range(300):
        before, _quota = await usage()
        if before is not None:
            break
        await deferLater(reactor, 0.1, lambda: None)
    assert before is not None
    quota_mb = -(-before // (1024 * 1024)) + 1
    await stack.orchestrator.json(
        "PUT", f"/v1/sites/{SITE}", json={**spec, "limits": {"disk_quota_mb": quota_mb}}
    )

    try:
        result = await _sftp(stack, alice_key, f"put {work}/big.bin private/big.bin\n")
        assert result.returncode == 0, result.stderr
        for _ in range(300):  # measured again shortly after the session ended
            used, quota = await usage()
            if used is not None and quota is not None and used >= quota:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert quota == quota_mb * 1024 * 1024, (quota, quota_mb)
        assert used is not None and used >= quota, (used, quota)
        result = await _sftp(stack, alice_key, f"put {work}/small.txt public/small.txt\n")
        assert result.returncode != 0
        assert (
            b"disk quota, so uploads (and, until there is room, downloads) are refused"
            in result.stderr
        ), result.stderr
        assert not (_site_dir(stack) / "public/small.txt").exists()
        result = await _sftp(stack, alice_key, "mkdir private/more\n")
        assert result.returncode != 0
        assert not (_site_dir(stack) / "private/more").exists()
        # a file already there is not truncated by a refused upload over it
        index = (_site_dir(stack) / "public/index.html").read_bytes()
        result = await _sftp(stack, alice_key, f"put {work}/small.txt public/index.html\n")
        assert result.returncode != 0
        assert (_site_dir(stack) / "public/index.html").read_bytes() == index
        result = await _sftp(stack, alice_key, "rm private/big.bin\n")
        assert result.returncode == 0, result.stderr
        for _ in range(300):
            used, quota = await usage()
            if used is not None and quota is not None and used < quota:
                break
            await deferLater(reactor, 0.1, lambda: None)
        result = await _sftp(stack, alice_key, f"put {work}/small.txt public/small.txt\n")
        assert result.returncode == 0, result.stderr
        assert (_site_dir(stack) / "public/small.txt").read_bytes() == b"small\n"
    finally:
        await stack.orchestrator.json("PUT", f"/v1/sites/{SITE}", json=spec)
        for leftover in ("private/big.bin", "public/small.txt"):
            (_site_dir(stack) / leftover).unlink(missing_ok=True)
