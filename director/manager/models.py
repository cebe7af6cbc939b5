"""
The manager's domain: users, sites and operations as plain values, and the rules for names,
roles and limits (a school's own rules and a user's limits are in
L{director.manager.user_rules}). No I/O.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from director.contract.databases import DatabaseKind, SiteDatabase
from director.contract.errors import ValidationError as ValidationError
from director.contract.sites import AVAILABILITY as AVAILABILITY
from director.contract.sites import MAX_DISK_QUOTA_MB as MAX_DISK_QUOTA_MB
from director.contract.sites import SITE_NAME as SITE_NAME
from director.contract.sites import SITE_TYPES as SITE_TYPES
from director.contract.sites import Limits, RouteSpec, SiteSpec
from director.contract.sites import validate_choice as validate_choice
from director.contract.sites import validate_site_name as contract_site_name
from director.contract.sites import whole_number as whole_number
from director.contract.urls import PURPOSES as PURPOSES
from director.contract.urls import UrlFormats, formats_of
from director.manager.user_rules import ADMIN_PURPOSES as ADMIN_PURPOSES
from director.manager.user_rules import SiteNameRules as SiteNameRules
from director.manager.user_rules import UserLimits as UserLimits
from director.manager.user_rules import membership_refusal as membership_refusal
from director.manager.user_rules import purpose_refusal as purpose_refusal


def iso_utc(value: datetime | None) -> str | None:
    """A time as the API shows it: ISO 8601, a naive one (SQLite's) taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


ROLES = ("student", "teacher", "admin")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,62}$")
# Names that would be confusing or collide with infrastructure hosts.
RESERVED_SITE_NAMES = frozenset(
    {
        "admin", "api", "app", "assets", "auth", "cdn", "dashboard", "director", "docs",
        "ftp", "help", "imap", "login", "mail", "manager", "media", "ns1", "ns2",
        "orchestrator", "pop", "router", "shell", "smtp", "ssh", "static", "status",
        "support", "test", "user", "users", "webmail", "www",
    }
)  # fmt: skip

# The operation parameters a member may see (what they asked for), in operation JSON.
PUBLIC_PARAMS = frozenset({"image", "packages", "old_name"})

# disk_quota_mb None: the orchestrator's default quota (orchestrator.disk_quota_mb)
DEFAULT_LIMITS: dict[str, Any] = Limits().to_json()


def validate_site_name(name: object) -> str:
    """A site name (the contract's rule) that is not one of the built-in reserved names."""
    name = contract_site_name(name)
    if name in RESERVED_SITE_NAMES:
        raise ValidationError("name", f"{name!r} is reserved; choose another name")
    return name


# A local Docker image reference of the catalogue (director/python:3).
IMAGE_REFERENCE = re.compile(r"[a-z0-9][a-z0-9._/-]{0,100}:[A-Za-z0-9._-]{1,60}")

SEARCH_KEYS = ("name", "user", "desc", "id")
MAX_SEARCH_TERMS = 10


def parse_query(q: str) -> list[tuple[str, str]]:
    """
    A sites search (`robotics name:blog user:alice desc:"science club" id:12 "two words"`)
    as terms that must all match: qualified ones their field, the rest (a word, or words in
    quotes) the name or the description. Unbalanced quotes count as plain characters.
    """
    try:
        words = shlex.split(q)
    except ValueError:
        words = q.replace('"', " ").replace("'", " ").split()
    terms: list[tuple[str, str]] = []
    for word in words[:MAX_SEARCH_TERMS]:
        key, sep, value = word.partition(":")
        if sep and key in SEARCH_KEYS and value:
            terms.append((key, value[:100]))
        elif word.strip():
            terms.append(("any", word.strip()[:100]))
    return terms


def validate_username(name: object) -> str:
    if not isinstance(name, str) or not USERNAME.fullmatch(name):
        raise ValidationError("username", "1-32 characters of a-z, 0-9, '.', '_' and '-'")
    return name


def validate_description(value: object) -> str:
    if not isinstance(value, str) or len(value) > 2000 or "\x00" in value:
        raise ValidationError("description", "text of at most 2000 characters")
    return value


