"""
The checks of Director's configuration values: each takes the setting's key and its value and
raises L{ConfigError}, naming the key and what was expected, for a value it does not accept.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from director.common.errors import StartupError
from director.contract.domains import LABEL
from director.contract.errors import ValidationError
from director.contract.sites import is_site_name
from director.contract.urls import UrlFormats


class ConfigError(StartupError):
    """The configuration cannot be used; the message says which key and why."""


def _port(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ConfigError(f"{key}: expected a port number from 1 to 65535, got {value!r}")


def _host(key: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected an IP address or host name, got {value!r}")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", value):
            raise ConfigError(
                f"{key}: expected an IP address or host name, got {value!r}"
            ) from None


def _url(key: str, value: object) -> None:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: expected an http:// or https:// URL, got {value!r}")


def _optional_proxy(key: str, value: object) -> None:
    """An http:// proxy URL (no credentials, no path), or "" for none."""
    if value == "":
        return
    parts = urlsplit(value) if isinstance(value, str) else None
    if (
        parts is None
        or parts.scheme != "http"
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or any(c.isspace() for c in str(value))
    ):
        raise ConfigError(
            f"{key}: expected an http:// proxy like 'http://10.0.0.1:3142' or \"\", got {value!r}"
        )


def _domain(key: str, value: object) -> None:
    label = LABEL.pattern
    if not isinstance(value, str) or not re.fullmatch(rf"{label}(\.{label})*", value):
        raise ConfigError(f"{key}: expected a lower-case DNS name like 'sites.example.org'")


def _network_name(key: str, value: object) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", value):
        raise ConfigError(f"{key}: expected a Docker network name, got {value!r}")


def _subnet(key: str, value: object) -> None:
    try:
        network = ipaddress.ip_network(value) if isinstance(value, str) else None
    except ValueError:
        network = None
    if network is None or network.version != 4 or network.prefixlen > 24:
        raise ConfigError(f"{key}: expected an IPv4 subnet like 172.29.0.0/16, got {value!r}")


def _ipv4_networks(key: str, value: object) -> None:
    """A comma-separated list of IPv4 networks (a TOML string, like the host:port lists)."""
    items = [i for i in re.split(r"[,\s]+", value) if i] if isinstance(value, str) else None
    try:
        for item in items if items is not None else [None]:
            ipaddress.IPv4Network(item)
    except (ValueError, TypeError):
        raise ConfigError(
            f'{key}: expected IPv4 networks like "169.254.0.0/16, 10.0.0.0/8", got {value!r}'
        ) from None


