"""
Disk use and quotas on the orchestrator: the measurement (no links followed), the quota
decision, the background loop (cached, refreshed, failures logged) against a fake clock and
an inline runner, and the files API refusing writes over quota through the real Klein app.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

from treq.testing import StubTreq
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from director.common.nginx import NginxConfigDirectory
from director.common.threads import InlineRunner
from director.orchestrator.disk import MB, DiskUsage, measure_tree, quota_refusal
from director.orchestrator.runtime import RuntimePaths, SiteRuntime
from director.orchestrator.sites import HostedSite, Limits, parse_limits
from director.orchestrator.streams import SFTP_DENIED_OVER_QUOTA, sftp_quota_env
from director.orchestrator.web import OrchestratorAPI
from director.testing.fake_docker import FakeDockerGateway
from tests.unit.test_orchestrator_runtime import AcceptingNginx, ThreadedMemoryReactor


class MeasureTreeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        (self.root / "public").mkdir(parents=True)

    def test_counts_files_and_directories(self) -> None:
        empty = measure_tree(self.root)
        (self.root / "public" / "big").write_bytes(os.urandom(200_000))
        grown = measure_tree(self.root)
        self.assertGreaterEqual(grown - empty, 200_000)
        self.assertLess(grown - empty, 200_000 + 64 * 1024)

    def test_links_are_not_followed(self) -> None:
        """A link to a big directory outside the site counts as a link, not as its target."""
        outside = Path(self.mktemp())
        outside.mkdir()
        (outside / "huge").write_bytes(os.urandom(500_000))
        before = measure_tree(self.root)
        os.symlink(outside, self.root / "public" / "elsewhere")
        os.symlink("/", self.root / "root")
        os.symlink("..", self.root / "public" / "up")
        self.assertLess(measure_tree(self.root) - before, 16 * 1024)

    def test_hard_links_count_once(self) -> None:
        (self.root / "a").write_bytes(os.urandom(100_000))
        once = measure_tree(self.root)
        os.link(self.root / "a", self.root / "public" / "b")
        self.assertEqual(measure_tree(self.root), once)

    def test_missing_directory_is_empty(self) -> None:
        self.assertEqual(measure_tree(self.root / "nothing"), 0)

    def test_deep_trees(self) -> None:
        """Depth does not exhaust descriptors or the stack."""
        path = self.root
        for _ in range(300):
            path = path / "d"
        path.mkdir(parents=True)
        (path / "f").write_bytes(b"x" * 5000)
        self.assertGreater(measure_tree(self.root), 300 * 512)


class QuotaDecisionTests(SynchronousTestCase):
    def test_within_quota(self) -> None:
        self.assertIsNone(quota_refusal(10 * MB, 20 * MB, 10 * MB))

    def test_over_quota(self) -> None:
        message = quota_refusal(10 * MB, 20 * MB, 10 * MB + 1, "public/video.mp4")
        assert message is not None
        self.assertIn("public/video.mp4", message)
        self.assertIn("20 MB", message)
        self.assertIn("Delete files", message)
        self.assertIn("administrator", message)

    def test_shrinking_always_fits(self) -> None:
        """A site over its quota can still be cleaned up."""
        self.assertIsNone(quota_refusal(30 * MB, 20 * MB, 0))
        self.assertIsNone(quota_refusal(30 * MB, 20 * MB, -5))

    def test_unknown_or_no_quota(self) -> None:
        self.assertIsNone(quota_refusal(None, 20 * MB, 100 * MB))
        self.assertIsNone(quota_refusal(10 * MB, None, 100 * MB))

    def test_sftp_environment(self) -> None:
        self.assertEqual(sftp_quota_env(10 * MB, 20 * MB), {})
        self.assertEqual(sftp_quota_env(None, 20 * MB), {})
        env = sftp_quota_env(20 * MB, 20 * MB)
        self.assertEqual(env["DIRECTOR_SFTP_DENY"], SFTP_DENIED_OVER_QUOTA)
        self.assertIn(
            "uploads (and, until there is room, downloads) are refused",
            env["DIRECTOR_QUOTA_MESSAGE"],
        )

    def test_site_limit(self) -> None:
        self.assertIsNone(parse_limits({}).disk_quota_mb)
        self.assertEqual(parse_limits({"disk_quota_mb": 5}).disk_quota_mb, 5)
        self.assertIsNone(parse_limits({"disk_quota_mb": None}).disk_quota_mb)
        for bad in (0, -1, 1.5, "5", True):
            with self.assertRaises(ValueError):
                parse_limits({"disk_quota_mb": bad})


class DiskUsageLoopTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sizes: dict[int, int] = {1: 100, 2: 200}
        self.broken: set[int] = set()
        self.calls: list[int] = []

        def measure(path: Path) -> int:
            site_id = int(path.name)
            self.calls.append(site_id)
            if site_id in self.broken:
                raise OSError("disk on fire")
            return self.sizes[site_id]

        self.disk = DiskUsage(
            self.clock,
            InlineRunner(),
            lambda: list(self.sizes),
            lambda site_id: Path("/sites") / str(site_id),
            interval=60,
            settle=2,
            measure=measure,
        )
        self.addCleanup(self.disk.stop)

    def test_measures_at_start_and_every_interval(self) -> None:
        self.disk.start()
        self.assertEqual(self.disk.used(1), 100)
        self.assertEqual(self.disk.used(2), 200)
        self.sizes[1] = 150
        self.clock.advance(59)
        self.assertEqual(self.disk.used(1), 100)  # cached until the next round
        self.clock.advance(1)
        self.assertEqual(self.disk.used(1), 150)

    def test_failures_are_logged_and_the_loop_goes_on(self) -> None:
        self.broken.add(1)
        self.disk.start()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertIsNone(self.disk.used(1))
        self.assertEqual(self.disk.used(2), 200)
        self.broken.clear()
        self.clock.advance(60)
        self.assertEqual(self.disk.used(1), 100)

    def test_deleted_sites_are_forgotten(self) -> None:
        self.disk.start()
        del self.sizes[2]
        self.clock.advance(60)
        self.assertIsNone(self.disk.used(2))

    def test_a_write_moves_the_figure_at_once_then_it_is_measured(self) -> None:
        self.disk.start()
        self.calls.clear()
        self.disk.changed(1, 50)
        self.disk.changed(1, 25)
        self.assertEqual(self.disk.used(1), 175)
        self.sizes[1] = 180
        self.clock.advance(2)
        self.assertEqual(self.calls, [1])  # several writes: one measurement
        self.assertEqual(self.disk.used(1), 180)


class QuotaAPITests(SynchronousTestCase):
    """PUT through the real Klein app over a runtime on the fake Docker."""

    def setUp(self) -> None:
        self.reactor = ThreadedMemoryReactor()
        base = Path(self.mktemp())
        self.paths = RuntimePaths(base)
        nginx_dir = base / "nginx-sites"
        nginx_dir.mkdir(parents=True)
        nginx = AcceptingNginx()
        docker = FakeDockerGateway(images=("director/python:3",))
        self.runtime = SiteRuntime(
            self.reactor,
            docker,
            NginxConfigDirectory(self.reactor, nginx_dir, cast(Any, nginx), InlineRunner()),
            InlineRunner(),
            self.paths,
            listen="127.0.0.1:8180",
            sites_domain="sites.test",
            ready_check=lambda address, port: succeed(True),
            disk_quota_mb=1,
        )
        self.runtime.prepare()
        self.successResultOf(docker.ensure_network("director-sites"))
        self.addCleanup(self.runtime.unfollow)
        self.apply(HostedSite(id=7, name="quota7", type="static"))
        self.disk = DiskUsage(
            self.reactor, InlineRunner(), lambda: list(self.runtime.sites), self.paths.site_dir
        )
        self.disk.start()
        self.addCleanup(self.disk.stop)
        api = OrchestratorAPI(self.runtime, InlineRunner(), reactor=self.reactor, disk=self.disk)
        self.http: Any = StubTreq(api.app.resource())

    def apply(self, site: HostedSite) -> None:
        d = self.runtime.apply(site)
        for _ in range(50):
            self.reactor.advance(0.1)
        self.successResultOf(d)

    def put(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        response = self.successResultOf(
            self.http.put(f"http://o/v1/sites/7/files/{path}", data=body)
        )
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_write_over_quota_is_refused_and_changes_nothing(self) -> None:
        code, body = self.put("public/a.bin", b"x" * 600_000)
        self.assertEqual(code, 200, body)
        self.assertGreater(body["disk_usage_bytes"], 600_000)
        code, body = self.put("public/b.bin", b"y" * 600_000)
        self.assertEqual((code, body["error"]), (413, "quota_exceeded"))
        self.assertIn("public/b.bin", body["message"])
        self.assertFalse((self.paths.site_dir(7) / "public" / "b.bin").exists())
        # replacing with something smaller still works, over quota or not
        code, body = self.put("public/a.bin", b"small")
        self.assertEqual(code, 200, body)

    def test_a_bigger_quota_lets_the_write_through(self) -> None:
        self.put("public/a.bin", b"x" * 600_000)
        self.assertEqual(self.put("public/b.bin", b"y" * 600_000)[0], 413)
        self.apply(HostedSite(id=7, name="quota7", type="static", limits=Limits(disk_quota_mb=5)))
        code, body = self.put("public/b.bin", b"y" * 600_000)
        self.assertEqual(code, 200, body)
        listing = self.successResultOf(self.http.get("http://o/v1/disk"))
        sites = json.loads(self.successResultOf(listing.content()))["sites"]
        self.assertEqual(sites[0]["id"], 7)
        self.assertEqual(sites[0]["disk_quota_bytes"], 5 * MB)
        self.assertGreater(sites[0]["disk_usage_bytes"], 1_200_000)

    def test_files_written_elsewhere_count_once_measured(self) -> None:
        """What the site's processes or SFTP wrote counts from the next measurement on."""
        (self.paths.site_dir(7) / "private" / "cache").write_bytes(os.urandom(2 * MB))
        self.assertEqual(self.put("public/before.txt", b"x")[0], 200)  # not measured yet
        self.successResultOf(self.disk.sweep())
        response = self.successResultOf(self.http.put("http://o/v1/sites/7/files/public/d/"))
        self.assertEqual(response.code, 413)
        self.assertEqual(self.put("public/tiny.txt", b"x")[0], 413)
        self.assertFalse((self.paths.site_dir(7) / "public" / "d").exists())

    def test_a_new_site_is_measured_soon_after_it_is_applied(self) -> None:
        response = self.successResultOf(
            self.http.put("http://o/v1/sites/8", json={"name": "new8", "type": "static"})
        )
        self.assertEqual(response.code, 200)
        self.assertIsNone(self.disk.used(8))
        self.reactor.advance(2)
        self.assertGreater(self.disk.used(8) or 0, 0)
