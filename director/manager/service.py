"""Composition root of the manager."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from director.clients import OrchestratorClient, RouterClient
from director.common.client import ComponentClient, HTTPPoolService
from director.common.config import Config, router_urls
from director.common.errors import StartupError
from director.common.keys import load_private_key
from director.common.loops import LoopService
from director.common.restic import Restic, settings_from_config
from director.common.service import component_signer, guarded_http_service
from director.common.threads import BlockingPool
from director.manager.api import ManagerAPI
from director.manager.backups import BackupRecords, BackupScheduler, ManagerBackup
from director.manager.browser_ws import BrowserSockets
from director.manager.dashboard import GUIDE_DIR, Dashboard
from director.manager.dashboard.guide import Guide
from director.manager.dashboard.metrics import CountingResource, Metrics
from director.manager.dashboard.oidc import OIDCProvider, OIDCSettings
from director.manager.dashboard.queries import DashboardQueries
from director.manager.dashboard.security import LoginThrottle, SignInThrottle, dashboard_origins
from director.manager.disk import DiskPoller
from director.manager.domain_services import ManagerServices
from director.manager.events import IEventBus, MemoryBus, connect_redis_bus
from director.manager.identity import claim_identity
from director.manager.leader import LeaderLease, RedisLeases
from director.manager.mail import NullMailer, SMTPMailer
from director.manager.models import SiteNameRules, UserLimits
from director.manager.operations import OPERATIONS, OperationEngine
from director.manager.orchestrator_pool import OrchestratorPool
from director.manager.passwords import Passwords
from director.manager.placement_store import PlacementStore
from director.manager.proxies import Proxies
from director.manager.ratelimit import Limiter, RateLimiter
from director.manager.reconcile import Reconciler
from director.manager.redis_link import RedisLink
from director.manager.router_pool import RouterPool
from director.manager.schedules import TaskSettings
from director.manager.shared_limits import RedisLoginThrottle, RedisRateLimiter
from director.manager.shell_server import ShellServerAPI
from director.manager.store import Conflict, Store, make_engine, migrate
from director.manager.tasks import TaskScheduler
from director.manager.web import ManagerWeb, PrefixDispatch

log = Logger()


def user_limits(config: Config) -> UserLimits:
    """The manager.max_* settings as the API's limits."""
    m = config.manager
    return UserLimits(
        sites_per_student=m.max_sites_per_student,
        personal_sites_per_user=m.max_personal_sites_per_user,
        dynamic_sites_per_user=m.max_dynamic_sites_per_user,
        domains_per_site=m.max_domains_per_site,
        databases_per_site=m.max_databases_per_site,
        admin_contact=m.admin_contact,
        creation_wait=m.creation_wait,
        names=SiteNameRules.from_config(
            m.reserved_site_names, m.site_name_pattern, m.site_name_rule
        ),
        student_agreement=m.student_agreement,
    )


def task_settings(config: Config) -> TaskSettings:
    """The manager.*task* settings."""
    m = config.manager
    return TaskSettings(
        max_per_site=m.max_tasks_per_site,
        max_timeout=m.task_max_timeout,
        default_timeout=min(m.task_default_timeout, m.task_max_timeout),
        runs_kept=m.task_runs_kept,
        max_output=m.task_output_kb * 1024,
    )


def database_url(config: Config) -> str:
    return config.manager.database_url or f"sqlite:///{config.director.state_dir / 'director.db'}"


@implementer(IEventBus)
class _RedisBusProxy:
    """
    The in-process bus until Redis is connected, then Redis. Subscriptions live here, so
    listeners that subscribed before the switch move to Redis with it.
    """

    def __init__(self) -> None:
        self.target: IEventBus = MemoryBus()
        self._subscriptions: dict[int, tuple[str, Any, Any]] = {}
        self._next = 0

    def switch(self, target: IEventBus) -> None:
        self.target = target
        for key, (channel, listener, unsubscribe) in list(self._subscriptions.items()):
            unsubscribe()
            self._subscriptions[key] = (channel, listener, target.subscribe(channel, listener))

    def publish(self, channel: str, message: dict[str, Any]) -> Deferred[None]:
        return self.target.publish(channel, message)

    def subscribe(self, channel: str, listener: Any) -> Any:
        key = self._next
        self._next += 1
        self._subscriptions[key] = (channel, listener, self.target.subscribe(channel, listener))

        def unsubscribe() -> None:
            entry = self._subscriptions.pop(key, None)
            if entry is not None:
                entry[2]()

        return unsubscribe