def _boolean(key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _database_url(key: str, value: object) -> None:
    if not isinstance(value, str) or (
        value and not re.match(r"^(sqlite|postgresql(\+psycopg)?)://", value)
    ):
        raise ConfigError(
            f"{key}: expected sqlite:///path or postgresql+psycopg://..., got {value!r}"
        )


def _redis_url(key: str, value: object) -> None:
    if not isinstance(value, str) or (
        value and not re.fullmatch(r"redis://[A-Za-z0-9.-]+:[0-9]{1,5}", value)
    ):
        raise ConfigError(f"{key}: expected redis://host:port or empty, got {value!r}")


def _bcrypt_rounds(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 4 <= value <= 16:
        raise ConfigError(f"{key}: expected an integer from 4 to 16, got {value!r}")


def _optional_url(key: str, value: object) -> None:
    if value != "":
        _url(key, value)


def _optional_role(key: str, value: object) -> None:
    if value not in ("", "student", "teacher"):
        raise ConfigError(f"{key}: expected student, teacher or empty, got {value!r}")


def _optional_port(key: str, value: object) -> None:
    if value != 0:
        _port(key, value)


def _optional_host(key: str, value: object) -> None:
    if value != "":
        _host(key, value)


def _networks(key: str, value: object) -> None:
    """Comma-separated IP addresses or networks (CIDR); empty is none."""
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        for item in (i for i in re.split(r"[,\s]+", value) if i):
            ipaddress.ip_network(item, strict=False)
    except ValueError:
        raise ConfigError(
            f"{key}: expected IP addresses or networks separated by commas "
            f"(like '127.0.0.1, 10.0.0.0/8'), or empty; got {value!r}"
        ) from None


def _domains(key: str, value: object) -> None:
    """Comma-separated DNS names; empty is none."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected DNS names separated by commas, got {value!r}")
    for item in (i for i in re.split(r"[,\s]+", value) if i):
        _domain(key, item)


def _mail_address(key: str, value: object) -> None:
    address = r"[^@\s<>\"]{1,64}@[A-Za-z0-9.-]{1,253}"
    if not isinstance(value, str) or not re.fullmatch(address, value):
        raise ConfigError(f"{key}: expected an e-mail address like director@school.example")


def _positive(key: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key}: expected a positive number, got {value!r}")


def _count(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100_000:
        raise ConfigError(f"{key}: expected a whole number from 0 to 100000, got {value!r}")


def _whole(low: int, high: int) -> Callable[[str, object], None]:
    def check(key: str, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"{key}: expected a whole number from {low} to {high}, got {value!r}")

    return check


def _zero_or_one(key: str, value: object) -> None:
    if value not in (0, 1) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected 0 or 1, got {value!r}")


def _text(key: str, value: object) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 200 or "\n" in value:
        raise ConfigError(f"{key}: expected one line of text (at most 200 characters)")


def _long_text(key: str, value: object) -> None:
    if not isinstance(value, str) or len(value) > 2000 or "\x00" in value:
        raise ConfigError(f"{key}: expected text of at most 2000 characters")


def _optional_line(key: str, value: object) -> None:
    if value != "":
        _text(key, value)


def _regex(key: str, value: object) -> None:
    try:
        re.compile(value if isinstance(value, str) else "(")
    except re.error as e:
        raise ConfigError(f"{key}: not a regular expression ({e})") from None


def _site_names(key: str, value: object) -> None:
    names = re.split(r"[,\s]+", value) if isinstance(value, str) else ["?"]
    for name in filter(None, names):
        if not is_site_name(name):
            raise ConfigError(f"{key}: {name!r} is not a site name")


def _docker_url(key: str, value: object) -> None:
    if value != "" and (
        not isinstance(value, str)
        or not re.fullmatch(r"unix:///[^\s\0]+|tcp://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}", value)
    ):
        raise ConfigError(
            f'{key}: expected unix:///path/docker.sock or tcp://host:port, or "" for the '
            f"default engine; got {value!r}"
        )


def _node_name(key: str, value: object) -> None:
    if value != "" and (
        not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,62}", value)
    ):
        raise ConfigError(
            f'{key}: expected a swarm node\'s hostname, or "" for the local one; got {value!r}'
        )


def _optional_host_port(key: str, value: object) -> None:
    """One host:port ([v6]:port for IPv6), or "" for none."""
    if value == "":
        return
    if not isinstance(value, str) or "," in value or len(value.split()) != 1:
        raise ConfigError(f"{key}: expected one host:port (like '10.0.0.5:8180'), got {value!r}")
    _host_ports(key, value)


def _orchestrator_name(key: str, value: object) -> None:
    if not is_site_name(value):
        raise ConfigError(
            f"{key}: expected a lowercase name (2-32 of a-z, 0-9 and -), got {value!r}"
        )


def _tls_file(key: str, value: object) -> None:
    if value != "" and (not isinstance(value, str) or not value.startswith("/") or "\0" in value):
        raise ConfigError(f'{key}: expected an absolute path, or "" for none; got {value!r}')


def _check_docker_tls(section: Any) -> None:
    """The orchestrator's Docker TLS files: all three or none, each there, for a tcp:// URL."""
    names = ("docker_tls_ca", "docker_tls_cert", "docker_tls_key")
    given = [n for n in names if getattr(section, n)]
    if not given:
        return
    missing = [n for n in names if n not in given]
    if missing:
        raise ConfigError(
            f"orchestrator.{missing[0]}: needed with orchestrator.{given[0]} (Docker TLS takes "
            "a CA, a client certificate and its key: all three, or none)"
        )
    for name in names:
        path = Path(getattr(section, name))
        if not path.is_file():
            raise ConfigError(f"orchestrator.{name}: {path} is not a file")
    urls = (section.docker_url, section.swarm_manager_url)
    if not any(u.startswith("tcp://") for u in urls):
        raise ConfigError(
            f"orchestrator.{given[0]}: Docker TLS is for a tcp:// engine, but neither "
            "orchestrator.docker_url nor orchestrator.swarm_manager_url is one"
        )


def _check(validator: Callable[[str, object], None]) -> Any:
    return {"check": validator}


def _optional(validator: Callable[[str, object], None]) -> Callable[[str, object], None]:
    """C{validator}, except that the empty string (the "not set" value) is accepted."""

    def check(key: str, value: object) -> None:
        if value != "":
            validator(key, value)

    return check


def router_urls(value: str, default: str) -> list[tuple[str, str]]:
    """
    The routers of C{router.urls} as (name, url): comma-separated "url" or "name=url" entries
    (a name defaults to the URL's host:port); "" means the one router at C{default}.
    L{ValueError} for an entry that is not an http(s) URL or a name given twice.
    """
    entries = [e for e in re.split(r"[,\s]+", value) if e] or [default]
    routers: list[tuple[str, str]] = []
    for entry in entries:
        name, sep, url = entry.partition("=")
        if not sep:
            name, url = "", entry
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{entry!r} is not an http:// or https:// URL")
        name = name or parts.netloc
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.:\[\]-]{0,62}", name):
            raise ValueError(f"{name!r} is not a router name (letters, digits, '.', '-', '_')")
        if any(n == name for n, _ in routers):
            raise ValueError(f"the router {name} is named twice")
        routers.append((name, url.rstrip("/")))
    return routers


def _router_urls(key: str, value: object) -> None:
    try:
        router_urls(value if isinstance(value, str) else "", "http://default.invalid")
    except ValueError as e:
        raise ConfigError(
            f"{key}: expected router URLs separated by commas, each optionally named "
            f"(like 'a=http://10.0.0.5:8200, b=http://10.0.0.6:8200'): {e}"
        ) from None


def _ip(key: str, value: object) -> None:
    try:
        ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        raise ConfigError(f"{key}: expected an IP address, got {value!r}") from None


def _host_ports(key: str, value: object) -> None:
    """A comma-separated list of host:port ([v6]:port for IPv6): a TOML string, not an array,
    so that `director init` can write it back as it writes every other value."""
    items = [i for i in re.split(r"[,\s]+", value) if i] if isinstance(value, str) else []
    for item in items:
        host, _, port = item.rpartition(":")
        v6 = host.startswith("[") and host.endswith("]")
        try:
            _host(key, host[1:-1] if v6 else host)
            if v6:
                ipaddress.IPv6Address(host[1:-1])
            _port(key, int(port) if port.isdigit() else port)
        except (ConfigError, ValueError):
            items = []
            break
    if not items:
        raise ConfigError(
            f"{key}: expected host:port entries separated by commas "
            f"(like '10.0.0.5:8180, 10.0.0.6:8180'), got {value!r}"
        )


def _absolute_path(key: str, value: object) -> None:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ConfigError(f'{key}: expected an absolute path, or "" for none; got {value!r}')


def _email(key: str, value: object) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[^@\s\"'<>;,]+@[A-Za-z0-9.-]+", value):
        raise ConfigError(f'{key}: expected an e-mail address, or "" for none; got {value!r}')


def _nginx_size(key: str, value: object) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,9}[kKmMgG]?", value):
        raise ConfigError(f"{key}: expected a size like '2m', '512k' or '1048576', got {value!r}")


