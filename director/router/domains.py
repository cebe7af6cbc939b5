"""
The router's site table and the validation of what the manager sends (no I/O).

Everything here ends up in nginx configuration, so values are checked strictly and turned
into one canonical form: domain names become lower-case ASCII (IDNA), sizes lower-case
nginx sizes. A request that fails a check changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from director.contract.domains import MAX_DOMAIN_LENGTH, is_within
from director.contract.domains import normalize_domain as contract_domain
from director.contract.errors import ValidationError
from director.contract.sites import MAX_DOMAINS_PER_SITE as MAX_DOMAINS_PER_SITE
from director.contract.sites import SITE_NAME_RULE, RouteSpec, is_site_name
from director.contract.sites import normalize_size as contract_size


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
    """A site name (the contract's rule), so that <name>.<sites_domain> is a host name."""
    if not is_site_name(name):
        raise invalid("invalid_site_name", f"site name {name!r}: {SITE_NAME_RULE}")
    assert isinstance(name, str)
    if len(name) + 1 + len(sites_domain) > MAX_DOMAIN_LENGTH:
        raise invalid("invalid_site_name", f"site name {name!r} makes a host name too long")
    return name


def _refused(error: ValidationError) -> RequestError:
    return invalid(error.code if error.code != "invalid" else "invalid_request", error.reason)


def _check_not_reserved(domain: str, sites_domain: str) -> str:
    """The sites domain and its subdomains are the router's own, never custom domains."""
    if is_within(domain, sites_domain):
        raise RequestError(
            400,
            "reserved_domain",
            f"{domain} is under {sites_domain}, which Director serves itself; "
            "it cannot be a custom domain",
        )
    return domain


def normalize_domain(raw: object, sites_domain: str) -> str:
    """
    The canonical (ASCII, lower-case) form of a custom domain (the contract's rule), or
    L{RequestError}; the sites domain and its subdomains are refused.
    """
    try:
        domain = contract_domain(raw)
    except ValidationError as e:
        raise invalid("invalid_domain", e.reason) from None
    return _check_not_reserved(domain, sites_domain)


def normalize_size(raw: object) -> str:
    """A request body limit: bytes (an integer) or an nginx size such as '10m'."""
    try:
        return contract_size(raw)
    except ValidationError as e:
        raise _refused(e) from None


@dataclass(frozen=True)
class SiteEntry:
    """
    What the router serves for one site: its canonical host and custom domains, and where
    it sends them (C{upstream}, a checked "host:port"; None: the default group). C{url_host}:
    the host of its purpose's URL format, if not the canonical one; with C{url_path}, the
    site is under C{/<name>/} of that host, which it shares with other sites.
    """

    name: str
    domains: tuple[str, ...]
    max_body_size: str
    upstream: str | None = None
    url_host: str | None = None
    url_path: bool = False

    def host(self, sites_domain: str) -> str:
        return f"{self.name}.{sites_domain}"

    @property
    def hosts(self) -> tuple[str, ...]:
        """The names this site alone is served at besides its canonical host."""
        if self.url_host is None or self.url_path or self.url_host in self.domains:
            return self.domains
        return (*self.domains, self.url_host)

    @property
    def path_host(self) -> str | None:
        """The shared host it is under C{/<name>/} of (a path format), if any."""
        return self.url_host if self.url_path else None

    def to_json(self, sites_domain: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "host": self.host(sites_domain),
            "domains": list(self.domains),
            "max_body_size": self.max_body_size,
            "upstream": self.upstream,
        }
        if self.url_host is not None:  # as in a RouteSpec: only when the format is not the default
            data["url_host"] = self.url_host
            data["url_path"] = self.url_path
        return data


def parse_site_request(
    name: object, body: object, sites_domain: str, default_size: str
) -> SiteEntry:
    """Check a PUT /v1/sites/<name> body (a L{RouteSpec}) for site C{name}."""
    site = validate_site_name(name, sites_domain)
    try:
        spec = RouteSpec.from_json(body)
    except ValidationError as e:
        raise _refused(e) from None
    for domain in spec.domains:
        _check_not_reserved(domain, sites_domain)
    url_host = spec.url_host
    if url_host == f"{site}.{sites_domain}" and not spec.url_path:
        url_host = None  # the canonical host, said out loud
    elif url_host is not None and spec.url_path and is_within(url_host, sites_domain):
        raise invalid(
            "reserved_domain",
            f"{url_host} is under {sites_domain}, whose names are sites' own hosts; "
            "it cannot be a path host",
        )
    return SiteEntry(
        site,
        spec.domains,
        spec.max_body_size or default_size,
        spec.upstream,
        url_host,
        spec.url_path and url_host is not None,
    )


@dataclass(frozen=True)
class SiteTable:
    """Every site the router serves; a domain belongs to at most one site."""

    sites: Mapping[str, SiteEntry] = field(default_factory=dict)

    def get(self, name: str) -> SiteEntry | None:
        return self.sites.get(name)

    def owner(self, domain: str) -> str | None:
        """The site served alone at C{domain} (a custom domain or its URL format's host)."""
        for entry in self.sites.values():
            if domain in entry.hosts:
                return entry.name
        return None

    @property
    def upstreams(self) -> frozenset[str]:
        """The addresses sites are sent to besides the default group."""
        return frozenset(e.upstream for e in self.sites.values() if e.upstream is not None)

    @property
    def domains(self) -> frozenset[str]:
        """Every custom domain."""
        return frozenset(d for entry in self.sites.values() for d in entry.domains)

    @property
    def hosts(self) -> frozenset[str]:
        """Every name a site is served at alone (custom domains, host formats' hosts)."""
        return frozenset(d for entry in self.sites.values() for d in entry.hosts)

    @property
    def path_hosts(self) -> frozenset[str]:
        """The hosts of path formats, each shared by its sites."""
        return frozenset(e.path_host for e in self.sites.values() if e.path_host is not None)

    def under(self, path_host: str) -> list[SiteEntry]:
        """The sites under C{path_host}, by name."""
        return sorted(
            (e for e in self.sites.values() if e.path_host == path_host), key=lambda e: e.name
        )

    def check(self, entry: SiteEntry) -> None:
        """Refuse (409) a name that another site already has, or that a path host shares."""
        paths = self.without(entry.name).path_hosts
        for domain in entry.hosts:
            owner = self.owner(domain)
            if owner is not None and owner != entry.name:
                raise RequestError(
                    409, "domain_taken", f"{domain} is already a domain of site {owner!r}"
                )
            if domain in paths:
                raise RequestError(
                    409, "domain_taken", f"{domain} is a host that sites are served under"
                )
        host = entry.path_host
        owner = self.owner(host) if host is not None else None
        if owner is not None and owner != entry.name:
            raise RequestError(409, "domain_taken", f"{host} is already a host of site {owner!r}")

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
                name: RouteSpec(
                    e.domains, e.max_body_size, e.upstream, e.url_host, e.url_path
                ).to_json()
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
