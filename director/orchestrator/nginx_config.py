"""
Rendering the orchestrator's nginx configuration from the templates in nginx/ (no I/O
beyond reading the templates). Every value that reaches a template is validated by
L{director.orchestrator.sites}; rendering checks again (L{director.common.nginx_templates}).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from director.common.nginx_templates import NGINX_TEMPLATES, NginxText
from director.contract.sites import SITE_NAME_PATTERN
from director.orchestrator.sites import SITE_PORT, HostedSite

NOT_FOUND_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>No such site</title></head>
<body><h1>Nothing here</h1><p>There is no site or page at this address.</p></body></html>
"""

#: What a folder without an index.html shows (a new site's public/ emptied, say).
NO_INDEX_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>No page here yet</title></head>
<body><h1>No page here yet</h1><p>This folder of the site has no <code>index.html</code>.</p>
<p>If this is your site: open it in the dashboard and create <code>public/index.html</code>
(or an <code>index.html</code> in this folder) in the file editor. It is served as soon
as you save it.</p></body></html>
"""

#: The 503 page of a dynamic site whose process is not running (inline in its nginx file:
#: no quote, backslash or dollar sign).
NOT_RUNNING_PAGE = (
    "<!doctype html><title>Site not running</title><h1>This site is not running</h1>"
    "<p>It may be starting, stopped, or missing a run.sh. Check its log in the dashboard.</p>"
)

#: The pages nginx serves from its pages directory (under /__director/, internal only).
PAGES = {"not-found.html": NOT_FOUND_PAGE, "no-index.html": NO_INDEX_PAGE}


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
        f"~^(?<director_site>{SITE_NAME_PATTERN})\\."
        + re.escape(sites_domain).replace("\\-", "-")
        + "$"
    )
    return NGINX_TEMPLATES.get_template("orchestrator.conf.j2").render(
        prefix=prefix,
        listen=listen,
        workers=workers,
        sites_domain=sites_domain,
        hosts_dir=hosts_dir,
        sites_dir=sites_dir,
        pages_dir=prefix / "pages",
        static_server_name=NginxText(f'"{static_name}"'),
        site_files=site_files,
    )


def needs_own_file(site: HostedSite) -> bool:
    """
    Only plain, enabled static sites are served by the shared static server (custom domains
    need nothing here: the router sends them under the site's own host).
    """
    return not (
        site.type == "static"
        and site.availability == "enabled"
        and site.limits.client_max_body_size == "1m"
        and not site.nginx_snippet
    )


def site_config(
    site: HostedSite,
    listen: str,
    sites_domain: str,
    site_dir: Path,
    upstream: list[str],
    pages_dir: Path | None = None,
) -> str:
    """
    One site's server block. Every address of the site is served alike: the router sends
    custom domains here under the site's host, and redirects to a custom domain (once its
    certificate is served) are the router's. C{pages_dir}: where L{PAGES} are, for the
    friendly 404 pages of a static site.
    """
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
        "pages_dir": pages_dir,
        "not_running": NginxText(NOT_RUNNING_PAGE),
        # An administrator's own directives, as they wrote them (nginx -t'd before kept).
        "snippet": NginxText(site.nginx_snippet) if site.nginx_snippet else None,
    }
    return NGINX_TEMPLATES.get_template("orchestrator-site.conf.j2").render(**context)


SNIPPET_MARK = "# --- the administrators' snippet for this site ---"
_CHECK_FILE = re.compile(r" in /\S*/check-alone/[0-9a-f]{32}\.conf:([0-9]+)")


def snippet_error(output: str, text: str) -> str:
    """
    What `nginx -t` said about the server block C{text} (an admin's snippet in it), for a
    person: its [emerg]/[warn] lines, with the scratch file's line numbers as lines of the
    snippet (or "outside the snippet"), and without the scratch file's path.
    """
    lines = text.splitlines()
    start = next((n for n, line in enumerate(lines, 1) if SNIPPET_MARK in line), None)

    def where(match: re.Match[str]) -> str:
        line = int(match.group(1))
        if start is not None and line > start:
            return f" at line {line - start} of the snippet"
        return " (outside the snippet)"

    found = [
        _CHECK_FILE.sub(where, line.removeprefix("nginx: ").replace("[emerg] ", ""))
        for line in output.splitlines()
        if "[emerg]" in line or "[warn]" in line
    ]
    return "; ".join(found) or "nginx refused the configuration"