class _RedisBusService(Service):
    """Connects the event bus to Redis once the reactor runs (when a Redis URL is set)."""

    def __init__(self, reactor: Any, config: Config, bus: _RedisBusProxy) -> None:
        self._reactor = reactor
        self._config = config
        self._bus = bus

    def startService(self) -> None:
        super().startService()
        url = self._config.manager.redis_url
        if url:
            host, _, port = url[len("redis://") :].partition(":")
            d = Deferred.fromCoroutine(connect_redis_bus(self._reactor, host, int(port)))

            def connected(bus: Any) -> None:
                self._bus.switch(bus)
                log.info("events fan out through Redis at {url}", url=url)

            d.addCallbacks(connected, lambda f: log.failure("cannot connect to Redis", f))


@dataclass
class _SharedState:
    """Write limits, sign-in limits and leases: in Redis (link set) or in this process."""

    link: RedisLink | None
    limiter: Limiter
    throttle: SignInThrottle
    leases: RedisLeases | None


def _shared_state(reactor: Any, config: Config) -> _SharedState:
    m = config.manager
    if not m.redis_url:
        return _SharedState(
            None, RateLimiter(reactor, m.write_rate, m.write_burst), LoginThrottle(reactor), None
        )
    link = RedisLink(reactor, m.redis_url)
    return _SharedState(
        link,
        RedisRateLimiter(link, reactor, m.write_rate, m.write_burst),
        RedisLoginThrottle(link, reactor),
        RedisLeases(link),
    )


def _dns_name(url: str) -> str:
    """The host name of C{url}, or "" if it is an IP address."""
    host = (urlsplit(url).hostname or "").lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return ""


def oidc_callback(config: Config) -> str:
    """
    Where the provider sends browsers back: the dashboard host over HTTPS when the routers
    will have its certificate (one given in the config, or ACME for a name a CA issues:
    not .localhost), since that is where users sign in; else manager.url (one machine).
    """
    host, router = config.manager.dashboard_host, config.router
    local = host == "localhost" or host.endswith(".localhost")
    if router.dashboard_certificate or (router.acme_directory_url and not local):
        secure, _ = dashboard_origins(host, router.http_port, router.https_port)
        return secure.serialize() + "/login/oidc/callback"
    return config.manager.url.rstrip("/") + "/login/oidc/callback"


def _oidc(reactor: Any, config: Config, http: Any) -> OIDCProvider | None:
    m = config.manager
    if not m.oidc_authorize_url:
        return None
    if not (m.oidc_token_url and m.oidc_userinfo_url and m.oidc_client_id):
        raise StartupError(
            "manager.oidc_authorize_url is set: set manager.oidc_token_url, "
            "manager.oidc_userinfo_url and manager.oidc_client_id too"
        )
    settings = OIDCSettings(
        m.oidc_name,
        m.oidc_authorize_url,
        m.oidc_token_url,
        m.oidc_userinfo_url,
        m.oidc_client_id,
        m.oidc_client_secret,
        oidc_callback(config),
        m.oidc_username_claim,
        m.oidc_new_user_role,
        m.oidc_issuer,
        tuple(d for d in re.split(r"[,\s]+", m.oidc_allowed_domains.lower()) if d),
    )
    return OIDCProvider(settings, http, reactor)