def _restic_repository(key: str, value: object) -> None:
    if not isinstance(value, str) or "\0" in value or "\n" in value or len(value) > 1000:
        raise ConfigError(
            f'{key}: expected a restic repository (a path, "sftp:...", "s3:...", "rest:...") '
            f'or "" for <state_dir>/backups/restic; got {value!r}'
        )


def _url_format_table(key: str, value: object) -> None:
    """A table of purpose = "format" strings (checked against each other in L{url_formats})."""
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(
            f'{key}: expected a table of purpose = "format" strings, like '
            f'personal = "user.example.org/{{name}}/"; got {value!r}'
        )


def url_formats(sites_domain: str, raw: Mapping[str, str], dashboard_host: str) -> UrlFormats:
    """C{director.url_formats} checked (L{UrlFormats.parse}), or L{ConfigError} naming the key."""
    try:
        formats = UrlFormats.parse(sites_domain, raw)
    except ValidationError as e:
        raise ConfigError(f"director.url_formats.{e.field}: {e.reason}") from None
    for purpose, parsed in formats.formats.items():
        if parsed.path and parsed.host == dashboard_host:
            raise ConfigError(
                f"director.url_formats.{purpose}: {parsed} would put sites on the dashboard's "
                f"host {dashboard_host} (manager.dashboard_host)"
            )
    return formats