def validate_packages(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > 100:
        raise ValidationError("packages", "a list of at most 100 Debian package names")
    for package in value:
        if not isinstance(package, str) or not PACKAGE.fullmatch(package):
            raise ValidationError("packages", f"not a Debian package name: {str(package)[:70]!r}")
    return sorted(set(value))


def validate_limits(value: object) -> dict[str, Any]:
    """The limits of C{value} (the contract's rule) as stored: the defaults for the rest."""
    return Limits.from_json(value).to_json()


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    is_active: bool = True
    accepted_guidelines: bool = False
    full_name: str = ""
    email: str = ""
    #: For administrators' scripts: API tokens only, never a password, SSH or a sign-in.
    is_service: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_teacher(self) -> bool:
        return self.role in ("teacher", "admin")

    @property
    def is_student(self) -> bool:
        return self.role == "student"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "is_active": self.is_active,
            "accepted_guidelines": self.accepted_guidelines,
            "full_name": self.full_name,
            "email": self.email,
            "is_service": self.is_service,
        }


@dataclass(frozen=True)
class Database:
    kind: str
    name: str
    username: str
    password: str
    host: str
    port: int
    host_id: int

    def site_database(self) -> SiteDatabase:
        """The contract's form, which has the one URL and environment of a site's database."""
        kind = cast(DatabaseKind, self.kind)
        return SiteDatabase(kind, self.name, self.username, self.password, self.host, self.port)

    def url(self) -> str:
        return self.site_database().url

    def to_json(self, show_password: bool = False) -> dict[str, Any]:
        return {
            "type": self.kind,
            "name": self.name,
            "username": self.username,
            "password": self.password if show_password else None,
            "host": self.host,
            "port": self.port,
            "url": self.url() if show_password else None,
        }


@dataclass(frozen=True)
class Site:
    id: int
    name: str
    type: str
    purpose: str
    availability: str
    description: str
    image: str
    image_tag: str | None
    packages: tuple[str, ...]
    limits: dict[str, Any]
    members: tuple[str, ...] = ()
    #: Usernames added as members before they first signed in.
    pending_members: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    database: Database | None = None
    admin_comments: str = ""
    created_at: datetime | None = None
    public_comment: str = ""
    #: bytes, as the orchestrator last measured them (None: not measured yet)
    disk_usage_bytes: int | None = None
    #: the quota the orchestrator last reported (its default unless the site has its own)
    disk_quota_bytes: int | None = None
    #: the name of the orchestrator that runs the site (None: not placed yet)
    orchestrator: str | None = None
    #: raw nginx directives an administrator added to its server block (None: none)
    nginx_snippet: str | None = None

    @property
    def disk_quota(self) -> int | None:
        """The site's quota in bytes: its own if an administrator set one, else as reported."""
        own = self.limits.get("disk_quota_mb")
        return own * 1024 * 1024 if own else self.disk_quota_bytes

    def url(self, formats: UrlFormats | str, scheme: str = "http", port: int | None = None) -> str:
        """The site's URL by its purpose's format (C{formats}; a sites domain: the default)."""
        return formats_of(formats).url(self.name, self.purpose, scheme, port)

    @property
    def running_image(self) -> str:
        return self.image_tag or self.image

    def site_spec(self) -> SiteSpec:
        """What the orchestrator needs to run and serve this site."""
        return SiteSpec(
            name=self.name,
            type=self.type,
            availability=self.availability,
            image=self.running_image,
            env=self.database_env(),
            limits=Limits.from_json(self.limits),
            # Redirects to a custom domain are the router's (once its certificate is served).
            custom_domains=tuple(self.domains),
            nginx_snippet=self.nginx_snippet,
        )

    def orchestrator_spec(self) -> dict[str, Any]:
        """L{site_spec} as JSON."""
        return self.site_spec().to_json()

    def route_spec(self, formats: UrlFormats | None = None) -> RouteSpec:
        """What the router serves for this site besides its own host (and its URL's)."""
        url_host, url_path = formats.route(self.name, self.purpose) if formats else (None, False)
        return RouteSpec(
            tuple(self.domains),
            self.limits["client_max_body_size"],
            url_host=url_host,
            url_path=url_path,
        )

    def database_env(self) -> dict[str, str]:
        db = self.database
        return {} if db is None else db.site_database().environment()

    def to_json(self, formats: UrlFormats | str, show_secrets: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "purpose": self.purpose,
            "availability": self.availability,
            "description": self.description,
            "url": self.url(formats),
            "image": self.image,
            "packages": list(self.packages),
            "limits": self.limits,
            "members": list(self.members),
            "pending_members": list(self.pending_members),
            "domains": list(self.domains),
            "database": self.database.to_json(show_secrets) if self.database else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "public_comment": self.public_comment,
            "disk_usage_bytes": self.disk_usage_bytes,
            "disk_quota_bytes": self.disk_quota,
        }


