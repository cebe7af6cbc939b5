"""
What the site runtime keeps on the orchestrator's disk, and the small file operations it runs
in its file pool: where things live (L{RuntimePaths}), the sites applied last (so a restarted
orchestrator knows what it serves), the host ports sites were allowed to reach, the static
fast path's links, the sites' identity files and their tasks' go-ahead files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from director.common.atomic import atomic_write
from director.orchestrator.firewall import host_port
from director.orchestrator.sites import (
    HostedSite,
    Limits,
)


@dataclass(frozen=True)
class RuntimePaths:
    """Where the orchestrator keeps things under the state directory."""

    state: Path

    @property
    def sites(self) -> Path:
        return self.state / "sites"

    @property
    def base(self) -> Path:
        return self.state / "orchestrator"

    @property
    def hosts(self) -> Path:
        """<name> -> ../../sites/<id> links for the static fast path."""
        return self.base / "hosts"

    @property
    def applied(self) -> Path:
        return self.base / "applied"

    @property
    def nginx(self) -> Path:
        return self.base / "nginx"

    @property
    def pages(self) -> Path:
        """nginx's own pages (served under /__director/, see nginx_config.PAGES)."""
        return self.nginx / "pages"

    def site_dir(self, site_id: int) -> Path:
        return self.sites / str(site_id)

    @property
    def identities(self) -> Path:
        return self.base / "etc"

    def identity_dir(self, site_id: int) -> Path:
        """The site's /etc/passwd and /etc/group, bind-mounted read-only into its containers."""
        return self.identities / str(site_id)

    def gate_dir(self, site_id: int) -> Path:
        """The go-ahead files of the site's new tasks (see L{sites.GATE_SCRIPT}), read-only."""
        return self.base / "gates" / str(site_id)

    @property
    def firewall(self) -> Path:
        """The host ports sites were allowed to reach (database servers), for the firewall."""
        return self.base / "firewall.json"


def _site_to_json(site: HostedSite) -> dict[str, Any]:
    data = asdict(site)
    data["custom_domains"] = list(site.custom_domains)
    return data


def _site_from_json(data: dict[str, Any]) -> HostedSite:
    data = dict(data)
    data["limits"] = Limits(**data["limits"])
    data["custom_domains"] = tuple(data["custom_domains"])
    data.setdefault("nginx_snippet", None)  # applied before snippets existed
    return HostedSite(**data)


def _set_link(hosts: Path, name: str, target: Path | None) -> None:
    link = hosts / name
    if target is None:
        try:
            link.unlink()
        except FileNotFoundError:
            pass
        return
    tmp = hosts / f".{name}.tmp"
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _write_json(path: Path, data: dict[str, Any] | None) -> None:
    if data is None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    atomic_write(path, json.dumps(data, sort_keys=True))


def _write_identity(directory: Path, files: dict[str, str]) -> None:
    """
    Write the site's passwd and group files if they are missing or differ (readable by the
    site's user; the directory is the orchestrator's, not the site's).
    """
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        try:
            if path.read_text() == text:
                continue
        except FileNotFoundError:
            pass
        atomic_write(path, text, 0o644)


def _load_allowed(path: Path) -> set[tuple[str, int]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    allowed = set()
    for item in data.get("allow", []) if isinstance(data, dict) else []:
        try:
            allowance = host_port(str(item[0]), int(item[1]))
        except (TypeError, ValueError, IndexError):
            continue
        if allowance is not None:
            allowed.add(allowance)
    return allowed


def _load_applied(directory: Path) -> dict[int, HostedSite]:
    sites = {}
    for path in directory.glob("*.json"):
        try:
            site = _site_from_json(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError):
            continue
        sites[site.id] = site
    return sites


def _make_gate_dir(path: Path) -> None:
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.chmod(0o755)


def _touch(path: Path) -> None:
    path.touch(mode=0o644)


def _remove_gates(directory: Path, *names: str) -> None:
    """Remove the go-ahead files C{names} (every one, without names)."""
    try:
        paths = [directory / n for n in names] if names else list(directory.iterdir())
    except FileNotFoundError:
        return
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _remove_tree(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
