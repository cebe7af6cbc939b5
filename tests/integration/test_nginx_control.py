"""The nginx controller against a real nginx: checked, coalesced, rolled-back changes."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from services import free_port
from twisted.internet.defer import DeferredList

from director.common import pidfiles
from director.common.nginx import NginxConfigDirectory, NginxError, NginxPaths, NginxProcess
from director.common.threads import BlockingPool

MAIN = """
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp/body; proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi; uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  server {{ listen 127.0.0.1:{port} default_server; return 404; }}
  include {prefix}/sites/*.conf;
}}
"""


def site(port: int, name: str, body: str) -> str:
    return (
        f"server {{ listen 127.0.0.1:{port}; server_name {name}; "
        f"location / {{ return 200 '{body}'; }} }}\n"
    )


def get(port: int, host: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


async def wait_for(port: int, host: str, want: tuple[int, str]) -> tuple[int, str]:
    """Poll until nginx (after a reload, old workers may answer briefly) serves C{want}."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    got = (0, "")
    for _ in range(750):  # up to 15 s: a reload on a loaded machine can be slow
        got = get(port, host)
        if got == want:
            return got
        await deferLater(reactor, 0.02, lambda: None)
    return got


@pytest.fixture
def nginx(tmp_path: Path) -> Any:
    from twisted.internet import reactor

    port = free_port()
    paths = NginxPaths(tmp_path / "nginx")
    paths.create()
    paths.conf.write_text(MAIN.format(prefix=paths.prefix, port=port))
    process = NginxProcess(reactor, paths, "test")
    pool = BlockingPool(reactor, "nginx-files", 1)
    pool.startService()
    process.privilegedStartService()
    process.startService()
    directory = NginxConfigDirectory(reactor, paths.sites, process, pool)
    yield port, paths, process, directory
    pytest_twisted.blockon(process.stopService())
    pool.stopService()


@pytest_twisted.ensureDeferred
async def test_changes_together_reload_once(nginx: Any) -> None:
    """Several sites changed together go live with one reload."""
    port, _paths, _process, directory = nginx
    await wait_for(port, "x", (404, ""))
    await DeferredList(
        [directory.apply({f"site-{i}.conf": site(port, f"s{i}.test", f"s{i}")}) for i in range(5)],
        fireOnOneErrback=True,
    )
    assert directory.reloads == 1
    for i in range(5):
        assert await wait_for(port, f"s{i}.test", (200, f"s{i}")) == (200, f"s{i}")


@pytest_twisted.ensureDeferred
async def test_bad_change_fails_alone_and_is_rolled_back(nginx: Any) -> None:
    """A change nginx rejects is rolled back; good changes in the same batch go live."""
    port, paths, _process, directory = nginx
    await directory.apply({"site-a.conf": site(port, "a.test", "old")})
    good = directory.apply({"site-b.conf": site(port, "b.test", "b")})
    bad = directory.apply({"site-a.conf": "server { this is not nginx; }"})
    await good
    with pytest.raises(NginxError) as info:
        await bad
    assert "site-a.conf" in info.value.output or "unknown directive" in info.value.output
    assert "old" in (paths.sites / "site-a.conf").read_text()
    assert await wait_for(port, "a.test", (200, "old")) == (200, "old")
    assert await wait_for(port, "b.test", (200, "b")) == (200, "b")


@pytest_twisted.ensureDeferred
async def test_remove_and_stop(nginx: Any) -> None:
    """Removing a file takes the site away; stopping ends the nginx process."""
    port, paths, process, directory = nginx
    await directory.apply({"site-c.conf": site(port, "c.test", "c")})
    await directory.apply({"site-c.conf": None})
    assert not (paths.sites / "site-c.conf").exists()
    assert await wait_for(port, "c.test", (404, "")) == (404, "")
    pid = process.pid
    await process.stopService()
    # Gone: not running, at most a zombie the reactor has not reaped yet.
    assert not pidfiles.alive(pid)


@pytest_twisted.ensureDeferred
async def test_a_new_process_adopts_the_running_nginx(nginx: Any) -> None:
    """
    A second controller on the same paths (the next daemon, after one was killed without
    stopping nginx) adopts the running master: same pid, reloaded, no second nginx; its
    changes go live; stopping it ends nginx.
    """
    from twisted.internet import reactor

    port, paths, first, directory = nginx
    await directory.apply({"site-d.conf": site(port, "d.test", "before")})
    pid = first.pid
    assert pid is not None and first.running_pid() == pid
    first.running = False  # forgotten, as by a daemon killed outright: nginx runs on
    if first._watch is not None:
        first._watch.stop()
    second = NginxProcess(reactor, paths, "test")
    second.privilegedStartService()
    second.startService()
    try:
        assert second.adopted and second.pid == pid
        pool = BlockingPool(reactor, "nginx-files-2", 1)
        pool.startService()
        try:
            again = NginxConfigDirectory(reactor, paths.sites, second, pool)
            await again.apply({"site-d.conf": site(port, "d.test", "after")})
            assert await wait_for(port, "d.test", (200, "after")) == (200, "after")
        finally:
            pool.stopService()
        assert second.running_pid() == pid
    finally:
        await second.stopService()
    assert not pidfiles.alive(pid)


@pytest_twisted.ensureDeferred
async def test_nginx_started_again_when_it_dies(tmp_path: Path) -> None:
    """While the service runs, an nginx that ended (stopped by someone else) is started again."""
    import os
    import signal

    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    port = free_port()
    paths = NginxPaths(tmp_path / "nginx")
    paths.create()
    paths.conf.write_text(MAIN.format(prefix=paths.prefix, port=port))
    process = NginxProcess(reactor, paths, "test", check_interval=0.1)
    process.privilegedStartService()
    process.startService()
    try:
        first = process.pid
        assert first is not None
        assert await wait_for(port, "x", (404, "")) == (404, "")
        os.kill(first, signal.SIGTERM)  # fast shutdown: the master ends its workers
        for _ in range(200):
            if process.pid != first and process.running_pid() == process.pid:
                break
            await deferLater(reactor, 0.05, lambda: None)
        assert process.pid != first and process.running_pid() == process.pid
        assert await wait_for(port, "x", (404, "")) == (404, "")
    finally:
        await process.stopService()


@pytest_twisted.ensureDeferred
async def test_a_supervised_nginx_is_followed_and_never_stopped(tmp_path: Path) -> None:
    """
    Supervised (nginx under a service of its own, as its systemd unit runs it): with no
    nginx running the controller waits and starts none, and a change applied meanwhile is
    served once the service starts nginx; it adopts that nginx, follows the next one when
    the service starts nginx again (new pid), and stopping the controller leaves it serving.
    """
    import signal
    import subprocess

    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    port = free_port()
    paths = NginxPaths(tmp_path / "nginx")
    paths.create()
    paths.conf.write_text(MAIN.format(prefix=paths.prefix, port=port))
    pool = BlockingPool(reactor, "nginx-files-s", 1)
    pool.startService()
    process = NginxProcess(reactor, paths, "test", supervised=True, supervised_interval=0.05)
    process.privilegedStartService()
    process.startService()
    units: list[subprocess.Popen[bytes]] = []

    def unit() -> subprocess.Popen[bytes]:
        units.append(subprocess.Popen(paths.argv(), start_new_session=True))
        return units[-1]

    async def adopted(pid: int) -> bool:
        for _ in range(300):
            if process.pid == pid:
                return True
            await deferLater(reactor, 0.05, lambda: None)
        return False

    try:
        await deferLater(reactor, 0.5, lambda: None)
        assert process.pid is None and process.running_pid() is None  # started none
        directory = NginxConfigDirectory(reactor, paths.sites, process, pool)
        await directory.apply({"site-s.conf": site(port, "s.test", "meanwhile")})
        first = unit()
        assert await adopted(first.pid)
        assert await wait_for(port, "s.test", (200, "meanwhile")) == (200, "meanwhile")
        first.send_signal(signal.SIGQUIT)  # its service stops it, then starts it again
        assert first.wait(10) == 0
        second = unit()
        assert await adopted(second.pid)
        await directory.apply({"site-s.conf": site(port, "s.test", "followed")})
        assert await wait_for(port, "s.test", (200, "followed")) == (200, "followed")
        await process.stopService()
        assert second.poll() is None and pidfiles.alive(second.pid)  # left serving
        assert await wait_for(port, "s.test", (200, "followed")) == (200, "followed")
        assert first.returncode == 0 and second.poll() is None
    finally:
        if process.running:
            await process.stopService()
        for u in units:
            if u.poll() is None:
                u.send_signal(signal.SIGQUIT)
                u.wait(10)
        pool.stopService()


@pytest_twisted.ensureDeferred
async def test_logs_are_rotated_with_bounded_size(public_tmp: Path) -> None:
    """
    Past the size limit the access log is rotated (by the service's own loop) and nginx,
    told to reopen its logs, writes a fresh one; logs beyond the number kept are dropped.
    (Its workers, as nobody, reopen the logs themselves: the directory must be reachable.)
    """
    tmp_path = public_tmp
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    port = free_port()
    paths = NginxPaths(tmp_path / "nginx")
    paths.create()
    logged = MAIN.replace("access_log off;", "access_log {prefix}/logs/access.log;")
    paths.conf.write_text(logged.format(prefix=paths.prefix, port=port))
    limit, keep = 4096, 2
    process = NginxProcess(
        reactor, paths, "test", log_max_bytes=limit, log_keep=keep, log_check_interval=0.2
    )
    process.privilegedStartService()
    process.startService()
    logs = paths.prefix / "logs"
    access = logs / "access.log"

    async def until(condition: Any) -> None:
        for _ in range(200):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)

    def fill() -> None:
        for _ in range(60):  # ~100 bytes a line: past the limit
            get(port, "x")

    try:
        assert await wait_for(port, "x", (404, "")) == (404, "")
        fill()
        await until(lambda: (logs / "access.log.1").exists())  # the loop rotated it
        assert (logs / "access.log.1").stat().st_size > limit
        await until(lambda: access.exists())  # nginx reopened: a new file

        def written() -> bool:
            get(port, "after-rotation")  # workers reopen shortly after the master
            return access.stat().st_size > 0

        await until(written)
        assert access.stat().st_size > 0
        for _ in range(3):
            await until(lambda: access.exists())
            fill()
            process.rotate_logs()  # (or the loop got there first)
        await until(lambda: access.exists())
        names = sorted(p.name for p in logs.iterdir() if p.name.startswith("access"))
        assert names == ["access.log", "access.log.1", "access.log.2"], names
        total = sum(p.stat().st_size for p in logs.iterdir() if p.name.startswith("access"))
        assert total <= (keep + 1) * 2 * limit
    finally:
        await process.stopService()
