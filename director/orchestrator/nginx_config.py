"""
Rendering the orchestrator's nginx configuration from the templates in nginx/ (no I/O
beyond reading the templates). Every value that reaches a template is validated by
L{director.orchestrator.sites}; the rendering adds quoting on top.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from director.common.nginx import nginx_string
from director.orchestrator.sites import SITE_PORT, Site

TEMPLATES = Path(__file__).resolve().parents[2] / "nginx"

NOT_FOUND_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>No such site</title></head>
<body><h1>Nothing here</h1><p>There is no site or page at this address.</p></body></html>
"""


def _environment() -> Environment:
    # Not HTML: autoescape would be wrong; values are validated and quoted instead.
    env = Environment(  # noqa: S701
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["q"] = nginx_string
    return env


_ENV = _environment()


def site_file_name(site_id: int) -> str:
    return f"site-{site_id}.conf"


def main_config(
    prefix: Path,
    listen: str,
    sites_domain: str,
    hosts_dir: Path,
    sites_dir: Path,
    workers: int = 2,
    site_files: list[Path] | None = None,
) -> str:
    """
    The orchestrator nginx's main configuration: every file in C{sites_dir}, or, for the
    check before a reload, only C{site_files}.
    """
    static_name = (
        r"~^(?<director_site>[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?)\."
        + re.escape(sites_domain).replace("\\-", "-")
        + "$"
    )
    return _ENV.get_template("orchestrator.conf.j2").render(
        prefix=prefix,
        listen=listen,
        workers=workers,
        sites_domain=sites_domain,
        hosts_dir=hosts_dir,
        sites_dir=sites_dir,
        pages_dir=prefix / "pages",
        static_server_name=f'"{static_name}"',
        site_files=site_files,
    )


def needs_own_file(site: Site) -> bool:
    """Only plain, enabled static sites are served by the shared static server."""
    return not (
        site.type == "static"
        and site.availability == "enabled"
        and not site.custom_domains
        and site.limits.client_max_body_size == "1m"
    )


def site_config(
    site: Site, listen: str, sites_domain: str, site_dir: Path, upstream: list[str]
) -> str:
    redirect_hosts = ""
    primary_url = ""
    if site.custom_domains and site.primary_url:
        redirect_hosts = "|".join(re.escape(d) for d in site.custom_domains)
        primary_url = nginx_string(site.primary_url)[1:-1]  # validated: no quotes, no $
    for address in upstream:
        if not re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", address):
            raise ValueError(f"not an IPv4 address: {address!r}")
    context: dict[str, Any] = {
        "site": site,
        "listen": listen,
        "host": site.host(sites_domain),
        "site_dir": site_dir,
        "upstream": upstream,
        "port": SITE_PORT,
        "redirect_hosts": redirect_hosts,
        "primary_url": primary_url,
    }
    return _ENV.get_template("orchestrator-site.conf.j2").render(**context)