def build_service(reactor: Any, config: Config) -> MultiService:
    """The manager: API, shell-server endpoints, operation engine, on manager.host:port."""
    top = MultiService()
    top.setName("manager")
    url = database_url(config)
    try:
        db_engine = make_engine(url)
        migrate(db_engine)
    except Exception as e:
        raise StartupError(f"manager database {url}: cannot open or migrate it: {e}") from None
    db_pool = BlockingPool(reactor, "manager-db", 4, 60)  # SQLite in WAL mode: readers in parallel
    crypto_pool = BlockingPool(reactor, "passwords", 2, 60)
    http = HTTPPoolService(reactor)
    for child in (db_pool, crypto_pool, http):
        child.setServiceParent(top)
    store = Store(db_engine, db_pool, reactor)  # one clock: the store goes by the reactor
    signer = component_signer(reactor, config, "manager")

    def orchestrator_client(url: str) -> OrchestratorClient:
        return OrchestratorClient(
            ComponentClient(reactor, signer, "orchestrator", url, http.http, timeout=60)
        )

    # Every orchestrator of the pool; the configured one is registered when it starts.
    o = config.orchestrator
    orchestrators = OrchestratorPool(
        reactor,
        PlacementStore(db_engine, db_pool, reactor),
        orchestrator_client,
        o.name,
        o.url,
        o.public_nginx or f"127.0.0.1:{o.nginx_port}",
        # Its sites keep the routers' own upstream (router.upstreams) unless public_nginx says.
        routers_default=None if o.public_nginx else f"127.0.0.1:{o.nginx_port}",
    )
    LoopService(orchestrators).setServiceParent(top)
    # Every router (router.urls, or router.url alone): each change goes to all of them.
    router = RouterPool(
        reactor,
        [
            (
                name,
                url,
                RouterClient(
                    ComponentClient(reactor, signer, "router", url, http.http, timeout=60)
                ),
            )
            for name, url in router_urls(config.router.urls, config.router.url)
        ],
    )
    LoopService(router).setServiceParent(top)
    bus = _RedisBusProxy()
    # Held (flocked) for the process's lifetime: a restart takes back its own leases at once.
    identity = claim_identity(config.director.state_dir)
    operations = OperationEngine(
        reactor,
        store,
        orchestrators,
        router,
        bus,
        config.director.sites_domain,
        lease=config.manager.operation_lease,
        identity=identity.name,
        work_dir=config.director.state_dir / "moves",
        url_formats=config.url_formats(),
    )
    scheduler = TaskScheduler(
        reactor,
        store,
        orchestrators,
        task_settings(config),
        operations.identity,
        operations.worker,
        lease=config.manager.operation_lease,
    )
    top.identity = identity  # type: ignore[attr-defined]
    passwords = Passwords(crypto_pool, config.manager.bcrypt_rounds)
    restic = Restic(reactor, settings_from_config(config))
    backup_pool = BlockingPool(reactor, "backups", 2, 3600)
    backup_pool.setServiceParent(top)

    async def _all_sites() -> list[Any]:
        return await store.list_sites(limit=1_000_000)

    backups = BackupScheduler(
        reactor,
        BackupRecords(db_engine, db_pool),
        _all_sites,
        operations.database_host,
        orchestrators,
        ManagerBackup(reactor, restic, config, url, backup_pool),
        restic,
        config.backup,
    )

    async def _restore_site(site_id: int, snapshot: str) -> bool:
        """One site of a whole-installation restore: its restore operation (False: not now)."""
        site = await store.get_site_by_id(site_id)
        if site is None:
            return True  # deleted before the manager's snapshot was taken
        params = {"snapshot": snapshot, "files": True, "path": None, "database": "if_present"}
        if site.database is None:
            params["database"] = False
        try:
            await store.update_site(
                site.id,
                {},
                operation=("restore_backup", OPERATIONS["restore_backup"]),
                params=params,
            )
        except Conflict:
            return False  # another operation of the site runs first
        operations.wake()
        return True

    backups.restore_site = _restore_site
    backups.pending_path = config.director.state_dir / "backups" / "restore-pending.json"
    backups.files = backup_pool
    # Several managers share rate-limit counters and the reconcile's lead through Redis.
    shared = _shared_state(reactor, config)
    if shared.link is not None:
        shared.link.setServiceParent(top)
    proxies = Proxies.from_config(config.manager.trusted_proxies, config.manager.url)
    # The dashboard host as the routers serve it: its pages and websockets come from there.
    public_origins = dashboard_origins(
        config.manager.dashboard_host, config.router.http_port, config.router.https_port
    )
    reauth = timedelta(minutes=config.manager.reauth_minutes)
    # The dashboard's own names: its configured host, and its URL's unless that is an address.
    reserved_hosts = (config.manager.dashboard_host, _dns_name(config.manager.url))
    shell_address = (
        config.shell.public_host or config.manager.dashboard_host,
        config.shell.public_port or config.shell.port,
    )
    # One manager of several leads the background passes: the reconcile and disk use.
    leader = (
        None
        if shared.leases is None
        else LeaderLease(
            reactor, shared.leases, "reconcile", operations.worker, config.manager.leader_lease
        )
    )
    disk = DiskPoller(
        reactor, store, orchestrators, config.manager.disk_poll_interval, leader=leader
    )
    LoopService(disk).setServiceParent(top)
    api = ManagerAPI(
        reactor,
        store,
        operations,
        passwords,
        orchestrators,
        bus,
        config.director.sites_domain,
        signer,
        config.orchestrator.url,
        router,
        shared.limiter,
        services=ManagerServices.build(
            store,
            orchestrators,
            passwords,
            SMTPMailer(
                reactor,
                config.manager.smtp_host,
                config.manager.smtp_port,
                config.manager.mail_from,
            )
            if config.manager.smtp_host
            else NullMailer(),
            user_limits(config),
        ),
        proxies=proxies,
        reauth=reauth,
        reserved_hosts=reserved_hosts,
        shell_address=shell_address,
        disk=disk,
        tasks=scheduler,
        backups=backups,
        url_formats=operations.url_formats,
    )
    shell = ShellServerAPI(
        reactor,
        store,
        passwords,
        load_private_key(config.auth.keys_dir, "manager"),
        orchestrators,
        config.manager.admin_contact,
        operations.wake,
    )
    # The dashboard gets every path no other part claims; websockets are not counted
    # (their requests never finish).
    queries = DashboardQueries(db_engine, db_pool)
    sockets = BrowserSockets(
        reactor,
        store,
        bus,
        signer,
        orchestrators,
        config.manager.url,
        proxies=proxies,
        creation_wait=config.manager.creation_wait,
        public_origins=public_origins,
    )
    metrics = Metrics(reactor, queries, sockets.counts, backups=backups.records.summary)
    dashboard = Dashboard(
        reactor,
        store,
        passwords,
        queries,
        Guide(GUIDE_DIR),
        metrics,
        manager_url=config.manager.url,
        sites_domain=config.director.sites_domain,
        session_lifetime=timedelta(hours=config.manager.session_hours),
        sites_port=config.router.http_port,
        router=router,
        authenticate=api.user,
        oidc=_oidc(reactor, config, http.http),
        proxies=proxies,
        reauth=reauth,
        shell_address=shell_address,
        student_agreement=config.manager.student_agreement,
        placements=orchestrators.records,
        public_origins=public_origins,
        login_throttle=shared.throttle,
        url_formats=operations.url_formats,
    )
    dashboard.backups = backups.records  # type: ignore[attr-defined]  # /admin/backups
    root = PrefixDispatch(CountingResource(dashboard.app.resource(), metrics, "dashboard"))
    root.add(b"/healthz", ManagerWeb().app.resource())
    root.add(b"/api/", CountingResource(api.app.resource(), metrics, "api"))
    root.add(b"/shell-server/", shell.app.resource())
    root.add(b"/ws/", sockets.app.resource())
    reconciler = Reconciler(
        reactor,
        store,
        operations,
        orchestrators,
        router,
        config.manager.reconcile_interval,
        leader=leader,
    )
    if leader is not None and shared.link is not None:
        LoopService(leader).setServiceParent(top)
        shared.link.before_stop.append(leader.release)  # another leads at once
    _RedisBusService(reactor, config, bus).setServiceParent(top)
    # the operation engine and the reconciler are loops like the task and backup schedulers
    LoopService(operations).setServiceParent(top)
    LoopService(reconciler).setServiceParent(top)
    LoopService(scheduler).setServiceParent(top)
    LoopService(backups).setServiceParent(top)
    guarded_http_service(reactor, config, "manager", "web", root).setServiceParent(top)
    top.api = api  # type: ignore[attr-defined]
    top.orchestrators = orchestrators  # type: ignore[attr-defined]
    top.routers = router  # type: ignore[attr-defined]
    top.backups = backups  # type: ignore[attr-defined]
    top.dashboard = dashboard  # type: ignore[attr-defined]
    return top
