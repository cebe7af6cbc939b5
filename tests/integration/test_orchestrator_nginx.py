"""
The orchestrator's nginx with staged, scoped checks (real nginx, real reactor): a change is
checked with only the changed site files yet a bad one is still refused, alone, while good
changes in the same batch go live; nginx never reads a file that did not pass.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from services import free_port

from director.common.nginx import NginxConfigDirectory, NginxError, NginxPaths
from director.common.threads import BlockingPool
from director.orchestrator.nginx_config import main_config, site_config, site_file_name
from director.orchestrator.site_nginx import SiteNginxFiles, StagedNginx, sync_staging
from director.orchestrator.sites import HostedSite, Limits

DOMAIN = "sites.test"


class Stack:
    def __init__(self, base: Path, reactor: Any) -> None:
        self.base = base
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        paths = NginxPaths(base / "nginx")
        paths.create()
        (paths.prefix / "pages" / "__director").mkdir(parents=True)
        (paths.prefix / "pages" / "__director" / "not-found.html").write_text("none")
        (base / "hosts").mkdir()

        def render(site_files: list[Path] | None = None) -> str:
            return main_config(
                paths.prefix, self.listen, DOMAIN, base / "hosts", paths.sites, 1, site_files
            )

        paths.conf.write_text(render())
        self.pool = BlockingPool(reactor, "test-files", 2)
        self.staged = base / "staged"
        self.nginx = StagedNginx(reactor, paths, "test", self.pool, render, self.staged)
        self.files = SiteNginxFiles(
            NginxConfigDirectory(reactor, self.staged, self.nginx, self.pool), self.nginx
        )
        self.paths = paths
        for version in ("v1", "v2"):
            (base / version / "public").mkdir(parents=True)
            (base / version / "public" / "index.html").write_text(version)

    def text(self, site_id: int, version: str) -> str:
        site = HostedSite(
            site_id, f"s{site_id}", "static", limits=Limits(client_max_body_size="2m")
        )
        return site_config(site, self.listen, DOMAIN, self.base / version, [])

    def get(self, site_id: int) -> bytes:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/", headers={"Host": f"s{site_id}.{DOMAIN}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}".encode()
        except OSError:
            return b""  # not listening yet


@pytest.fixture
def stack(public_tmp: Path) -> Iterator[Stack]:
    """nginx with 50 site files; tests wait until it serves before changing anything (a
    reload signal that reaches nginx before it has set up its handlers would end it)."""
    from twisted.internet import reactor

    s = Stack(public_tmp, reactor)
    for site_id in range(1, 51):  # sites that are never checked again
        (s.paths.sites / site_file_name(site_id)).write_text(s.text(site_id, "v1"))
    (s.staged).mkdir()
    (s.staged / "site-99.conf").write_text("left over from a change that never finished")
    sync_staging(s.staged, s.paths.sites)
    s.pool.startService()
    s.nginx.privilegedStartService()
    s.nginx.startService()
    yield s
    pytest_twisted.blockon(s.nginx.stopService())
    s.pool.stopService()


async def eventually(check: Any, timeout: float = 10) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    waited = 0.0
    while not check():
        assert waited < timeout, "condition not met"
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


@pytest_twisted.ensureDeferred
async def test_change_checked_alone_and_live(stack: Stack) -> None:
    """A change goes live after a check that read only its own file."""
    await eventually(lambda: stack.get(7) == b"v1")
    await stack.files.apply({site_file_name(7): stack.text(7, "v2")})
    await eventually(lambda: stack.get(7) == b"v2")
    assert stack.nginx.checked[-1] == [site_file_name(7)]
    check_conf = (stack.paths.prefix / "check.conf").read_text()
    assert site_file_name(7) in check_conf and site_file_name(8) not in check_conf


@pytest_twisted.ensureDeferred
async def test_bad_change_refused_and_rolled_back(stack: Stack) -> None:
    """
    A file nginx rejects fails its apply, never reaches nginx's directory, is restored in
    staging, and the site keeps being served.
    """
    await eventually(lambda: stack.get(9) == b"v1")
    before = (stack.paths.sites / site_file_name(9)).read_text()
    with pytest.raises(NginxError) as info:
        await stack.files.apply({site_file_name(9): "server { no_such_directive on; }\n"})
    assert "no_such_directive" in str(info.value)
    assert (stack.staged / site_file_name(9)).read_text() == before
    assert (stack.paths.sites / site_file_name(9)).read_text() == before
    await eventually(lambda: stack.get(9) == b"v1")


def test_staging_starts_as_live(stack: Stack) -> None:
    """At start-up staging holds exactly the live files (an unfinished change is dropped)."""
    staged = sorted(p.name for p in stack.staged.glob("*.conf"))
    assert staged == sorted(p.name for p in stack.paths.sites.glob("*.conf"))
    assert "site-99.conf" not in staged


@pytest_twisted.ensureDeferred
async def test_removal_published(stack: Stack) -> None:
    """Removing a site's file removes it where nginx reads, after the check."""
    await eventually(lambda: stack.get(12) == b"v1")
    await stack.files.apply({site_file_name(12): None})
    assert not (stack.paths.sites / site_file_name(12)).exists()
    await eventually(lambda: stack.get(12) != b"v1")


@pytest_twisted.ensureDeferred
async def test_bad_change_fails_alone_in_a_batch(stack: Stack) -> None:
    """In one batch, the bad change fails and the good one still goes live."""
    from twisted.internet.defer import DeferredList

    await eventually(lambda: stack.get(10) == b"v1")
    good = stack.files.apply({site_file_name(10): stack.text(10, "v2")})
    bad = stack.files.apply({site_file_name(11): "upstream {\n"})
    results = await DeferredList([good, bad], consumeErrors=True)
    assert results[0][0] is True
    assert results[1][0] is False
    assert results[1][1].check(NginxError)  # type: ignore[attr-defined]
    await eventually(lambda: stack.get(10) == b"v2")
    assert stack.get(11) == b"v1"
