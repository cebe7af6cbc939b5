"""
Path hosts: the hosts of path URL formats (C{<host>/{name}/}), each shared by the sites of
its purpose. The front nginx serves one file per path host, with a C{location /<name>/} per
site sent to the site's orchestrator with the prefix stripped (and C{X-Forwarded-Prefix}
saying what it was). Its certificate comes over ACME like a custom domain's. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from director.common.nginx_templates import NGINX_TEMPLATES, NginxText
from director.router.domains import SiteEntry
from director.router.front_nginx_config import FrontSettings, common_values, upstream_name
from director.router.layout import RouterLayout, file_stem

#: Who a path host's certificate is for, in the certificate keeper's statuses (a site name
#: never starts with a colon).
PATH_HOST_OWNER = ":path-host"


def path_host_file(host: str) -> str:
    """The file of path host C{host} in the sites directory (never a site's or upstream's)."""
    return f"path-{file_stem(host)}.conf"


@dataclass(frozen=True)
class PathSite:
    """One site's location under a path host, as the template prints it."""

    name: str
    max_body_size: str
    upstream_name: str
    canonical_host: str
    #: a regular expression of absolute URLs to the site's canonical host (any port)
    own_redirect: NginxText


def _path_site(entry: SiteEntry, sites_domain: str) -> PathSite:
    canonical = entry.host(sites_domain)
    # Built from a checked site name and sites domain, escaped: no quote, space or brace.
    pattern = "~^https?://" + re.escape(canonical) + "(:[0-9]+)?/(.*)$"
    if re.search(r"[\s\"';{}]", pattern):
        raise ValueError(f"refusing to put {pattern!r} into an nginx configuration")
    upstream = upstream_name(entry.upstream)
    return PathSite(entry.name, entry.max_body_size, upstream, canonical, NginxText(pattern))


def render_path_host(
    host: str,
    sites: Sequence[SiteEntry],
    settings: FrontSettings,
    layout: RouterLayout,
    certificate: tuple[str, str] | None = None,
    stapling: bool = False,
) -> str:
    """
    The servers of path host C{host} with a location for each of C{sites}. C{certificate}:
    the (chain, key) files of its installed certificate (None: plain HTTP until it has one).
    """
    return NGINX_TEMPLATES.get_template("router-path-host.conf.j2").render(
        **common_values(settings, layout),
        host=host,
        sites=[_path_site(e, settings.sites_domain) for e in sites],
        certificate=certificate,
        stapling=stapling and certificate is not None,
        https_port_suffix="" if settings.https_port == 443 else f":{settings.https_port}",
    )
