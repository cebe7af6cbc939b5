"""
A site as the manager describes it to the components that run and serve it: its name, type,
availability, limits, image, environment and custom domains (L{SiteSpec}, sent to an
orchestrator) and what the router serves for it (L{RouteSpec}). Each rule is written here
once; the manager checks what people send with it, and the orchestrator and the router check
what the manager sends with it again.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from director.contract.domains import normalize_domain
from director.contract.errors import ValidationError

#: A site name is one DNS label of 2-32 characters, so <name>.<sites_domain> is a host name.
SITE_NAME_PATTERN = r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])"
SITE_NAME = re.compile(f"^{SITE_NAME_PATTERN}$")
SITE_NAME_RULE = "2-32 characters of a-z, 0-9 and -, not starting or ending with -"
MAX_SITE_NAME_LENGTH = 32
SITE_TYPES = ("static", "dynamic")
AVAILABILITY = ("enabled", "not-served", "disabled")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
#: Variables the orchestrator sets itself in every site's container.
RESERVED_ENV = frozenset({"PORT", "HOST", "HOME", "TZ", "PATH", "USER"})
MAX_ENV_VALUE = 4096
#: A local Docker image (the catalogue's or a site's own build), optionally tagged.
IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,127}(:[A-Za-z0-9._-]{1,128})?$")
DEFAULT_IMAGE = "director/debian:bookworm"
MAX_DOMAINS_PER_SITE = 100

MAX_DISK_QUOTA_MB = 10_000_000
#: Number limits: (lowest, highest).
LIMIT_RANGES: dict[str, tuple[float, float]] = {
    "cpus": (0.05, 16.0),
    "memory_mb": (32, 16384),
    "pids": (32, 8192),
}
BODY_SIZE = re.compile(r"[0-9]{1,4}[km]?")
LIMIT_KEYS = ("cpus", "memory_mb", "pids", "client_max_body_size", "disk_quota_mb")
# What the router accepts as a request body limit: bytes, or an nginx size.
_NGINX_SIZE = re.compile(r"([0-9]{1,9})([kmg]?)")


_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
UPSTREAM_RULE = (
    'an upstream is "host:port" with an IPv4 address, an [IPv6] address in brackets or a DNS name, '
    "and a port from 1 to 65535"
)


def normalize_upstream(raw: object) -> str:
    """
    An orchestrator nginx's address as the router proxies to it, in one canonical form
    (lower case, IPv6 compressed in brackets, the port without leading zeros); anything
    else is refused, since the value ends up in nginx configuration.
    """
    if not isinstance(raw, str) or len(raw) > 300 or not raw.isascii():
        raise ValidationError("upstream", UPSTREAM_RULE, code="invalid_request")
    host, sep, port = raw.rpartition(":")
    if not sep or not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValidationError("upstream", f"{UPSTREAM_RULE}; got {raw!r}", code="invalid_request")
    if host.startswith("[") and host.endswith("]"):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
            if address.scope_id is not None:
                raise ValueError("a zone")
        except ValueError:
            raise ValidationError(
                "upstream", f"{UPSTREAM_RULE}; {host} is not an IPv6 address", "invalid_request"
            ) from None
        return f"[{address.compressed}]:{int(port)}"
    name = host.lower()
    labels = name.split(".")
    if all(label.isdigit() for label in labels):
        try:
            return f"{ipaddress.IPv4Address(name)}:{int(port)}"
        except ValueError:
            raise ValidationError(
                "upstream", f"{UPSTREAM_RULE}; {host!r} is not an IPv4 address", "invalid_request"
            ) from None
    if (
        len(name) > 253
        or not all(_HOST_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValidationError(
            "upstream", f"{UPSTREAM_RULE}; {host!r} is not a host name", "invalid_request"
        )
    return f"{name}:{int(port)}"


def is_site_name(name: object) -> bool:
    return isinstance(name, str) and SITE_NAME.fullmatch(name) is not None


def validate_site_name(name: object) -> str:
    """C{name} if it is a site name (L{SITE_NAME}), else L{ValidationError}."""
    if not is_site_name(name):
        raise ValidationError("name", SITE_NAME_RULE)
    assert isinstance(name, str)
    return name


def validate_choice(field_name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(field_name, f"expected one of {', '.join(choices)}")
    assert isinstance(value, str)
    return value


def whole_number(value: object) -> int | None:
    """C{value} as an int if it is a JSON integer (420 or 420.0, as JSON Schema counts)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def normalize_size(raw: object) -> str:
    """A request body limit: bytes (an integer) or an nginx size such as '10m', normalised."""
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 999_999_999:
        return str(raw)
    if isinstance(raw, str):
        match = _NGINX_SIZE.fullmatch(raw.strip().lower())
        if match:
            return match.group(1).lstrip("0").rjust(1, "0") + match.group(2)
    raise ValidationError(
        "max_body_size",
        f"a byte count or a size like '512k', '10m', '1g'; got {raw!r}",
        code="invalid_max_body_size",
    )


