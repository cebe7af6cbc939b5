"""
Where a site is reached: each purpose's URL format (C{[director.url_formats]}), and the
address it gives a site. A format is a host format, C{{name}.<domain>} (the site at the
root of its own host), or a path format, C{<host>/{name}/} (the site under a path of a
host it shares). A purpose without a format gets C{{name}.<sites_domain>}, the site's
canonical host, which always works. No I/O: the config check, the manager (URLs and routes)
and the docs share these rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from director.contract.domains import LABEL, MAX_DOMAIN_LENGTH, is_within
from director.contract.errors import ValidationError
from director.contract.sites import MAX_SITE_NAME_LENGTH

#: What a site is for; each may have its own URL format.
PURPOSES = ("personal", "project", "activity", "other")

FORMAT_RULE = (
    "a URL format is '{name}.<domain>' (a host per site) or '<host>/{name}/' (a path per "
    "site), with exactly one {name}, lower-case DNS names, and no scheme or port"
)


@dataclass(frozen=True)
class SiteAddress:
    """A site's address: a host, and the path it is under there (C{/} or C{/<name>/})."""

    host: str
    path: str = "/"

    def url(self, scheme: str = "http", port: int | None = None) -> str:
        default = 443 if scheme == "https" else 80
        suffix = "" if port is None or port == default else f":{port}"
        return f"{scheme}://{self.host}{suffix}{self.path}"


@dataclass(frozen=True)
class UrlFormat:
    """One purpose's format: C{domain} after C{{name}.}, or the shared C{host} of paths."""

    host: str
    path: bool = False

    def address(self, name: str) -> SiteAddress:
        if self.path:
            return SiteAddress(self.host, f"/{name}/")
        return SiteAddress(f"{name}.{self.host}")

    def __str__(self) -> str:
        return f"{self.host}/{{name}}/" if self.path else f"{{name}}.{self.host}"

    @classmethod
    def parse(cls, text: object) -> UrlFormat:
        """A format as written in the config, or L{ValidationError} saying what is wrong."""
        if not isinstance(text, str):
            raise ValidationError("format", f"{FORMAT_RULE}; got {text!r}")
        if text.count("{name}") != 1:
            raise ValidationError("format", f"{FORMAT_RULE}; {text!r} has not one {{name}}")
        if text.startswith("{name}."):
            parsed = cls(text[len("{name}.") :], path=False)
        elif text.endswith("/{name}/") and "/" not in text[: -len("/{name}/")]:
            parsed = cls(text[: -len("/{name}/")], path=True)
        else:
            raise ValidationError("format", f"{FORMAT_RULE}; got {text!r}")
        labels = parsed.host.split(".")
        longest = len(parsed.host) + (0 if parsed.path else MAX_SITE_NAME_LENGTH + 1)
        if (
            not all(LABEL.fullmatch(label) for label in labels)
            or labels[-1].isdigit()
            or (parsed.path and len(labels) < 2)
            or longest > MAX_DOMAIN_LENGTH
        ):
            raise ValidationError(
                "format",
                f"{FORMAT_RULE}; {parsed.host!r} is not a DNS name that fits "
                "(a path host has two labels or more)",
            )
        return parsed


@dataclass(frozen=True)
class UrlFormats:
    """Every purpose's format; those not in C{formats} use the canonical host."""

    sites_domain: str
    formats: Mapping[str, UrlFormat] = field(default_factory=dict)

    @classmethod
    def parse(cls, sites_domain: str, raw: Mapping[str, object]) -> UrlFormats:
        """C{raw}: purpose -> format text, as in the config; L{ValidationError} if wrong."""
        formats: dict[str, UrlFormat] = {}
        for purpose, text in raw.items():
            if purpose not in PURPOSES:
                raise ValidationError(
                    str(purpose), f"not a purpose; expected one of {', '.join(PURPOSES)}"
                )
            try:
                parsed = UrlFormat.parse(text)
            except ValidationError as e:
                raise ValidationError(purpose, e.reason) from None
            if parsed.path and is_within(parsed.host, sites_domain):
                raise ValidationError(
                    purpose,
                    f"the path host {parsed.host} is under the sites domain {sites_domain}, "
                    "whose names are the sites' own hosts",
                )
            if not parsed.path and parsed.host == sites_domain:
                continue  # the default, said out loud
            formats[purpose] = parsed
        path_hosts = {f.host for f in formats.values() if f.path}
        for purpose, parsed in formats.items():
            if not parsed.path and any(is_within(h, parsed.host) for h in path_hosts):
                raise ValidationError(
                    purpose,
                    f"{parsed} would give a site the host of a path format under {parsed.host}",
                )
        return cls(sites_domain, formats)

    def format_for(self, purpose: str) -> UrlFormat:
        return self.formats.get(purpose) or UrlFormat(self.sites_domain)

    def address(self, name: str, purpose: str) -> SiteAddress:
        """Where site C{name} of C{purpose} is reached (its URL's host and path)."""
        return self.format_for(purpose).address(name)

    def url(self, name: str, purpose: str, scheme: str = "http", port: int | None = None) -> str:
        return self.address(name, purpose).url(scheme, port)

    def canonical_host(self, name: str) -> str:
        """The host every site keeps whatever its format: C{<name>.<sites_domain>}."""
        return f"{name}.{self.sites_domain}"

    def route(self, name: str, purpose: str) -> tuple[str | None, bool]:
        """
        What a router needs besides the canonical host: (the format's host, None for the
        canonical host; whether the site is under C{/<name>/} there).
        """
        address = self.address(name, purpose)
        if address.host == self.canonical_host(name) and address.path == "/":
            return None, False
        return address.host, address.path != "/"

    def reserved(self) -> tuple[str, ...]:
        """
        The names custom domains must stay out of: each path host, and each host format's
        domain (and everything under both).
        """
        return tuple(sorted({f.host for f in self.formats.values()}))


def formats_of(value: UrlFormats | str) -> UrlFormats:
    """C{value}, or the default formats of the sites domain C{value}."""
    return value if isinstance(value, UrlFormats) else UrlFormats(value)
