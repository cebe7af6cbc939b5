"""
The site runtime against the fake Docker, a fake clock and a stand-in nginx: nginx follows a
site's tasks after Docker events and after the periodic reconcile; refreshes of one site
coalesce; the site's passwd and group files are made and mounted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import DeferredLock, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from director.common.nginx import NginxConfigDirectory
from director.common.threads import InlineRunner
from director.orchestrator.docker_gateway import DockerError
from director.orchestrator.runtime import NotReady, RuntimePaths, SiteRuntime
from director.orchestrator.sites import (
    HostedSite,
    Limits,
    identity_files,
    service_spec,
    terminal_container_spec,
)
from director.testing.fake_docker import FakeDockerGateway

NETWORK = "director-sites"


class ThreadedMemoryReactor(MemoryReactorClock):
    """A memory reactor that also takes calls "from threads" (runs them at once)."""

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class AcceptingNginx:
    """Stands in for NginxProcess: every configuration passes the check."""

    def __init__(self) -> None:
        self.reloads = 0

    async def check(self) -> None:
        return None

    def reload(self) -> None:
        self.reloads += 1


class RuntimeTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadedMemoryReactor()
        self.docker = FakeDockerGateway(images=("director/python:3",))
        base = Path(self.mktemp())
        self.paths = RuntimePaths(base)
        self.nginx_dir = base / "nginx-sites"
        self.nginx_dir.mkdir(parents=True)
        self.nginx = AcceptingNginx()
        self.not_listening: set[str] = set()
        self.runtime = SiteRuntime(
            self.reactor,
            self.docker,
            NginxConfigDirectory(
                self.reactor, self.nginx_dir, cast(Any, self.nginx), InlineRunner()
            ),
            InlineRunner(),
            self.paths,
            listen="127.0.0.1:8180",
            sites_domain="sites.test",
            network=NETWORK,
            reconcile_interval=30,
            follow_timeout=2,
            ready_check=lambda address, port: succeed(address not in self.not_listening),
        )
        self.runtime.prepare()
        self.successResultOf(self.docker.ensure_network(NETWORK))
        self.addCleanup(self.runtime.unfollow)

    def settle(self, seconds: float = 0.1) -> None:
        """Let the nginx batch delay and short polls pass."""
        for _ in range(int(seconds / 0.05) + 1):
            self.reactor.advance(0.05)

    def add_dynamic(self, site_id: int = 5) -> HostedSite:
        site = HostedSite(
            id=site_id, name=f"dyn{site_id}", type="dynamic", image="director/python:3"
        )
        d = self.runtime.apply(site)
        self.settle()
        self.successResultOf(d)
        return site

    def running(self, site: HostedSite) -> list[Any]:
        tasks = self.successResultOf(self.docker.tasks(site.service_name, NETWORK))
        return [t for t in tasks if t.state == "running"]

    def config(self, site: HostedSite) -> str:
        return (self.nginx_dir / f"site-{site.id}.conf").read_text()

    def count_task_reads(self) -> list[str]:
        calls: list[str] = []
        original = self.docker.tasks

        def tasks(name: str, network: str) -> Any:
            calls.append(name)
            return original(name, network)

        self.docker.tasks = tasks  # type: ignore[method-assign]
        return calls


class FollowTasksTests(RuntimeTestCase):
    def test_crashed_task_followed(self) -> None:
        """A task that dies and is replaced elsewhere is served at its new address."""
        site = self.add_dynamic()
        before = self.runtime.upstreams[site.id]
        self.runtime.follow()
        self.docker.crash_task(site.service_name)
        self.settle()
        after = self.runtime.upstreams[site.id]
        self.assertNotEqual(after, before)
        self.assertEqual(after, [t.address for t in self.running(site)])
        self.assertIn(f"server {after[0]}:8080", self.config(site))
        self.assertNotIn(f"server {before[0]}:8080", self.config(site))

    def test_died_container_dropped_at_once(self) -> None:
        """
        A container that died leaves the upstream even while swarm still reports its task
        running: nginx shows "not running" rather than proxying to a dead address.
        """
        site = self.add_dynamic()
        (task,) = self.running(site)
        d = self.runtime.refresh(site.id, died=task.container_id)
        self.settle()
        self.successResultOf(d)
        self.assertEqual(self.runtime.upstreams[site.id], [])
        self.assertIn("This site is not running", self.config(site))

    def test_started_container_awaited(self) -> None:
        """
        After a start event the refresh waits for swarm to report that container's task
        running, then gives up after the follow timeout and serves what runs.
        """
        site = self.add_dynamic()
        d = self.runtime.refresh(site.id, started="not-yet-running")
        self.settle(1.5)
        self.assertNoResult(d)
        self.settle(1)
        self.successResultOf(d)
        self.assertEqual(self.runtime.upstreams[site.id], [t.address for t in self.running(site)])

    def test_refreshes_coalesce(self) -> None:
        """Refreshes queued while the site is busy run once, with every event's hints."""
        site = self.add_dynamic()
        (task,) = self.running(site)
        calls = self.count_task_reads()
        lock = self.runtime._locks.setdefault(site.id, DeferredLock())
        self.successResultOf(lock.acquire())
        waiters = [
            self.runtime.refresh(site.id),
            self.runtime.refresh(site.id, started=task.container_id),
            self.runtime.refresh(site.id, died=task.container_id),
            self.runtime.refresh(site.id),
        ]
        self.assertEqual(calls, [])
        lock.release()
        self.settle()
        for waiter in waiters:
            self.successResultOf(waiter)
        self.assertEqual(calls, [site.service_name])
        self.assertEqual(self.runtime.upstreams[site.id], [])  # the died hint was kept

    def test_refresh_after_one_started_runs_again(self) -> None:
        """An event arriving while a refresh runs queues a new one (nothing is lost)."""
        site = self.add_dynamic()
        first = self.runtime.refresh(site.id, started="not-yet-running")
        self.settle(0.2)
        self.assertNoResult(first)
        self.docker.crash_task(site.service_name)  # not following: no events
        second = self.runtime.refresh(site.id)
        self.settle(3)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(self.runtime.upstreams[site.id], [t.address for t in self.running(site)])

    def test_events_ignored_for_other_sites(self) -> None:
        """Events about static sites or sites this orchestrator does not run read nothing."""
        self.add_dynamic(5)
        static = HostedSite(id=6, name="static6", type="static")
        d = self.runtime.apply(static)
        self.settle()
        self.successResultOf(d)
        self.runtime.follow()
        calls = self.count_task_reads()
        stranger = HostedSite(id=99, name="stranger", type="dynamic", image="director/python:3")
        self.successResultOf(
            self.docker.put_service(service_spec(stranger, Path("/x"), NETWORK, "UTC"))
        )
        self.settle()
        self.assertEqual(calls, [])

    def test_reconcile_catches_missed_events(self) -> None:
        """Every reconcile interval, every dynamic site is refreshed (events may be lost)."""
        site = self.add_dynamic()
        other = self.add_dynamic(7)
        self.runtime.follow()
        self.docker.drop_events = True
        self.docker.crash_task(site.service_name)
        self.docker.crash_task(other.service_name)
        self.settle()
        self.assertNotEqual(
            self.runtime.upstreams[site.id], [t.address for t in self.running(site)]
        )
        self.reactor.advance(30)
        self.settle()
        for s in (site, other):
            self.assertEqual(self.runtime.upstreams[s.id], [t.address for t in self.running(s)])

    def test_reconcile_failure_logged_loop_continues(self) -> None:
        """A Docker failure during a reconcile is logged; the next interval tries again."""
        site = self.add_dynamic()
        self.runtime.follow()
        self.docker.drop_events = True
        self.docker.crash_task(site.service_name)
        original = self.docker.tasks
        self.docker.tasks = lambda name, network: fail(DockerError("dockerd went away"))  # type: ignore[method-assign]
        self.reactor.advance(30)
        self.settle()
        self.assertEqual(len(self.flushLoggedErrors(DockerError)), 1)
        self.docker.tasks = original  # type: ignore[method-assign]
        self.reactor.advance(30)
        self.settle()
        self.assertEqual(self.runtime.upstreams[site.id], [t.address for t in self.running(site)])

    def test_reconcile_makes_a_lost_network_again(self) -> None:
        """
        A sites network that went (a node engine's network store dropped after it died) is
        made again by the next reconcile; while Docker cannot make it, that is a warning
        (no logged error) and the next reconcile tries again.
        """
        self.add_dynamic()
        self.runtime.follow()
        self.docker.networks.clear()
        original = self.docker.ensure_network
        self.docker.ensure_network = lambda name, subnet=None: fail(DockerError("gone"))  # type: ignore[method-assign]
        self.reactor.advance(30)
        self.settle()
        self.assertNotIn(NETWORK, self.docker.networks)
        self.assertEqual(self.flushLoggedErrors(DockerError), [])
        self.docker.ensure_network = original  # type: ignore[method-assign]
        self.reactor.advance(30)
        self.settle()
        self.assertIn(NETWORK, self.docker.networks)

    def test_broken_event_stream_reconciles(self) -> None:
        """When the event stream breaks, every site is looked at without waiting."""
        site = self.add_dynamic()
        self.runtime.follow()
        self.docker.drop_events = True
        self.docker.crash_task(site.service_name)
        self.docker.break_events()
        self.settle()
        self.assertEqual(self.runtime.upstreams[site.id], [t.address for t in self.running(site)])

    def test_unfollow_stops_everything(self) -> None:
        """After unfollow no event is handled and no timer is left behind."""
        site = self.add_dynamic()
        before = self.runtime.upstreams[site.id]
        self.runtime.follow()
        self.runtime.unfollow()
        self.docker.crash_task(site.service_name)
        self.settle()
        self.assertEqual(self.runtime.upstreams[site.id], before)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class IdentityTests(RuntimeTestCase):
    def test_identity_files_name_the_site_user(self) -> None:
        """The passwd entry gives the site's uid a name, its home and a shell."""
        site = HostedSite(id=42, name="blog", type="static")
        files = identity_files(site)
        self.assertIn("site:x:100042:100042:Director site:/site/.home:/bin/bash\n", files["passwd"])
        self.assertTrue(files["passwd"].startswith("root:x:0:0:"))
        self.assertIn("site:x:100042:\n", files["group"])

    def test_specs_mount_identity_read_only(self) -> None:
        """Service and terminal containers get /etc/passwd and /etc/group read-only."""
        site = HostedSite(id=42, name="blog", type="dynamic")
        spec = service_spec(site, Path("/s/42"), NETWORK, "UTC", Path("/id/42"))
        mounts = spec["TaskTemplate"]["ContainerSpec"]["Mounts"]
        for name in ("passwd", "group"):
            self.assertIn(
                {
                    "Type": "bind",
                    "Source": f"/id/42/{name}",
                    "Target": f"/etc/{name}",
                    "ReadOnly": True,
                },
                mounts,
            )
        terminal = terminal_container_spec(site, Path("/s/42"), NETWORK, "UTC", Path("/id/42"))
        self.assertEqual(
            terminal["HostConfig"]["binds"]["/id/42/passwd"], {"bind": "/etc/passwd", "mode": "ro"}
        )

    def test_apply_writes_and_remove_deletes_identity(self) -> None:
        """Applying a site writes its identity files (world-readable); removing deletes them."""
        site = self.add_dynamic(8)
        directory = self.paths.identity_dir(site.id)
        self.assertEqual((directory / "passwd").read_text(), identity_files(site)["passwd"])
        self.assertEqual((directory / "group").stat().st_mode & 0o777, 0o644)
        spec = self.docker.services[site.service_name]["spec"]
        sources = [m.get("Source") for m in spec["TaskTemplate"]["ContainerSpec"]["Mounts"]]
        self.assertIn(str(directory / "passwd"), sources)
        d = self.runtime.remove(site.id)
        self.settle()
        self.assertTrue(self.successResultOf(d))
        self.assertFalse(directory.exists())

    def test_identity_not_rewritten_when_unchanged(self) -> None:
        """
        Re-applying keeps the same files (inode): running containers' bind mounts keep
        pointing at what is on disk.
        """
        site = self.add_dynamic(9)
        path = self.paths.identity_dir(site.id) / "passwd"
        inode = path.stat().st_ino
        self.add_dynamic(9)
        self.assertEqual(path.stat().st_ino, inode)