ORCHESTRATOR_STATES = ("active", "draining")


@dataclass(frozen=True)
class Orchestrator:
    """One orchestrator of the pool, as registered (C{sites}: how many it holds)."""

    id: int
    name: str
    url: str
    #: the "host:port" of its nginx, where routers forward its sites
    nginx: str
    #: active, or draining (it keeps its sites but gets no new one)
    state: str
    created_at: datetime | None = None
    sites: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "nginx": self.nginx,
            "state": self.state,
            "sites": self.sites,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


def ssh_access(site_name: str, username: str, host: str, port: int) -> dict[str, str]:
    """
    Where C{username} reaches the site through the shell server: an SFTP URL (the site after
    an escaped slash in the user name; scp and rsync use the same) and the git remote for
    deploys (the site in the path, since git cannot take a slash in the user name).
    """
    from urllib.parse import quote

    user = quote(username, safe="")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "sftp_url": f"sftp://{user}%2F{site_name}@{address}/site",
        "git_url": f"ssh://{user}@{address}/{site_name}.git",
    }


# Fields of a site's record that only administrators see (in the API and in events).
ADMIN_ONLY_SITE_FIELDS = frozenset({"admin_comments", "orchestrator", "nginx_snippet"})


def site_record(site: Site, formats: UrlFormats | str) -> dict[str, Any]:
    """The whole record of C{site} as JSON, admin-only fields included (published raw)."""
    data = site.to_json(formats)
    data["admin_comments"] = site.admin_comments
    data["orchestrator"] = site.orchestrator
    data["nginx_snippet"] = site.nginx_snippet
    return data


def site_view(record: dict[str, Any], is_admin: bool) -> dict[str, Any]:
    """What one reader sees of a L{site_record}: members lose the admin-only fields."""
    if is_admin:
        return dict(record)
    return {k: v for k, v in record.items() if k not in ADMIN_ONLY_SITE_FIELDS}


@dataclass(frozen=True)
class Action:
    position: int
    name: str
    status: str
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message}


@dataclass(frozen=True)
class Operation:
    id: int
    site_id: int | None
    site_name: str
    type: str
    status: str
    params: dict[str, Any]
    error: str | None
    actions: tuple[Action, ...] = field(default_factory=tuple)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "site": self.site_name,
            "type": self.type,
            "status": self.status,
            "error": self.error,
            # What was asked (the image and packages of a set_image, kept if it fails).
            "params": {k: v for k, v in self.params.items() if k in PUBLIC_PARAMS},
            "actions": [a.to_json() for a in self.actions],
            # Routers that were down when a change went to the others (they catch up later).
            "degraded_routers": list(self.params.get("degraded_routers", [])),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


# Error codes of the orchestrator whose messages are written for the person (file and SQL
# errors naming the user's own paths and statements): relayed as they are. Any other
# refusal is answered without the component's words, which may name internal ids.
USER_ERROR_CODES = frozenset(
    {
        "not_found", "exists", "not_a_directory", "is_a_directory", "is_a_symlink",
        "not_a_file", "bad_path", "too_large", "bad_mode", "directory_not_empty",
        "limit_exceeded", "permission_denied", "no_space", "bad_request", "bad_json",
        "quota_exceeded",
        "query_failed", "query_timeout", "access_denied", "invalid_domain", "reserved_domain",
        "build_failed", "bad_packages", "not_ready",
    }
)  # fmt: skip


def public_error(status: int, code: str, detail: str) -> tuple[int, str, str]:
    """What a user is told when a component answers C{status}/C{code}/C{detail}."""
    if code == "unknown_site":
        return (
            409,
            "site_not_ready",
            "the site is not set up yet; try again in a moment (an administrator can repair it)",
        )
    if 400 <= status < 500 and code in USER_ERROR_CODES:
        return status, code, detail
    if 400 <= status < 500:
        return status, "refused", "Director could not do this; an administrator can see why"
    return 502, "server_error", "something failed on Director's side; try again shortly"
