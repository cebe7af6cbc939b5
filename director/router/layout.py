"""
Where the router keeps its files.

Two trees: the router's own (under C{<state_dir>/router}: its site table, its nginx and the
certificates installed into that nginx) and the shared one (C{router.shared_dir}: the ACME
account, every issued certificate, per-domain order locks and the HTTP-01 webroot), which
several routers may mount from common storage (see docs/router.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from director.common.config import Config


def file_stem(domain: str) -> str:
    """A file name for a validated domain; very long ones are hashed to fit NAME_MAX."""
    if len(domain) <= 200:
        return domain
    # '_' never occurs in a validated domain, so this cannot collide with one.
    return "_h_" + hashlib.sha256(domain.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class RouterLayout:
    root: Path
    shared: Path

    @classmethod
    def from_config(cls, config: Config) -> RouterLayout:
        root = config.director.state_dir / "router"
        shared = Path(config.router.shared_dir) if config.router.shared_dir else root / "shared"
        return cls(root, shared)

    # The router's own files.

    @property
    def site_table(self) -> Path:
        return self.root / "sites.json"

    @property
    def nginx_prefix(self) -> Path:
        return self.root / "nginx"

    @property
    def installed_dir(self) -> Path:
        """Certificates copied out of the shared store for this router's nginx."""
        return self.nginx_prefix / "certs"

    def installed_cert(self, domain: str, version: str) -> Path:
        return self.installed_dir / f"{file_stem(domain)}.{version}.crt"

    def installed_key(self, domain: str, version: str) -> Path:
        return self.installed_dir / f"{file_stem(domain)}.{version}.key"

    # The shared files.

    @property
    def account_key(self) -> Path:
        return self.shared / "acme" / "account.key"

    @property
    def bundles_dir(self) -> Path:
        return self.shared / "certs"

    def bundle(self, domain: str) -> Path:
        return self.bundles_dir / f"{file_stem(domain)}.json"

    @property
    def locks_dir(self) -> Path:
        return self.shared / "locks"

    def lock(self, domain: str) -> Path:
        return self.locks_dir / f"{file_stem(domain)}.lock"

    @property
    def webroot(self) -> Path:
        """Served by every router's nginx at /.well-known/acme-challenge/ on the HTTP port."""
        return self.shared / "webroot"

    @property
    def challenge_dir(self) -> Path:
        return self.webroot / ".well-known" / "acme-challenge"
