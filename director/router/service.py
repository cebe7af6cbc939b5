"""Composition root of the router."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.logger import Logger

from director.common.config import Config
from director.common.errors import StartupError
from director.common.nginx import (
    NginxConfigDirectory,
    NginxPaths,
    NginxProcess,
    check_blocking,
)
from director.common.service import guarded_http_service
from director.common.threads import BlockingPool
from director.router.certificates import CertificateKeeper
from director.router.dashboard_front import check_given_certificate
from director.router.front_nginx_config import FrontSettings
from director.router.issuer import ACMEClient
from director.router.layout import RouterLayout
from director.router.metrics import RouterMetrics
from director.router.renewal import DAY, RenewalPolicy
from director.router.routing import Router, load_table
from director.router.tls import certificate_file_responder, system_nameservers
from director.router.web import RouterAPI

log = Logger()

# How long one order may take in the ACME pool before the router stops waiting for it.
ACME_ORDER_DEADLINE = 120.0


class FrontConfiguration(Service):
    """Writes the front nginx's whole configuration before nginx starts (and checks it)."""

    def __init__(self, router: Router, nginx: NginxProcess | None) -> None:
        self._router = router
        self._nginx = nginx

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            self._router.prepare()
        except OSError as e:
            raise StartupError(f"router: cannot write the front nginx configuration: {e}") from e
        if self._nginx is not None:
            _check_synchronously(self._nginx.paths)
            if self._nginx.running_pid() is None and not self._nginx.supervised:
                # An nginx left running by an earlier router holds the ports: it is adopted.
                # (A supervised one may be starting now, its service having seen the file.)
                _check_ports(self._router.settings)


class StartWhenRunning(Service):
    """
    Starts C{child} (the front nginx) once the reactor runs. twistd starts services before
    it installs its signal handlers; a SIGTERM in between would kill the daemon outright,
    without the deliberate stop that ends nginx.
    """

    def __init__(self, reactor: Any, child: Service) -> None:
        self._reactor = reactor
        self._child = child

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._start)

    def _start(self) -> None:
        if not self.running or self._child.running:
            return
        try:
            self._child.privilegedStartService()
            self._child.startService()
        except Exception:
            log.failure("router: the front nginx did not start")

    def stopService(self) -> Any:
        super().stopService()
        if self._child.running:
            return self._child.stopService()
        return None


def _check_ports(settings: FrontSettings) -> None:
    """
    nginx cannot bind a port that something else holds (often a system nginx or Apache on
    port 80); say so in one line, naming the setting, instead of leaving a dead child.
    """
    for address, key in [(a, "router.http_port") for a in settings.http_listen] + [
        (a, "router.https_port") for a in settings.https_listen
    ]:
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"  # noqa: S104 (nginx's own default)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((host, int(port)))
            except OSError as e:
                raise StartupError(
                    f"router front nginx: cannot listen on {address}: {e.strerror or e} "
                    f"(stop whatever uses it, or set {key} in the config)"
                ) from None


def _check_synchronously(paths: NginxPaths) -> None:
    """`nginx -t` at start-up: a broken configuration stops the router with nginx's words."""
    check_blocking(paths, "router front")


def _has_ipv6() -> bool:
    try:
        return bool(Path("/proc/net/if_inet6").read_text().strip())
    except OSError:
        return False


def build_service(reactor: Any, config: Config, clock: IReactorTime | None = None) -> MultiService:
    """
    The router: its guarded API on router.host:port, the front nginx (a child process) and,
    when ACME is configured, the certificate keeper. C{clock} schedules renewals and
    retries (the reactor unless a test passes its own).
    """
    top = MultiService()
    top.setName("router")
    section = config.router
    layout = RouterLayout.from_config(config)
    settings = FrontSettings.from_config(
        config,
        ipv6=_has_ipv6(),
        resolvers=system_nameservers(),
        sites_certificate_ocsp=(
            certificate_file_responder(section.sites_certificate)
            if section.sites_certificate
            else None
        ),
    )

    files = BlockingPool(reactor, "router-files", 1, timeout=60)
    files.setServiceParent(top)
    paths = NginxPaths(layout.nginx_prefix)
    nginx = NginxProcess(reactor, paths, "router front")
    directory = NginxConfigDirectory(reactor, paths.sites, nginx, files)

    keeper = None
    if section.acme_directory_url:
        acme_pool = BlockingPool(
            reactor, "router-acme", 2, timeout=ACME_ORDER_DEADLINE + 2 * section.acme_timeout
        )
        acme_pool.setServiceParent(top)
        client = ACMEClient(
            section.acme_directory_url,
            section.acme_email,
            layout.account_key,
            ca_bundle=section.acme_ca_bundle,
            timeout=section.acme_timeout,
            deadline=ACME_ORDER_DEADLINE,
        )
        policy = RenewalPolicy(
            renew_before=section.renew_before_days * DAY,
            retry_initial=section.acme_retry_initial,
            retry_max=max(section.acme_retry_max, section.acme_retry_initial),
        )
        keeper = CertificateKeeper(
            clock if clock is not None else reactor, files, acme_pool, layout, client, policy
        )

    table = load_table(layout.site_table, settings.sites_domain, settings.max_body_size, log)
    router = Router(settings, layout, directory, files, keeper, table)
    if settings.dashboard is not None:
        router.dashboard_ocsp = check_given_certificate(settings.dashboard)
    # A reactor that cannot run processes (a test's memory reactor) gets no front nginx.
    runs_nginx = IReactorProcess.providedBy(reactor)
    FrontConfiguration(router, nginx if runs_nginx else None).setServiceParent(top)
    if runs_nginx:
        StartWhenRunning(reactor, nginx).setServiceParent(top)
    else:
        log.warn("router: this reactor cannot run processes; the front nginx is not started")
    if keeper is not None:
        keeper.setServiceParent(top)
    guarded_http_service(
        reactor,
        config,
        "router",
        "API",
        RouterAPI(router, RouterMetrics(router, directory)).app.resource(),
    ).setServiceParent(top)
    return top
