"""Composition root of the orchestrator."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from director.common.atomic import atomic_write
from director.common.config import Config
from director.common.errors import StartupError
from director.common.keys import load_public_keys
from director.common.loops import LoopService
from director.common.nginx import NginxConfigDirectory, NginxPaths
from director.common.restic import Restic, settings_from_config
from director.common.service import guarded_http_service
from director.common.threads import BlockingPool
from director.common.tokens import TokenVerifier
from director.orchestrator.backups import SiteBackups
from director.orchestrator.bundled_databases import (
    BundledDatabase,
    bundled_settings,
    password_file,
)
from director.orchestrator.disk import DiskUsage
from director.orchestrator.docker_gateway import BuildLimits, DockerGateway, IDockerGateway
from director.orchestrator.docker_tls import docker_tls
from director.orchestrator.files import FileLimits
from director.orchestrator.firewall import IFirewall, IptablesFirewall
from director.orchestrator.metrics import OrchestratorMetrics
from director.orchestrator.monitor import DirectoryMonitor
from director.orchestrator.nginx_config import PAGES, main_config
from director.orchestrator.runtime import RuntimePaths, SiteRuntime
from director.orchestrator.site_nginx import SiteNginxFiles, StagedNginx, sync_staging
from director.orchestrator.thread_stream import Streams
from director.orchestrator.web import OrchestratorAPI

log = Logger()


def _check_reachable_by_nginx(path: Path) -> None:
    """nginx workers run as nobody: every directory above the sites must let them through."""
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            raise StartupError(
                f"{parent}: nginx workers (user nobody) cannot enter this directory, so sites "
                f"under {path} cannot be served; run `chmod o+x {parent}` or move the state "
                "directory (director.state_dir)"
            )


class _FollowTasks(Service):
    """
    Connects the runtime to Docker once the reactor runs and keeps nginx following the
    sites' tasks until the service stops. Failures are logged, not fatal: the API still
    serves files and static sites while Docker is away, and the reconcile loop retries.
    """

    def __init__(self, runtime: SiteRuntime) -> None:
        self._runtime = runtime

    def startService(self) -> None:
        super().startService()
        self._runtime.follow()
        d = Deferred.fromCoroutine(self._runtime.start())
        d.addErrback(lambda f: log.failure("orchestrator could not reach Docker", f))

    def stopService(self) -> None:
        super().stopService()
        self._runtime.unfollow()


def build_service(
    reactor: Any,
    config: Config,
    docker: IDockerGateway | None = None,
    firewall: IFirewall | None = None,
) -> MultiService:
    """The orchestrator: its nginx, the site runtime, and its guarded API and websockets."""
    top = MultiService()
    top.setName("orchestrator")
    section = config.orchestrator
    state = config.director.state_dir
    paths = RuntimePaths(state)
    nginx_paths = NginxPaths(paths.nginx)

    def render_main(site_files: list[Path] | None = None) -> str:
        return main_config(
            nginx_paths.prefix,
            f"{section.host}:{section.nginx_port}",
            config.director.sites_domain,
            paths.hosts,
            nginx_paths.sites,
            workers=min(4, os.cpu_count() or 1),
            site_files=site_files,
        )

    try:
        nginx_paths.create()
        pages = paths.pages / "__director"
        pages.mkdir(parents=True, exist_ok=True)
        for name, text in PAGES.items():
            (pages / name).write_text(text)
        # whole or not at all: nginx's own service may start nginx as soon as it is there
        atomic_write(nginx_paths.conf, render_main())
    except OSError as e:
        raise StartupError(
            f"{paths.nginx}: cannot write the orchestrator's nginx config: {e}"
        ) from None
    docker_pool = BlockingPool(reactor, "docker", 4, timeout=300)
    # Builds take minutes: threads of their own, so they never hold up other Docker calls.
    builds_pool = BlockingPool(
        reactor, "image-builds", section.max_builds, timeout=section.build_timeout + 60
    )
    files_pool = BlockingPool(reactor, "site-files", 4, timeout=300)
    # Whole-site archives take as long as the other end reads or sends: two threads of
    # their own, without a time limit (a client that goes away stops the work).
    archives_pool = BlockingPool(reactor, "site-archives", 2)
    archives_pool.setServiceParent(top)
    streams = Streams()  # added after its pool, so stopped before it: no worker waits on
    streams.setServiceParent(top)  # a reactor that is joining it
    docker_pool.setServiceParent(top)
    builds_pool.setServiceParent(top)
    files_pool.setServiceParent(top)
    if firewall is None and section.sites_firewall:
        # one thread: changes to the firewall never race each other
        firewall_pool = BlockingPool(reactor, "firewall", 1, timeout=120)
        firewall_pool.setServiceParent(top)
        firewall = IptablesFirewall(firewall_pool)
    staged = paths.nginx / "staged"
    try:
        sync_staging(staged, nginx_paths.sites)
    except OSError as e:
        raise StartupError(f"{staged}: cannot stage the nginx site files: {e}") from None
    nginx = StagedNginx(reactor, nginx_paths, "orchestrator", files_pool, render_main, staged)
    nginx_directory = NginxConfigDirectory(reactor, staged, nginx, files_pool)
    nginx.setServiceParent(top)
    runtime = SiteRuntime(
        reactor,
        docker
        or DockerGateway(
            docker_pool,
            builds=BuildLimits(
                builds_pool,
                section.build_timeout,
                section.build_memory_mb * 1024 * 1024,
                section.build_proxy,
            ),
            docker_url=section.docker_url,
            manager_url=section.swarm_manager_url,
            node=section.node,
            tls=docker_tls(section),
        ),
        SiteNginxFiles(nginx_directory, nginx),
        files_pool,
        paths,
        listen=f"{section.host}:{section.nginx_port}",
        sites_domain=config.director.sites_domain,
        network=section.sites_network,
        subnet=section.sites_subnet,
        file_limits=FileLimits(max_read_bytes=section.max_download_mb * 1024 * 1024),
        firewall=firewall if section.sites_firewall else None,
        blocked=tuple(n for n in re.split(r"[,\s]+", section.sites_blocked) if n),
        ready_timeout=section.ready_timeout,
        disk_quota_mb=section.disk_quota_mb,
    )
    runtime.prepare()
    _check_reachable_by_nginx(paths.sites)
    _FollowTasks(runtime).setServiceParent(top)
    manager_key = load_public_keys(config.auth.keys_dir).get("manager")
    tokens = TokenVerifier(manager_key, reactor) if manager_key is not None else None
    databases_pool = BlockingPool(reactor, "databases", 4, timeout=400)
    databases_pool.setServiceParent(top)
    for server in bundled_settings(config):
        BundledDatabase(
            reactor, server, password_file(state, server.kind), files_pool
        ).setServiceParent(top)
    monitor = DirectoryMonitor(reactor)
    monitor.setServiceParent(top)
    # one thread: measuring a big site never holds up file requests, nor the disk
    disk_pool = BlockingPool(reactor, "disk-usage", 1, timeout=1800)
    disk_pool.setServiceParent(top)
    disk = DiskUsage(
        reactor, disk_pool, lambda: list(runtime.sites), paths.site_dir, section.disk_interval
    )
    LoopService(disk).setServiceParent(top)
    backups = SiteBackups(
        reactor,
        Restic(reactor, settings_from_config(config)),
        state,
        files_pool,
        concurrency=config.backup.concurrency,
    )
    api = OrchestratorAPI(
        runtime,
        files_pool,
        tokens,
        databases_pool,
        reactor,
        monitor=monitor,
        build_memory_mb=section.build_memory_mb,
        disk=disk,
        backups=backups,
        metrics=OrchestratorMetrics(runtime, nginx_directory),
        archives=archives_pool,
        streams=streams,
    )
    guarded_http_service(
        reactor, config, "orchestrator", "API", api.app.resource()
    ).setServiceParent(top)
    return top