@dataclass(frozen=True)
class Limits:
    """Resources of a site (defaults from the design: 0.6 CPU, 100 MB, 256 PIDs)."""

    cpus: float = 0.6
    memory_mb: int = 100
    pids: int = 256
    client_max_body_size: str = "1m"
    #: The site's disk quota in MB; None: the orchestrator's default (orchestrator.disk_quota_mb).
    disk_quota_mb: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "pids": self.pids,
            "client_max_body_size": self.client_max_body_size,
            "disk_quota_mb": self.disk_quota_mb,
        }

    @classmethod
    def from_json(cls, value: object) -> Limits:
        """The limits of C{value} (an object of some of L{LIMIT_KEYS}; the rest default)."""
        if not isinstance(value, Mapping):
            raise ValidationError("limits", f"an object of {', '.join(LIMIT_KEYS)}")
        limits = cls().to_json()
        for key, item in value.items():
            if key in LIMIT_RANGES:
                low, high = LIMIT_RANGES[key]
                if (
                    not isinstance(item, int | float)
                    or isinstance(item, bool)
                    or not (low <= item <= high)
                ):
                    raise ValidationError(f"limits.{key}", f"a number from {low} to {high}")
                limits[key] = int(item) if key != "cpus" else float(item)
            elif key == "client_max_body_size":
                if not isinstance(item, str) or not BODY_SIZE.fullmatch(item):
                    raise ValidationError(f"limits.{key}", "a size like 1m or 512k")
                limits[key] = item
            elif key == "disk_quota_mb":
                whole = whole_number(item)
                if item is not None and (whole is None or not 1 <= whole <= MAX_DISK_QUOTA_MB):
                    raise ValidationError(
                        f"limits.{key}",
                        f"a whole number of MB from 1 to {MAX_DISK_QUOTA_MB}, "
                        "or null for the default",
                    )
                limits[key] = whole
            else:
                raise ValidationError(f"limits.{key}", "unknown limit")
        return cls(**limits)


def _domains(value: object, field_name: str) -> tuple[str, ...]:
    """Canonical custom domains, each once, in order."""
    if not isinstance(value, list):
        raise ValidationError(field_name, "a list of domain names", code="invalid_request")
    if len(value) > MAX_DOMAINS_PER_SITE:
        raise ValidationError(
            field_name,
            f"a site may have at most {MAX_DOMAINS_PER_SITE} custom domains",
            code="too_many_domains",
        )
    domains: list[str] = []
    for raw in value:
        try:
            domain = normalize_domain(raw)
        except ValidationError as e:
            raise ValidationError(field_name, e.reason, code="invalid_domain") from None
        if domain not in domains:
            domains.append(domain)
    return tuple(domains)


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValidationError("env", "expected an object of strings")
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key) or key in RESERVED_ENV:
            raise ValidationError(f"env.{key}", "not an allowed variable name")
        if not isinstance(item, str) or "\x00" in item or len(item) > MAX_ENV_VALUE:
            raise ValidationError(
                f"env.{key}", f"expected a string of at most {MAX_ENV_VALUE} characters"
            )
    return dict(value)


def _fields(data: object, allowed: tuple[str, ...], code: str = "invalid") -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError("body", "expected a JSON object", code=code)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValidationError(
            str(unknown[0]), f"unknown field; expected {', '.join(allowed)}", code=code
        )
    return data


MAX_NGINX_SNIPPET = 10_000
NGINX_SNIPPET_RULE = (
    f"nginx directives for the site's server block, at most {MAX_NGINX_SNIPPET} characters, "
    "with balanced braces (a snippet cannot close the server block)"
)


