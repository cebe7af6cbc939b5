"""
Files go through the manager as streams: a large download or upload through the API moves
the all-in-one daemon's memory (manager and orchestrator in one process) by far less than
the file's size. Measured from /proc/<pid>/status of the daemon the test started.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_browser import Director
from test_dashboard_ws import director  # noqa: F401  (the daemon and its site)

MB = 1024 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def peak_growth_mib(pid: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """How far the RSS of C{pid} rose above where it was while C{work} ran (MiB)."""
    before = rss_kib(pid)
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        stop.set()
        sampler.join()
    peak[0] = max(peak[0], rss_kib(pid))
    return (peak[0] - before) / 1024, result


def _site_dir(d: Director, name: str) -> Path:
    code, site = d.api("GET", f"/api/v1/sites/{name}")
    assert code == 200, site
    return Path(d.daemon.config.director.state_dir) / "sites" / str(site["id"])


def test_a_large_download_is_streamed(director: Director) -> None:  # noqa: F811
    size = 96 * MB
    big = _site_dir(director, "relay-site") / "public" / "big.bin"
    with big.open("wb") as f:
        f.truncate(size)  # sparse: nothing on disk, yet a 96 MB download (the limit is 100)
    try:

        def download() -> tuple[int, str]:
            request = urllib.request.Request(
                director.url + "/api/v1/sites/relay-site/files/public/big.bin",
                headers={"Authorization": f"Bearer {director.admin_token}"},
            )
            h = hashlib.sha256()
            total = 0
            with urllib.request.urlopen(request, timeout=120) as response:
                assert response.headers["Content-Length"] == str(size)
                while chunk := response.read(256 * 1024):
                    total += len(chunk)
                    h.update(chunk)
            return total, h.hexdigest()

        download()  # warm up: pools, connections
        growth, (total, digest) = peak_growth_mib(director.daemon.process.pid, download)
        assert total == size
        assert digest == hashlib.sha256(bytes(size)).hexdigest()
        assert growth < 20, f"the daemon grew by {growth:.0f} MiB for a 96 MiB download"
    finally:
        big.unlink()


def test_a_large_upload_is_streamed(director: Director) -> None:  # noqa: F811
    size = 90 * MB
    with tempfile.TemporaryFile() as body:
        block = os.urandom(MB)
        for _ in range(size // MB):
            body.write(block)
        expected = hashlib.sha256()
        for _ in range(size // MB):
            expected.update(block)

        def upload() -> int:
            body.seek(0)
            request = urllib.request.Request(
                director.url + "/api/v1/sites/relay-site/files/private/upload.bin",
                data=body,
                method="PUT",
                headers={
                    "Authorization": f"Bearer {director.admin_token}",
                    "Content-Length": str(size),
                    "Content-Type": "application/octet-stream",
                },
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                return int(response.status)

        growth, status = peak_growth_mib(director.daemon.process.pid, upload)
    target = _site_dir(director, "relay-site") / "private" / "upload.bin"
    try:
        assert status == 200
        assert target.stat().st_size == size
        h = hashlib.sha256()
        with target.open("rb") as f:
            while chunk := f.read(MB):
                h.update(chunk)
        assert h.hexdigest() == expected.hexdigest()
        assert growth < 20, f"the daemon grew by {growth:.0f} MiB for a 90 MiB upload"
    finally:
        target.unlink(missing_ok=True)