class ServingTests(RuntimeTestCase):
    def apply(self, site: HostedSite) -> None:
        d = self.runtime.apply(site)
        self.settle()
        self.successResultOf(d)

    def test_new_static_site_gets_a_welcome_page(self) -> None:
        """A new static site's public/ gets an index.html that says how to edit it, once."""
        site = HostedSite(id=11, name="blog", type="static")
        self.apply(site)
        index = self.paths.site_dir(11) / "public" / "index.html"
        text = index.read_text()
        self.assertIn("Welcome to blog", text)
        self.assertIn("public/index.html", text)
        index.unlink()
        self.apply(HostedSite(id=11, name="blog", type="static", limits=Limits(memory_mb=200)))
        self.assertFalse(index.exists())  # the user deleted it: not put back

    def test_files_already_there_are_left_alone(self) -> None:
        public = self.paths.site_dir(12) / "public"
        public.mkdir(parents=True)
        (public / "page.html").write_text("mine")
        self.apply(HostedSite(id=12, name="kept", type="static"))
        self.assertEqual(sorted(p.name for p in public.iterdir()), ["page.html"])

    def test_dynamic_site_gets_no_page(self) -> None:
        self.add_dynamic(13)
        self.assertEqual(list((self.paths.site_dir(13) / "public").iterdir()), [])

    def test_static_link_outlives_the_reload(self) -> None:
        """
        Moving from the static fast path to a file of its own, the site's link stays until
        nginx's reload is surely through (old workers still serve from it), then goes.
        """
        site = HostedSite(id=14, name="moving", type="static")
        self.apply(site)
        link = self.paths.hosts / "moving"
        self.assertTrue(link.is_symlink())
        self.apply(HostedSite(id=14, name="moving", type="static", availability="not-served"))
        self.assertTrue((self.nginx_dir / "site-14.conf").exists())
        self.assertTrue(link.is_symlink())
        self.reactor.advance(5)
        self.settle()
        self.assertFalse(link.exists())

    def test_link_kept_when_back_on_the_fast_path_meanwhile(self) -> None:
        site = HostedSite(id=15, name="back", type="static")
        self.apply(site)
        self.apply(HostedSite(id=15, name="back", type="static", availability="disabled"))
        self.apply(site)
        self.reactor.advance(5)
        self.settle()
        self.assertTrue((self.paths.hosts / "back").is_symlink())
        self.assertFalse((self.nginx_dir / "site-15.conf").exists())

    def docker_away(self) -> None:
        self.docker.tasks = lambda name, network: fail(DockerError("dockerd went away"))  # type: ignore[method-assign]

    def test_died_while_docker_away_shows_not_running(self) -> None:
        """
        A container died and Docker does not answer: its address may go to another
        container, so nginx shows "not running" rather than keep proxying there.
        """
        site = self.add_dynamic()
        (task,) = self.running(site)
        self.docker_away()
        d = self.runtime.refresh(site.id, died=task.container_id)
        self.settle()
        self.failureResultOf(d, DockerError)
        self.assertEqual(self.runtime.upstreams[site.id], [])
        self.assertIn("This site is not running", self.config(site))

    def test_broken_stream_while_docker_away_shows_not_running(self) -> None:
        """The event stream broke and Docker does not answer (dockerd restarting)."""
        site = self.add_dynamic()
        self.runtime.follow()
        self.docker_away()
        self.docker.break_events()
        self.settle()
        self.flushLoggedErrors(DockerError)
        self.assertEqual(self.runtime.upstreams[site.id], [])
        self.assertIn("This site is not running", self.config(site))

    def test_docker_error_alone_keeps_the_upstream(self) -> None:
        """A failed periodic look with nothing suspicious changes nothing."""
        site = self.add_dynamic()
        before = self.runtime.upstreams[site.id]
        self.runtime.follow()
        self.docker_away()
        self.reactor.advance(30)
        self.settle()
        self.assertEqual(len(self.flushLoggedErrors(DockerError)), 1)
        self.assertEqual(self.runtime.upstreams[site.id], before)