def validate_nginx_snippet(value: object) -> str | None:
    """
    An administrator's raw nginx directives for a site's server block (None or "": none).
    Only the shape is checked here (text, braces that never close the server block);
    whether nginx takes it is for `nginx -t` on the orchestrator.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_NGINX_SNIPPET or "\x00" in value:
        raise ValidationError("nginx_snippet", NGINX_SNIPPET_RULE)
    depth, quote, comment, escaped = 0, "", False, False
    for char in value:
        if comment:
            comment = char != "\n"
        elif escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            comment = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ValidationError("nginx_snippet", NGINX_SNIPPET_RULE)
    if depth or quote:
        raise ValidationError("nginx_snippet", NGINX_SNIPPET_RULE)
    return value if value.endswith("\n") else value + "\n"


@dataclass(frozen=True)
class SiteSpec:
    """What an orchestrator needs to run and serve a site (C{PUT /v1/sites/<id>})."""

    name: str
    type: str
    availability: str = "enabled"
    image: str = DEFAULT_IMAGE
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    #: Redirects to a custom domain are the router's; the orchestrator serves them too.
    custom_domains: tuple[str, ...] = ()
    #: An administrator's raw nginx directives for the site's server block (nginx -t'd).
    nginx_snippet: str | None = None

    FIELDS = (
        "name",
        "type",
        "availability",
        "image",
        "env",
        "limits",
        "custom_domains",
        "nginx_snippet",
    )

    def to_json(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "type": self.type,
            "availability": self.availability,
            "image": self.image,
            "env": dict(self.env),
            "limits": self.limits.to_json(),
            "custom_domains": list(self.custom_domains),
        }
        if self.nginx_snippet:
            data["nginx_snippet"] = self.nginx_snippet
        return data

    @classmethod
    def from_json(cls, data: object, extra: tuple[str, ...] = ()) -> SiteSpec:
        """Check C{data} (a L{to_json} form; C{extra} fields are the caller's to check)."""
        body = _fields(data, cls.FIELDS + extra)
        image = body.get("image", DEFAULT_IMAGE)
        if not isinstance(image, str) or not IMAGE_NAME.fullmatch(image):
            raise ValidationError("image", "expected a local image name like director/python:3")
        limits = body.get("limits")
        return cls(
            name=validate_site_name(body.get("name")),
            type=validate_choice("type", body.get("type"), SITE_TYPES),
            availability=validate_choice(
                "availability", body.get("availability", "enabled"), AVAILABILITY
            ),
            image=image,
            env=_env(body.get("env", {})),
            limits=Limits() if limits is None else Limits.from_json(limits),
            custom_domains=_domains(body.get("custom_domains", []), "custom_domains"),
            nginx_snippet=validate_nginx_snippet(body.get("nginx_snippet")),
        )


@dataclass(frozen=True)
class RouteSpec:
    """What a router serves for a site besides its own host (C{PUT /v1/sites/<name>})."""

    domains: tuple[str, ...] = ()
    #: The request body limit; None: the router's default.
    max_body_size: str | None = None
    #: "host:port" of the orchestrator nginx that holds the site (L{normalize_upstream});
    #: None: the router's default group (router.upstreams).
    upstream: str | None = None
    #: The host of the site's URL when its purpose's format is not the canonical host
    #: (L{director.contract.urls}); None: the canonical host alone.
    url_host: str | None = None
    #: True: the site is under C{/<name>/} of C{url_host} (a path format), a host it shares.
    url_path: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "domains": list(self.domains),
            "max_body_size": self.max_body_size,
            "upstream": self.upstream,
        }
        # Only when set, so that a site with the default format reads as before.
        if self.url_host is not None:
            data["url_host"] = self.url_host
            data["url_path"] = self.url_path
        return data

    @classmethod
    def from_json(cls, data: object) -> RouteSpec:
        body = _fields(
            data,
            ("domains", "max_body_size", "upstream", "url_host", "url_path"),
            code="invalid_request",
        )
        size = body.get("max_body_size")
        upstream = body.get("upstream")
        url_host = body.get("url_host")
        url_path = body.get("url_path", False)
        if not isinstance(url_path, bool) or (url_path and url_host is None):
            raise ValidationError(
                "url_path", "true (with a url_host) or false", code="invalid_request"
            )
        if url_host is not None:
            try:
                url_host = normalize_domain(url_host)
            except ValidationError as e:
                raise ValidationError("url_host", e.reason, code="invalid_domain") from None
        return cls(
            _domains(body.get("domains", []), "domains"),
            normalize_size(size) if size is not None else None,
            normalize_upstream(upstream) if upstream is not None else None,
            url_host,
            url_path,
        )
