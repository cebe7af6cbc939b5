"""
The dashboard's front door: the router's front nginx serves the dashboard host
(C{manager.dashboard_host}) like a site, sending it to the managers (C{router.manager_upstreams})
with failover. Its certificate is one given in the config or one ordered over ACME like a
custom domain's (shared by every router); once there is one, HTTP redirects to HTTPS and
HTTPS carries HSTS.

Rendering and the choice of certificate have no I/O; L{check_given_certificate} reads the
configured files at start-up.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from director.common.config import Config
from director.common.errors import StartupError
from director.common.nginx_templates import NGINX_TEMPLATES
from director.router.cert_store import Bundle, StoreError

#: The dashboard's file in the front nginx's sites directory (never a site's: those are
#: site-*.conf and upstream-*.conf).
DASHBOARD_FILE = "dashboard.conf"

#: Who the dashboard host's certificate is for, in the certificate keeper's statuses (a
#: site name never starts with a colon).
DASHBOARD_OWNER = ":dashboard"


@dataclass(frozen=True)
class DashboardFront:
    """What the router needs to serve the dashboard host, as plain values."""

    host: str
    #: the managers, as checked host:port
    upstreams: tuple[str, ...]
    max_body_size: str = "128m"
    #: (certificate, key) files given in the config; None: ACME, or plain HTTP
    given_certificate: tuple[str, str] | None = None

    @classmethod
    def from_config(cls, config: Config) -> DashboardFront:
        router = config.router
        given = None
        if router.dashboard_certificate and router.dashboard_certificate_key:
            given = (router.dashboard_certificate, router.dashboard_certificate_key)
        return cls(
            host=config.manager.dashboard_host,
            upstreams=manager_upstreams(router.manager_upstreams, config.manager.url),
            max_body_size=router.dashboard_max_body_size.lower(),
            given_certificate=given,
        )

    @property
    def wants_acme(self) -> bool:
        """
        Whether the router orders the host's certificate: no certificate was given, and the
        host is a public name (no CA issues for .localhost, RFC 6761).
        """
        return self.given_certificate is None and not is_local_name(self.host)


def is_local_name(host: str) -> bool:
    """Whether C{host} is localhost or under it (a name that only means this machine)."""
    return host == "localhost" or host.endswith(".localhost")


def manager_upstreams(setting: str, manager_url: str) -> tuple[str, ...]:
    """The managers of C{router.manager_upstreams}, or the host:port of C{manager.url}."""
    listed = tuple(i for i in re.split(r"[,\s]+", setting) if i)
    if listed:
        return listed
    parts = urlsplit(manager_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return (f"{host}:{port}",)


def check_given_certificate(front: DashboardFront) -> str | None:
    """
    Blocking (start-up): the configured certificate must be readable, match its key and
    name the dashboard host; L{StartupError} otherwise. Returns its OCSP responder, if any.
    """
    if front.given_certificate is None:
        return None
    cert, key = front.given_certificate
    try:
        chain, key_pem = Path(cert).read_bytes(), Path(key).read_bytes()
    except OSError as e:
        raise StartupError(
            f"router.dashboard_certificate: cannot read {e.filename}: {e.strerror}"
        ) from None
    try:
        bundle = Bundle.parse(front.host, key_pem, chain, 0.0)
    except StoreError as e:
        raise StartupError(f"router.dashboard_certificate: {e}") from None
    return bundle.ocsp_url


def render_dashboard(
    front: DashboardFront,
    http_listen: tuple[str, ...],
    https_listen: tuple[str, ...],
    https_port: int,
    webroot: str,
    certificate: tuple[str, str] | None,
    stapling: bool = False,
) -> str:
    """
    The dashboard host's servers and the managers' upstream. C{certificate}: the (chain,
    key) files nginx uses, or None for plain HTTP (before the first certificate).
    """
    return NGINX_TEMPLATES.get_template("router-dashboard.conf.j2").render(
        host=front.host,
        upstreams=front.upstreams,
        max_body_size=front.max_body_size,
        http_listen=http_listen,
        https_listen=https_listen,
        https_port_suffix="" if https_port == 443 else f":{https_port}",
        webroot=webroot,
        certificate=certificate,
        stapling=stapling and certificate is not None,
    )