class SiteImageTests(RuntimeTestCase):
    """Superseded and orphaned custom images of a site are removed; used ones stay."""

    def build(self, tag: str) -> None:
        self.successResultOf(
            self.docker.build_image("FROM director/python:3\n", tag, lambda _: None)
        )
        self.runtime.image_built(5, tag)

    def apply(self, image: str) -> None:
        site = HostedSite(id=5, name="dyn5", type="dynamic", image=image)
        d = self.runtime.apply(site)
        self.settle()
        self.successResultOf(d)

    def test_superseded_images_removed_after_build_and_switch(self) -> None:
        self.successResultOf(
            self.docker.build_image("FROM director/python:3\n", "director/site-6:1", lambda _: None)
        )
        self.build("director/site-5:1")
        self.apply("director/site-5:1")
        self.build("director/site-5:2")
        # built, not applied yet: the running image and the new one both stay
        self.assertEqual(
            {i for i in self.docker.images if "site-5" in i},
            {"director/site-5:1", "director/site-5:2"},
        )
        self.build("director/site-5:3")  # :2 was never applied and is superseded
        self.assertNotIn("director/site-5:2", self.docker.images)
        self.apply("director/site-5:3")
        self.assertEqual({i for i in self.docker.images if "site-5" in i}, {"director/site-5:3"})
        self.assertIn("director/site-6:1", self.docker.images)  # another site's image

    def test_images_orphaned_by_delete_removed(self) -> None:
        self.build("director/site-5:1")
        self.apply("director/site-5:1")
        self.build("director/site-5:2")
        d = self.runtime.remove(5)
        self.settle()
        self.successResultOf(d)
        self.assertEqual({i for i in self.docker.images if "site-5" in i}, set())
        self.assertIn("director/python:3", self.docker.images)

    def test_image_in_use_retried_later(self) -> None:
        self.build("director/site-5:1")
        self.apply("director/site-5:1")
        # the old image is still used (a stopping container): kept, then taken by a retry
        self.docker.containers["stopping"] = {"id": "c1", "spec": {"Image": "director/site-5:1"}}
        self.build("director/site-5:2")
        self.apply("director/site-5:2")
        self.assertIn("director/site-5:1", self.docker.images)
        del self.docker.containers["stopping"]
        self.reactor.advance(5)
        self.assertNotIn("director/site-5:1", self.docker.images)
        self.runtime.unfollow()
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class GapFreeTests(RuntimeTestCase):
    """Restarts and changes bring the new task in before the old one goes, or undo."""

    def test_spec_starts_first_behind_the_gate(self) -> None:
        """New tasks start before old ones stop and wait at the gate (a health check)."""
        site = HostedSite(id=42, name="blog", type="dynamic")
        spec = service_spec(site, Path("/s/42"), NETWORK, "UTC", Path("/id/42"), Path("/g/42"))
        self.assertEqual(spec["UpdateConfig"]["Order"], "start-first")
        container = spec["TaskTemplate"]["ContainerSpec"]
        self.assertTrue(container["Init"])
        self.assertIn(
            {"Type": "bind", "Source": "/g/42", "Target": "/run/director", "ReadOnly": True},
            container["Mounts"],
        )
        check = container["Healthcheck"]
        self.assertEqual(check["Test"][:3], ["CMD", "sh", "-c"])
        self.assertIn('"/run/director/$h"', check["Test"][3])
        self.assertGreater(check["Timeout"], 86400 * 1_000_000_000)  # later runs sleep a day

    def test_restart_that_never_serves_is_undone(self) -> None:
        """
        When the new task never accepts connections, the service is rolled back, nginx
        keeps the old address, and the error says why, with the new process's log.
        """
        site = self.add_dynamic()
        old = list(self.runtime.upstreams[site.id])
        self.runtime._ready_check = lambda address, port: succeed(address in old)
        d = self.runtime.restart(site.id)
        self.settle(61)
        failure = self.failureResultOf(d, NotReady)
        self.assertIn("did not accept connections on port 8080 within 60 s", str(failure.value))
        self.assertIn("the running one was kept", str(failure.value))
        self.assertIn(f"rollback {site.service_name}", self.docker.calls)
        self.assertEqual(self.runtime.upstreams[site.id], old)
        self.assertIn(f"server {old[0]}:8080", self.config(site))

    def test_restart_serves_the_new_task(self) -> None:
        """A restart whose new task serves moves nginx to it; nothing is rolled back."""
        site = self.add_dynamic()
        old = list(self.runtime.upstreams[site.id])
        d = self.runtime.restart(site.id)
        self.settle()
        status = self.successResultOf(d)
        self.assertNotEqual(status["upstream"], old)
        self.assertEqual(status["upstream"], [t.address for t in self.running(site)])
        self.assertNotIn(f"rollback {site.service_name}", self.docker.calls)
