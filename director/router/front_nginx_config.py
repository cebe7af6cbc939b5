"""
The front nginx's configuration, rendered from the templates in nginx/ (no I/O beyond
reading the templates).

Values are validated before they get here (L{director.router.domains}); rendering checks
again (L{director.common.nginx_templates}): anything but an integer, a quoted string or a
plain token raises instead of rendering.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from director.common.config import Config
from director.common.nginx import NginxPaths
from director.common.nginx_templates import NGINX_TEMPLATES
from director.router.dashboard_front import DashboardFront
from director.router.domains import SiteEntry
from director.router.layout import RouterLayout
from director.router.tls import stapling_possible


@dataclass(frozen=True)
class FrontSettings:
    """What the front nginx needs from the configuration, as plain values."""

    sites_domain: str
    http_listen: tuple[str, ...]
    https_listen: tuple[str, ...]
    https_port: int
    upstreams: tuple[str, ...]
    max_body_size: str
    sites_certificate: tuple[str, str] | None = None
    workers: str = "auto"
    #: the OCSP responder named by the sites certificate (read at start-up), if any
    sites_certificate_ocsp: str | None = None
    #: name servers for nginx's C{resolver} (the system's), to reach OCSP responders
    resolvers: tuple[str, ...] = ()
    #: the dashboard host and its managers (None: this router does not serve it)
    dashboard: DashboardFront | None = None

    @classmethod
    def from_config(
        cls,
        config: Config,
        ipv6: bool,
        resolvers: tuple[str, ...] = (),
        sites_certificate_ocsp: str | None = None,
    ) -> FrontSettings:
        """
        C{ipv6}: whether this machine has IPv6, for the listen-everywhere default;
        C{resolvers} and C{sites_certificate_ocsp}: what start-up found on this machine
        (L{director.router.tls}).
        """
        router = config.router
        upstreams = tuple(i for i in re.split(r"[,\s]+", router.upstreams) if i) or (
            f"127.0.0.1:{config.orchestrator.nginx_port}",
        )
        cert = None
        if router.sites_certificate and router.sites_certificate_key:
            cert = (router.sites_certificate, router.sites_certificate_key)
        return cls(
            sites_domain=config.director.sites_domain,
            http_listen=listen_addresses(router.public_host, router.http_port, ipv6),
            https_listen=listen_addresses(router.public_host, router.https_port, ipv6),
            https_port=router.https_port,
            upstreams=upstreams,
            max_body_size=router.max_body_size.lower(),
            sites_certificate=cert,
            sites_certificate_ocsp=sites_certificate_ocsp if cert else None,
            resolvers=resolvers,
            dashboard=DashboardFront.from_config(config),
        )


def listen_addresses(host: str, port: int, ipv6: bool) -> tuple[str, ...]:
    """nginx C{listen} arguments: one address, or every IPv4 (and IPv6) address."""
    if not host:
        return (str(port), f"[::]:{port}") if ipv6 else (str(port),)
    if ipaddress.ip_address(host).version == 6:
        return (f"[{host}]:{port}",)
    return (f"{host}:{port}",)


def site_file(name: str) -> str:
    """The file of site C{name} in the sites directory."""
    return f"site-{name}.conf"


#: The upstream group of sites without an upstream of their own (router.upstreams).
DEFAULT_UPSTREAM = "director_orchestrators"


def upstream_token(address: str) -> str:
    """
    A name for the upstream block of C{address} (a checked "host:port"): readable, and
    with a digest of the address so that two addresses never share one.
    """
    readable = re.sub(r"[^a-z0-9]+", "-", address.lower()).strip("-")[:60]
    digest = hashlib.sha256(address.encode("ascii")).hexdigest()[:10]
    return f"{readable}-{digest}"


def upstream_name(address: str | None) -> str:
    """The nginx upstream a site is proxied to."""
    if address is None:
        return DEFAULT_UPSTREAM
    return "director_to_" + upstream_token(address).replace("-", "_")


def upstream_file(address: str) -> str:
    """The file of the upstream block of C{address} in the sites directory."""
    return f"upstream-{upstream_token(address)}.conf"


def render_upstream(address: str) -> str:
    """One orchestrator's upstream block, shared by every site placed there."""
    return NGINX_TEMPLATES.get_template("router-upstream.conf.j2").render(
        address=address, upstream_name=upstream_name(address)
    )


def common_values(settings: FrontSettings, layout: RouterLayout) -> dict[str, Any]:
    """What every server of the front nginx's templates uses."""
    cert, key = settings.sites_certificate or ("", "")
    return {
        "http_listen": settings.http_listen,
        "https_listen": settings.https_listen,
        "webroot": str(layout.webroot),
        "sites_certificate": cert,
        "sites_certificate_key": key,
        "sites_certificate_stapling": bool(cert)
        and stapling_possible(settings.sites_certificate_ocsp, settings.resolvers),
    }


def render_main(settings: FrontSettings, layout: RouterLayout) -> str:
    """nginx.conf: global settings, the upstreams, the default and fallback servers."""
    paths = NginxPaths(layout.nginx_prefix)
    return NGINX_TEMPLATES.get_template("router.conf.j2").render(
        **common_values(settings, layout),
        workers=settings.workers,
        pid=str(paths.pid),
        error_log=str(paths.error_log),
        access_log=str(paths.prefix / "logs" / "access.log"),
        temp_body=str(paths.temp / "body"),
        temp_proxy=str(paths.temp / "proxy"),
        temp_fastcgi=str(paths.temp / "fastcgi"),
        temp_uwsgi=str(paths.temp / "uwsgi"),
        temp_scgi=str(paths.temp / "scgi"),
        max_body_size=settings.max_body_size,
        upstreams=settings.upstreams,
        upstream_name=DEFAULT_UPSTREAM,
        sites_wildcard="*." + settings.sites_domain,
        canonical_host=None,
        sites_glob=str(paths.sites / "*.conf"),
        resolvers=settings.resolvers,
    )


def render_site(
    entry: SiteEntry,
    settings: FrontSettings,
    layout: RouterLayout,
    secured: Mapping[str, str],
    responders: Mapping[str, str] | None = None,
) -> str:
    """
    One site's servers: its canonical host, its custom domains (and its URL format's host,
    for a host format) over HTTP, and over HTTPS those in C{secured} (domain -> version
    of its installed certificate). The canonical host redirects to the primary (first)
    custom domain once that one is secured, and is served as itself until then: a redirect
    never leads to an address without a certificate.
    C{responders}: domain -> OCSP responder of its installed certificate, for those that
    name one; their HTTPS servers staple (when nginx can reach the responder).
    """
    responders = responders or {}
    secured_domains = [d for d in entry.hosts if d in secured]
    primary = entry.domains[0] if entry.domains else None
    return NGINX_TEMPLATES.get_template("router-site.conf.j2").render(
        **common_values(settings, layout),
        name=entry.name,
        canonical_host=entry.host(settings.sites_domain),
        max_body_size=entry.max_body_size,
        upstream_name=upstream_name(entry.upstream),
        plain_domains=[d for d in entry.hosts if d not in secured],
        secured_domains=secured_domains,
        redirect_to=primary if primary in secured else None,
        certificates={
            d: (str(layout.installed_cert(d, secured[d])), str(layout.installed_key(d, secured[d])))
            for d in secured_domains
        },
        stapling={
            d for d in secured_domains if stapling_possible(responders.get(d), settings.resolvers)
        },
        https_port_suffix="" if settings.https_port == 443 else f":{settings.https_port}",
    )
