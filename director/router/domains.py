"""
The router's site table and the validation of what the manager sends (no I/O).

Everything here ends up in nginx configuration, so values are checked strictly and turned
into one canonical form: domain names become lower-case ASCII (IDNA), sizes lower-case
nginx sizes. A request that fails a check changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import idna

MAX_DOMAINS_PER_SITE = 100
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_SIZE = re.compile(r"([0-9]{1,9})([kmg]?)")
# Characters that would change the meaning of an nginx configuration, or of a file name.
_FORBIDDEN = re.compile(r"[\s\"'`;{}$\\/#*?,<>|&()\[\]=+@%!~^\x00-\x1f\x7f]")


class RequestError(Exception):
    """The manager asked for something the router refuses; nothing was changed."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(code: str, message: str) -> RequestError:
    return RequestError(400, code, message)


def validate_site_name(name: object, sites_domain: str) -> str:
    """A site name is one DNS label, so that <name>.<sites_domain> is a host name."""
    if not isinstance(name, str) or not _LABEL.fullmatch(name):
        raise invalid(
            "invalid_site_name",
            f"site name {name!r} must be 1-63 lower-case letters, digits and inner hyphens",
        )
    if len(name) + 1 + len(sites_domain) > 253:
        raise invalid("invalid_site_name", f"site name {name!r} makes a host name too long")
    return name


def normalize_domain(raw: object, sites_domain: str) -> str:
    """
    The canonical (ASCII, lower-case) form of a custom domain, or L{RequestError}.

    International names are accepted and stored as IDNA A-labels; anything that is not a
    plain multi-label host name is refused, as are the sites domain and its subdomains
    (those are the router's own).
    """
    if not isinstance(raw, str) or not raw:
        raise invalid("invalid_domain", f"a domain must be a non-empty string, got {raw!r}")
    shown = raw if len(raw) <= 80 else raw[:80] + "..."
    if len(raw) > 1000:
        raise invalid("invalid_domain", f"{shown!r} is too long to be a domain name")
    bad = _FORBIDDEN.search(raw)
    if bad:
        raise invalid(
            "invalid_domain",
            f"{shown!r} contains {bad.group()!r}, which is not allowed in a domain name",
        )
    name = raw[:-1] if raw.endswith(".") else raw
    try:
        ascii_name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as e:
        raise invalid("invalid_domain", f"{shown!r} is not a valid domain name: {e}") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise invalid("invalid_domain", f"{shown!r} needs at least two labels (like example.org)")
    if len(ascii_name) > 253:
        raise invalid("invalid_domain", f"{shown!r} is longer than 253 characters")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise invalid(
                "invalid_domain",
                f"{shown!r}: label {label!r} must be 1-63 letters, digits or inner hyphens",
            )
    if labels[-1].isdigit():
        raise invalid("invalid_domain", f"{shown!r} looks like an IP address, not a domain")
    if ascii_name == sites_domain or ascii_name.endswith("." + sites_domain):
        raise RequestError(
            400,
            "reserved_domain",
            f"{ascii_name} is under {sites_domain}, which Director serves itself; "
            "it cannot be a custom domain",
        )
    return ascii_name


def normalize_size(raw: object) -> str:
    """A request body limit: bytes (an integer) or an nginx size such as '10m'."""
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 999_999_999:
        return str(raw)
    if isinstance(raw, str):
        match = _SIZE.fullmatch(raw.strip().lower())
        if match:
            return match.group(1).lstrip("0").rjust(1, "0") + match.group(2)
    raise invalid(
        "invalid_max_body_size",
        f"max_body_size must be a byte count or a size like '512k', '10m', '1g'; got {raw!r}",
    )


@dataclass(frozen=True)
class SiteEntry:
    """What the router serves for one site: its canonical host and custom domains."""

    name: str
    domains: tuple[str, ...]
    max_body_size: str

    def host(self, sites_domain: str) -> str:
        return f"{self.name}.{sites_domain}"

    def to_json(self, sites_domain: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host(sites_domain),
            "domains": list(self.domains),
            "max_body_size": self.max_body_size,
        }


def parse_site_request(
    name: object, body: object, sites_domain: str, default_size: str
) -> SiteEntry:
    """Check a PUT /v1/sites/<name> body: C{{"domains": [...], "max_body_size": ...}}."""
    site = validate_site_name(name, sites_domain)
    if not isinstance(body, Mapping):
        raise invalid("invalid_request", "the body must be a JSON object")
    unknown = sorted(set(body) - {"domains", "max_body_size"})
    if unknown:
        raise invalid(
            "invalid_request", f"unknown field {unknown[0]!r}; expected domains, max_body_size"
        )
    raw_domains = body.get("domains", [])
    if not isinstance(raw_domains, list):
        raise invalid("invalid_request", "domains must be a list of domain names")
    if len(raw_domains) > MAX_DOMAINS_PER_SITE:
        raise invalid(
            "too_many_domains", f"a site may have at most {MAX_DOMAINS_PER_SITE} custom domains"
        )
    domains: list[str] = []
    for raw in raw_domains:
        domain = normalize_domain(raw, sites_domain)
        if domain not in domains:
            domains.append(domain)
    size = body.get("max_body_size")
    return SiteEntry(
        site, tuple(domains), normalize_size(size) if size is not None else default_size
    )


@dataclass(frozen=True)
class SiteTable:
    """Every site the router serves; a domain belongs to at most one site."""

    sites: Mapping[str, SiteEntry] = field(default_factory=dict)

    def get(self, name: str) -> SiteEntry | None:
        return self.sites.get(name)

    def owner(self, domain: str) -> str | None:
        for entry in self.sites.values():
            if domain in entry.domains:
                return entry.name
        return None

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(d for entry in self.sites.values() for d in entry.domains)

    def check(self, entry: SiteEntry) -> None:
        """Refuse (409) a domain that another site already has."""
        for domain in entry.domains:
            owner = self.owner(domain)
            if owner is not None and owner != entry.name:
                raise RequestError(
                    409, "domain_taken", f"{domain} is already a domain of site {owner!r}"
                )

    def with_site(self, entry: SiteEntry) -> SiteTable:
        self.check(entry)
        return replace(self, sites={**self.sites, entry.name: entry})

    def without(self, name: str) -> SiteTable:
        return replace(self, sites={k: v for k, v in self.sites.items() if k != name})

    def restored(self, name: str, previous: SiteEntry | None) -> SiteTable:
        """This table with site C{name} put back as it was (C{None}: absent)."""
        return self.without(name) if previous is None else self.without(name).with_site(previous)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "sites": {
                name: {"domains": list(e.domains), "max_body_size": e.max_body_size}
                for name, e in sorted(self.sites.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any, sites_domain: str, default_size: str) -> SiteTable:
        """Load the saved table, re-checking every value (the file is trusted no more)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("sites"), Mapping):
            raise ValueError("not a site table")
        table = cls()
        for name, body in data["sites"].items():
            table = table.with_site(parse_site_request(name, body, sites_domain, default_size))
        return table

    @classmethod
    def of(cls, entries: Iterable[SiteEntry]) -> SiteTable:
        table = cls()
        for entry in entries:
            table = table.with_site(entry)
        return table
