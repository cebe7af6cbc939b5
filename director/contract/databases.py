"""
Database servers (L{DatabaseHost}) and a site's database on one (L{SiteDatabase}): how the
manager names them to an orchestrator, and the one URL and environment a site gets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args
from urllib.parse import quote

from director.contract.errors import ValidationError
from director.contract.sites import validate_choice, whole_number

DatabaseKind = Literal["postgres", "mysql"]
DATABASE_KINDS: tuple[DatabaseKind, ...] = get_args(DatabaseKind)
#: A database server's address: a host name (labels of letters, digits and -) or an IP address.
HOST_ADDRESS = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+|[0-9a-fA-F:.]{2,45}"
)
#: A UNIX socket (a directory for PostgreSQL, the socket file for MySQL), for admin_host only.
SOCKET_PATH = re.compile(r"/[^\x00-\x1f]{0,252}")
MAX_CREDENTIAL_LENGTH = 253
#: The fields of a database host, as the manager stores them and sends them.
DATABASE_HOST_FIELDS = (
    "kind",
    "admin_host",
    "admin_port",
    "admin_user",
    "admin_password",
    "container_host",
    "container_port",
)


def _port(value: object, field_name: str) -> int:
    port = whole_number(value)
    if port is None or not 1 <= port <= 65535:
        raise ValidationError(field_name, "a port number from 1 to 65535")
    return port


@dataclass(frozen=True)
class DatabaseHost:
    """
    A database server: how its administrator logs in (C{admin_*}), and where site containers
    reach it (C{container_*}, often another address such as the Docker bridge 172.17.0.1;
    None: the admin address). An C{admin_host} starting with C{/} is a UNIX socket.
    """

    kind: DatabaseKind
    admin_host: str
    admin_port: int
    admin_user: str
    admin_password: str = field(repr=False)
    container_host: str | None = None
    container_port: int | None = None

    @property
    def site_host(self) -> str:
        return self.container_host or self.admin_host

    @property
    def site_port(self) -> int:
        return self.container_port or self.admin_port

    def site_database(self, name: str, username: str, password: str) -> SiteDatabase:
        """A site database on this server, addressed the way containers reach it."""
        return SiteDatabase(self.kind, name, username, password, self.site_host, self.site_port)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in DATABASE_HOST_FIELDS}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DatabaseHost:
        """A host from a stored row (which may hold more columns), unchecked."""
        values: dict[str, Any] = {k: record.get(k) for k in DATABASE_HOST_FIELDS}
        return cls(**values)

    @classmethod
    def from_json(cls, data: object, sockets: bool = True) -> DatabaseHost:
        """
        Check C{data} (a L{to_json} form). Without C{sockets}, C{admin_host} must be a
        network address.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(
                "host", "expected an object of " + ", ".join(DATABASE_HOST_FIELDS)
            )
        unknown = sorted(set(data) - set(DATABASE_HOST_FIELDS))
        if unknown:
            raise ValidationError(str(unknown[0]), "unknown field")
        kind = cast(DatabaseKind, validate_choice("kind", data.get("kind"), DATABASE_KINDS))
        for key in ("admin_user", "admin_password"):
            value = data.get(key)
            if not isinstance(value, str) or not 0 < len(value) <= MAX_CREDENTIAL_LENGTH:
                raise ValidationError(
                    key, f"required: text of 1 to {MAX_CREDENTIAL_LENGTH} characters"
                )
        admin_host = data.get("admin_host")
        if not isinstance(admin_host, str) or not (
            HOST_ADDRESS.fullmatch(admin_host) or (sockets and SOCKET_PATH.fullmatch(admin_host))
        ):
            raise ValidationError("admin_host", "required: a host name or an IP address")
        container_host = data.get("container_host")
        if container_host is not None and (
            not isinstance(container_host, str) or not HOST_ADDRESS.fullmatch(container_host)
        ):
            raise ValidationError("container_host", "a host name or an IP address, or null")
        admin_port = _port(data.get("admin_port"), "admin_port")
        container_port = data.get("container_port")
        return cls(
            kind=kind,
            admin_host=admin_host,
            admin_port=admin_port,
            admin_user=data["admin_user"],
            admin_password=data["admin_password"],
            container_host=container_host,
            container_port=None
            if container_port is None
            else _port(container_port, "container_port"),
        )


@dataclass(frozen=True)
class SiteDatabase:
    """One site's database: where its container reaches it and how it logs in."""

    kind: DatabaseKind
    name: str
    username: str
    password: str = field(repr=False)
    host: str
    port: int

    @property
    def url(self) -> str:
        """
        C{postgresql://...} or C{mysql://...}: user, password and database name
        percent-quoted, an IPv6 address in brackets.
        """
        scheme = "postgresql" if self.kind == "postgres" else "mysql"
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = quote(self.username, safe="")
        password = quote(self.password, safe="")
        return f"{scheme}://{user}:{password}@{host}:{self.port}/{quote(self.name, safe='')}"

    def environment(self) -> dict[str, str]:
        """The variables a dynamic site's container gets (see DESIGN.md, site layout)."""
        url = self.url
        return {
            "DIRECTOR_DATABASE_URL": url,
            "DATABASE_URL": url,
            "DIRECTOR_DATABASE_TYPE": self.kind,
            "DIRECTOR_DATABASE_HOST": self.host,
            "DIRECTOR_DATABASE_PORT": str(self.port),
            "DIRECTOR_DATABASE_NAME": self.name,
            "DIRECTOR_DATABASE_USERNAME": self.username,
            "DIRECTOR_DATABASE_PASSWORD": self.password,
        }


@dataclass(frozen=True)
class DatabaseSpec:
    """A site's database as the manager names it to an orchestrator (C{PUT /v1/databases})."""

    host: DatabaseHost
    name: str
    username: str
    password: str = field(repr=False)

    def site_database(self) -> SiteDatabase:
        return self.host.site_database(self.name, self.username, self.password)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host.to_json(),
            "name": self.name,
            "username": self.username,
            "password": self.password,
        }

    @classmethod
    def from_json(cls, data: object) -> DatabaseSpec:
        """
        Check C{data}'s shape (names and passwords are checked by the server's own rules
        before any SQL runs); other fields of C{data} are the caller's.
        """
        if not isinstance(data, Mapping):
            raise ValidationError("body", 'expected {"host": {...}, "name", "username", ...}')
        host = DatabaseHost.from_json(data.get("host"))
        name, username, password = (str(data.get(k, "")) for k in ("name", "username", "password"))
        return cls(host, name, username, password)
