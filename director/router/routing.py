"""
The router's state: which sites and custom domains its front nginx serves.

L{Router} owns the site table. A change is checked (L{director.router.domains}), reserved
in the table at once (so two requests cannot claim one domain), written to nginx through
the checked, rolled-back, coalesced L{NginxConfigDirectory}, then saved to C{sites.json};
if nginx refuses it, the table goes back to what it was. Changes to one site are applied one
at a time; different sites proceed concurrently and share reloads.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from director.common.atomic import atomic_write
from director.common.errors import StartupError
from director.common.nginx import NginxError, NginxPaths
from director.common.threads import Runner
from director.router.certificates import CertificateKeeper
from director.router.dashboard_front import (
    DASHBOARD_FILE,
    DASHBOARD_OWNER,
    is_local_name,
    render_dashboard,
)
from director.router.domains import (
    RequestError,
    SiteEntry,
    SiteTable,
    parse_site_request,
    validate_site_name,
)
from director.router.front_nginx_config import (
    FrontSettings,
    render_main,
    render_site,
    render_upstream,
    site_file,
    upstream_file,
)
from director.router.layout import RouterLayout
from director.router.path_hosts import PATH_HOST_OWNER, path_host_file, render_path_host
from director.router.tls import stapling_possible


class ConfigApplier(Protocol):
    """Applies per-site nginx files (L{director.common.nginx.NginxConfigDirectory})."""

    def apply(self, changes: Mapping[str, str | None]) -> Deferred[None]: ...


class Router:
    log = Logger()

    def __init__(
        self,
        settings: FrontSettings,
        layout: RouterLayout,
        nginx: ConfigApplier,
        files: Runner,
        keeper: CertificateKeeper | None = None,
        table: SiteTable | None = None,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self._nginx = nginx
        self._files = files
        self._keeper = keeper
        self._table = table if table is not None else SiteTable()
        self._locks: dict[str, DeferredLock] = {}
        self._released: dict[str, str] = {}
        #: the OCSP responder of the dashboard certificate given in the config, if any
        self.dashboard_ocsp: str | None = None
        if keeper is not None:
            keeper.attach(self._refresh_domain)
            keeper.set_domains(self._owners())

    @property
    def table(self) -> SiteTable:
        return self._table

    @property
    def keeper(self) -> CertificateKeeper | None:
        return self._keeper

    # Reading.

    def site_json(self, name: str) -> dict[str, Any] | None:
        entry = self._table.get(name)
        if entry is None:
            return None
        return {
            "site": entry.to_json(self.settings.sites_domain),
            "certificates": {
                d: self.certificate_json(d)
                for d in (*entry.hosts, *filter(None, [entry.path_host]))
            },
        }

    def sites_json(self) -> dict[str, Any]:
        return {
            "sites": [
                e.to_json(self.settings.sites_domain) for _, e in sorted(self._table.sites.items())
            ]
        }

    def certificate_json(self, domain: str) -> dict[str, Any] | None:
        owner = self._table.owner(domain)
        if owner is None and domain in self._table.path_hosts:
            owner = PATH_HOST_OWNER
        if owner is None:
            dashboard = self._acme_dashboard_host()
            if dashboard is None or domain != dashboard or self._keeper is None:
                return None
            status = self._keeper.status(domain)
            return status.to_json() if status is not None else None
        status = self._keeper.status(domain) if self._keeper is not None else None
        if status is None:
            detail = (
                "ACME is not configured (router.acme_directory_url); served over HTTP"
                if self._keeper is None
                else "no CA issues certificates for names under .localhost; served over HTTP"
            )
            return {"domain": domain, "site": owner, "state": "disabled", "detail": detail}
        return status.to_json()

    def certificates_json(self) -> dict[str, Any]:
        return {
            "acme": self._keeper is not None,
            "certificates": {
                d: self.certificate_json(d)
                for d in sorted(self._table.hosts | self._table.path_hosts)
            },
        }

    # Changing.

    async def put_site(self, name: object, body: object) -> dict[str, Any]:
        """Set a site's custom domains (the whole list), body limit and upstream; idempotent."""
        entry = parse_site_request(
            name, body, self.settings.sites_domain, self.settings.max_body_size
        )
        dashboard = self.settings.dashboard
        if dashboard is not None and dashboard.host in (*entry.hosts, entry.path_host):
            raise RequestError(
                409, "domain_taken", f"{dashboard.host} is the dashboard's host, not a site's"
            )
        async with self._lock(entry.name):
            previous = self._table.get(entry.name)
            self._check_released(entry)
            self._table = self._table.with_site(entry)  # 409 if a domain is taken
            with self._releasing(entry.name, previous, entry.hosts):
                try:
                    await self._nginx.apply(self._changes(entry.name, previous, entry))
                except NginxError as e:
                    self._table = self._table.restored(entry.name, previous)
                    raise self._refused(e) from None
            await self._committed()
        result = self.site_json(entry.name)
        assert result is not None
        return result

    async def remove_site(self, name: object) -> bool:
        """Stop serving a site and its domains; C{False} if there was no such site."""
        site = validate_site_name(name, self.settings.sites_domain)
        async with self._lock(site):
            previous = self._table.get(site)
            if previous is None:
                return False
            self._table = self._table.without(site)
            with self._releasing(site, previous, ()):
                try:
                    await self._nginx.apply(self._changes(site, previous, None))
                except NginxError as e:
                    self._table = self._table.restored(site, previous)
                    raise self._refused(e) from None
            await self._committed()
        return True

    def _changes(
        self, name: str, previous: SiteEntry | None, entry: SiteEntry | None
    ) -> dict[str, str | None]:
        """
        The files that make site C{name} served as C{entry} (None: not at all), given the
        table already holds the change: its upstream's block (written by every site using
        it, the same text each time), its own file, and the block of the upstream it left
        if no site uses that one any more. In that order, so that a batch nginx checks file
        by file never has a site without its upstream.
        """
        changes: dict[str, str | None] = {}
        if entry is not None and entry.upstream is not None:
            changes[upstream_file(entry.upstream)] = render_upstream(entry.upstream)
        changes[site_file(name)] = self.render(entry) if entry is not None else None
        shared = {h for e in (previous, entry) if e is not None and (h := e.path_host)}
        for host in sorted(shared):
            changes[path_host_file(host)] = self.render_path_host(host)
        left = previous.upstream if previous is not None else None
        if left is not None and left not in self._table.upstreams:
            changes[upstream_file(left)] = None
        return changes

    def render(self, entry: SiteEntry) -> str:
        keeper = self._keeper
        if keeper is None:
            return render_site(entry, self.settings, self.layout, {})
        installed = keeper.installed
        secured = {d: installed[d] for d in entry.hosts if d in installed}
        responders = {d: url for d in secured if (url := keeper.ocsp_responder(d)) is not None}
        return render_site(entry, self.settings, self.layout, secured, responders)

    def render_path_host(self, host: str) -> str | None:
        """The file of path host C{host} (None: no site is under it any more)."""
        sites = self._table.under(host)
        if not sites:
            return None
        keeper = self._keeper
        version = keeper.installed.get(host) if keeper is not None else None
        if keeper is None or version is None:
            return render_path_host(host, sites, self.settings, self.layout)
        certificate = (
            str(self.layout.installed_cert(host, version)),
            str(self.layout.installed_key(host, version)),
        )
        stapling = stapling_possible(keeper.ocsp_responder(host), self.settings.resolvers)
        return render_path_host(host, sites, self.settings, self.layout, certificate, stapling)

    def _check_released(self, entry: SiteEntry) -> None:
        """Refuse (409) a domain that another site is giving up in a change not yet live."""
        for domain in entry.hosts:
            holder = self._released.get(domain)
            if holder is not None and holder != entry.name:
                raise RequestError(
                    409, "domain_taken", f"{domain} is still a domain of site {holder!r}"
                )

    @contextmanager
    def _releasing(
        self, site: str, previous: SiteEntry | None, keeping: Iterable[str]
    ) -> Iterator[None]:
        """
        Keep the domains C{site} is giving up reserved until nginx has taken the change: if
        nginx refuses it, the site gets them back, so nobody else may have taken them.
        """
        released = set(previous.hosts if previous else ()) - set(keeping)
        for domain in released:
            self._released[domain] = site
        try:
            yield
        finally:
            for domain in released:
                self._released.pop(domain, None)

    def _lock(self, site: str) -> DeferredLock:
        return self._locks.setdefault(site, DeferredLock())

    def _owners(self) -> dict[str, str]:
        owners = {d: e.name for e in self._table.sites.values() for d in e.domains}
        # A URL format's host gets its certificate too, unless no CA would issue one for it.
        for entry in self._table.sites.values():
            host = entry.url_host
            if host is not None and not is_local_name(host):
                owners.setdefault(host, PATH_HOST_OWNER if entry.url_path else entry.name)
        dashboard = self._acme_dashboard_host()
        if dashboard is not None:
            owners[dashboard] = DASHBOARD_OWNER
        return owners

    def _acme_dashboard_host(self) -> str | None:
        """The dashboard host, if its certificate comes from ACME."""
        dashboard = self.settings.dashboard
        if dashboard is None or self._keeper is None or not dashboard.wants_acme:
            return None
        return dashboard.host

    def render_dashboard(self) -> str | None:
        """The dashboard host's file (None: this router does not serve it)."""
        front = self.settings.dashboard
        if front is None:
            return None
        certificate = front.given_certificate
        responder = self.dashboard_ocsp
        keeper = self._keeper
        if certificate is None and keeper is not None and front.wants_acme:
            version = keeper.installed.get(front.host)
            if version is not None:
                certificate = (
                    str(self.layout.installed_cert(front.host, version)),
                    str(self.layout.installed_key(front.host, version)),
                )
                responder = keeper.ocsp_responder(front.host)
        return render_dashboard(
            front,
            self.settings.http_listen,
            self.settings.https_listen,
            self.settings.https_port,
            str(self.layout.webroot),
            certificate,
            stapling_possible(responder, self.settings.resolvers),
        )

    async def _committed(self) -> None:
        """After nginx took a change: save the table; drop certificates of removed domains."""
        data = json.dumps(self._table.to_json(), indent=1).encode("utf-8")
        await self._files.run(atomic_write, self.layout.site_table, data, 0o644, durable=True)
        if self._keeper is not None:
            removed = self._keeper.set_domains(self._owners())
            await self._keeper.forget(removed)

    def _refused(self, error: NginxError) -> RequestError:
        self.log.warn("nginx refused a site change: {output}", output=error.output)
        return RequestError(
            500, "nginx_rejected", f"nginx refused the configuration: {error.output or error}"
        )

    async def _refresh_domain(self, domain: str) -> None:
        """Re-apply the site of C{domain} (its certificate changed)."""
        if domain == self._acme_dashboard_host():
            async with self._lock(DASHBOARD_OWNER):
                await self._nginx.apply({DASHBOARD_FILE: self.render_dashboard()})
            return
        if domain in self._table.path_hosts:
            await self._nginx.apply({path_host_file(domain): self.render_path_host(domain)})
            return
        owner = self._table.owner(domain)
        if owner is None:
            return
        async with self._lock(owner):
            entry = self._table.get(owner)
            if entry is not None and domain in entry.hosts:
                await self._nginx.apply({site_file(owner): self.render(entry)})

    # Start-up (blocking, before nginx runs).

    def prepare(self) -> None:
        """
        Write the whole front configuration from the table: nginx.conf, one file per site
        (files of sites no longer in the table are removed), using certificates already
        installed on this machine.
        """
        paths = NginxPaths(self.layout.nginx_prefix)
        paths.create()
        if self._keeper is not None:
            self._keeper.store.prepare()
            self._keeper.installed_files.prepare()
            self._keeper.seed(self._keeper.installed_files.scan(set(self._owners())))
            _warn_unless_world_readable(self.layout.challenge_dir, self.log)
        else:
            self.layout.challenge_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(paths.conf, render_main(self.settings, self.layout), 0o644)
        wanted = {upstream_file(a): render_upstream(a) for a in self._table.upstreams}
        wanted |= {site_file(name): self.render(e) for name, e in self._table.sites.items()}
        for host in self._table.path_hosts:
            text = self.render_path_host(host)
            assert text is not None
            wanted[path_host_file(host)] = text
        dashboard = self.render_dashboard()
        if dashboard is not None:
            wanted[DASHBOARD_FILE] = dashboard
        for path in paths.sites.glob("*.conf"):
            if path.name not in wanted:
                path.unlink()
        for name, text in wanted.items():
            atomic_write(paths.sites / name, text, 0o644)


def load_table(path: Path, sites_domain: str, default_size: str, log: Logger) -> SiteTable:
    """The saved site table; entries that no longer pass the checks are skipped, loudly."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SiteTable()
    except (OSError, ValueError) as e:
        raise StartupError(f"{path}: cannot read the router's site table: {e}") from None
    sites = data.get("sites") if isinstance(data, dict) else None
    if not isinstance(sites, dict):
        raise StartupError(f"{path}: not a router site table")
    table = SiteTable()
    for name, body in sites.items():
        try:
            table = table.with_site(parse_site_request(name, body, sites_domain, default_size))
        except RequestError as e:
            log.warn("{path}: skipping site {name!r}: {error}", path=path, name=name, error=e)
    return table


def _warn_unless_world_readable(directory: Path, log: Logger) -> None:
    """nginx's workers (nobody) serve the challenge files: every parent must be traversable."""
    for path in [directory, *directory.parents]:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return
        if not mode & stat.S_IXOTH:
            log.warn(
                "{path} is not traversable by other users, so nginx cannot serve ACME "
                "challenges from {directory}",
                path=path,
                directory=directory,
            )
            return
