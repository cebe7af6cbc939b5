"""
The manager's database: SQLite under var/ by default, PostgreSQL by config, migrated with
Alembic. Every query runs in the store's own bounded thread pool, never on the reactor
thread; each public method is one transaction.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    and_,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from director.common.threads import Runner
from director.manager import schema as t
from director.manager.models import (
    DEFAULT_LIMITS,
    Action,
    Database,
    Operation,
    Site,
    User,
)
from director.manager.schedules import Task, TaskRun

T = TypeVar("T")
TOKEN_PREFIX = "dir_"  # noqa: S105 (a prefix, not a secret)
# A token's last use is recorded this coarsely (one write per token per interval at most).
TOKEN_USE_GRANULARITY = timedelta(minutes=5)


class Keep:
    """Marks an argument left as it is (where None already means "remove")."""


KEEP = Keep()


class Conflict(Exception):
    """The change conflicts with existing data (a name taken, an operation running)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFound(LookupError):
    """No such object (or the caller may not know it exists)."""


def _banner(row: Any) -> dict[str, Any]:
    created, expires = _aware(row.created_at), _aware(row.expires_at)
    return {
        "id": row.id,
        "message": row.message,
        "level": row.level,
        "created_at": created.isoformat() if created else None,
        "expires_at": expires.isoformat() if expires else None,
    }


def _new_id(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _my_running_run(run_id: int, worker: str) -> Any:
    """An update of run C{run_id} while C{worker} holds it and it runs (a lease's writes)."""
    return update(t.task_runs).where(
        and_(
            t.task_runs.c.id == run_id,
            t.task_runs.c.claimed_by == worker,
            t.task_runs.c.status == "running",
        )
    )


def _updated_one(conn: Connection, statement: Any) -> bool:
    """
    Run a conditional UPDATE (or DELETE) meant for one row: whether it matched it. How one
    manager among several wins a claim, or learns that its lease is still its own.
    """
    return bool(conn.execute(statement).rowcount == 1)


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _private_sqlite_file(url: str) -> None:
    """
    Create the SQLite file 0600 (or make it so): it holds password hashes, session and token
    hashes and database passwords. SQLite gives its -wal and -shm files the same mode.
    """
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for extra in ("", "-wal", "-shm"):
        candidate = Path(str(path) + extra)
        if candidate.exists():
            candidate.chmod(0o600)


def make_engine(url: str) -> Engine:
    """An engine for C{url}; SQLite gets WAL and foreign keys, and a file only we may read."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # Sessions in UTC: timestamps come back as +00:00 (as on SQLite), not in the server's zone.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        connect_args={"connect_timeout": 10, "options": "-c timezone=UTC"},
    )


def migrate(engine: Engine) -> None:
    """Bring the schema up to date (blocking; at start-up and from `director init`)."""
    from alembic import command
    from alembic.config import Config

    import director.manager.migrations as migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


class Store:
    """Typed access to the manager's data; every method returns a Deferred."""

    def __init__(self, engine: Engine, runner: Runner) -> None:
        self.engine = engine
        self._runner = runner

    def _tx(self, f: Callable[[Connection], T]) -> Deferred[T]:
        def run() -> T:
            with self.engine.begin() as conn:
                return f(conn)

        return self._runner.run(run)

    # -- users -------------------------------------------------------------------------------

    @staticmethod
    def _user(row: Any) -> User:
        return User(
            id=row.id,
            username=row.username,
            role=row.role,
            is_active=row.is_active,
            accepted_guidelines=row.accepted_guidelines,
            full_name=row.full_name,
            email=row.email,
            is_service=row.is_service,
        )

    def create_user(
        self,
        username: str,
        role: str,
        password_hash: str | None = None,
        full_name: str = "",
        email: str = "",
        is_service: bool = False,
    ) -> Deferred[User]:
        def create(conn: Connection) -> User:
            try:
                result = conn.execute(
                    insert(t.users).values(
                        username=username,
                        role=role,
                        password_hash=password_hash,
                        full_name=full_name,
                        email=email,
                        is_active=True,
                        accepted_guidelines=is_service,  # scripts read no guidelines
                        created_at=now(),
                        is_service=is_service,
                    )
                )
            except IntegrityError:
                raise Conflict("username_taken", f"user {username} already exists") from None
            user_id = _new_id(result)
            self._attach_pending(conn, user_id, username)
            row = conn.execute(select(t.users).where(t.users.c.id == user_id)).one()
            return self._user(row)

        return self._tx(create)

    def get_user(self, username: str) -> Deferred[User | None]:
        def get(conn: Connection) -> User | None:
            row = conn.execute(select(t.users).where(t.users.c.username == username)).first()
            return self._user(row) if row else None

        return self._tx(get)

    def password_hash(self, username: str) -> Deferred[tuple[User, str | None] | None]:
        def get(conn: Connection) -> tuple[User, str | None] | None:
            row = conn.execute(select(t.users).where(t.users.c.username == username)).first()
            return (self._user(row), row.password_hash) if row else None

        return self._tx(get)

    def list_users(self) -> Deferred[list[User]]:
        return self._tx(
            lambda conn: [
                self._user(r) for r in conn.execute(select(t.users).order_by(t.users.c.username))
            ]
        )

    def update_user(self, username: str, **values: Any) -> Deferred[User]:
        allowed = {
            "role",
            "is_active",
            "accepted_guidelines",
            "password_hash",
            "full_name",
            "email",
        }
        if not set(values) <= allowed:
            raise ValueError(f"cannot update {set(values) - allowed}")

        def change(conn: Connection) -> User:
            result = conn.execute(
                update(t.users).where(t.users.c.username == username).values(**values)
            )
            if result.rowcount == 0:
                raise NotFound(username)
            return self._user(
                conn.execute(select(t.users).where(t.users.c.username == username)).one()
            )

        return self._tx(change)

    # -- API tokens and SSH keys ---------------------------------------------------------------

    def create_token(
        self, user_id: int, name: str, expires_at: datetime | None = None
    ) -> Deferred[str]:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def create(conn: Connection) -> str:
            conn.execute(
                insert(t.api_tokens).values(
                    user_id=user_id,
                    name=name,
                    token_hash=_hash(token),
                    created_at=now(),
                    expires_at=expires_at,
                )
            )
            return token

        return self._tx(create)

    def user_for_token(self, token: str) -> Deferred[User | None]:
        """The token's user, unless the token is unknown, revoked or expired."""

        def get(conn: Connection) -> User | None:
            row = conn.execute(
                select(
                    t.users,
                    t.api_tokens.c.id.label("token_id"),
                    t.api_tokens.c.expires_at.label("token_expires_at"),
                    t.api_tokens.c.last_used_at.label("token_last_used_at"),
                )
                .join(t.api_tokens, t.api_tokens.c.user_id == t.users.c.id)
                .where(t.api_tokens.c.token_hash == _hash(token))
            ).first()
            if row is None:
                return None
            moment = now()
            expires = _aware(row.token_expires_at)
            if expires is not None and expires <= moment:
                return None
            last = _aware(row.token_last_used_at)
            if last is None or moment - last > TOKEN_USE_GRANULARITY:
                conn.execute(
                    update(t.api_tokens)
                    .where(t.api_tokens.c.id == row.token_id)
                    .values(last_used_at=moment)
                )
            return self._user(row)

        return self._tx(get)

    def list_tokens(self, user_id: int) -> Deferred[list[dict[str, Any]]]:
        """The user's tokens (never the secrets), newest first, expired ones included."""

        def list_(conn: Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                select(t.api_tokens)
                .where(t.api_tokens.c.user_id == user_id)
                .order_by(t.api_tokens.c.id.desc())
            )
            moment = now()
            out = []
            for r in rows:
                expires = _aware(r.expires_at)
                last = _aware(r.last_used_at)
                out.append(
                    {
                        "id": r.id,
                        "name": r.name,
                        "created_at": _aware(r.created_at).isoformat(),  # type: ignore[union-attr]
                        "expires_at": expires.isoformat() if expires else None,
                        "last_used_at": last.isoformat() if last else None,
                        "expired": expires is not None and expires <= moment,
                    }
                )
            return out

        return self._tx(list_)

    def delete_token(self, user_id: int, token_id: int) -> Deferred[bool]:
        """Revoke one of the user's tokens; False if the user has no such token."""
        return self._delete_owned(t.api_tokens, user_id, token_id)

    def _delete_owned(self, table: Any, user_id: int, row_id: int) -> Deferred[bool]:
        """Delete row C{row_id} of C{table} if it is C{user_id}'s; whether there was one."""
        return self._tx(
            lambda conn: (
                conn.execute(
                    delete(table).where(and_(table.c.user_id == user_id, table.c.id == row_id))
                ).rowcount
                > 0
            )
        )

    # -- banners ------------------------------------------------------------------------------

    def add_banner(
        self, message: str, level: str, created_by: int | None, expires_at: datetime | None
    ) -> Deferred[dict[str, Any]]:
        def add(conn: Connection) -> dict[str, Any]:
            result = conn.execute(
                insert(t.banners).values(
                    message=message,
                    level=level,
                    created_by=created_by,
                    created_at=now(),
                    expires_at=expires_at,
                )
            )
            row = conn.execute(select(t.banners).where(t.banners.c.id == _new_id(result))).one()
            return _banner(row)

        return self._tx(add)

    def banners(self, active_at: datetime | None = None) -> Deferred[list[dict[str, Any]]]:
        """Every banner, newest first; only those not expired at C{active_at} when given."""

        def list_(conn: Connection) -> list[dict[str, Any]]:
            query = select(t.banners).order_by(t.banners.c.id.desc())
            if active_at is not None:
                query = query.where(
                    or_(t.banners.c.expires_at.is_(None), t.banners.c.expires_at > active_at)
                )
            return [_banner(r) for r in conn.execute(query)]

        return self._tx(list_)

    def delete_banner(self, banner_id: int) -> Deferred[bool]:
        return self._tx(
            lambda conn: (
                conn.execute(delete(t.banners).where(t.banners.c.id == banner_id)).rowcount > 0
            )
        )

    # -- identities at the OpenID Connect provider -------------------------------------------

    def oidc_user(self, issuer: str, subject: str) -> Deferred[User | None]:
        """The account linked to the provider's identity (issuer, subject), if any."""

        return self._tx(lambda conn: self._linked_user(conn, issuer, subject))

    def _linked_user(self, conn: Connection, issuer: str, subject: str) -> User | None:
        row = conn.execute(
            select(t.users)
            .join(t.oidc_identities, t.oidc_identities.c.user_id == t.users.c.id)
            .where(
                and_(
                    t.oidc_identities.c.issuer == issuer,
                    t.oidc_identities.c.subject == subject,
                )
            )
        ).first()
        return self._user(row) if row else None

    def link_oidc(self, user_id: int, issuer: str, subject: str) -> Deferred[None]:
        """Link an identity to an account; Conflict if it is linked to another one."""

        def link(conn: Connection) -> None:
            row = conn.execute(
                select(t.oidc_identities.c.user_id).where(
                    and_(
                        t.oidc_identities.c.issuer == issuer,
                        t.oidc_identities.c.subject == subject,
                    )
                )
            ).first()
            if row is not None:
                if row.user_id != user_id:
                    raise Conflict(
                        "identity_linked", "this sign-in is already linked to another account"
                    )
                return
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(t.oidc_identities).values(
                            user_id=user_id, issuer=issuer, subject=subject, created_at=now()
                        )
                    )
            except IntegrityError:
                raise Conflict(
                    "identity_linked", "this sign-in is already linked to another account"
                ) from None

        return self._tx(link)

    def create_oidc_user(
        self, names: list[str], role: str, email: str, full_name: str, issuer: str, subject: str
    ) -> Deferred[User]:
        """
        A new account linked to the identity, named after the first of C{names} that no
        account has (with -2, -3, ... appended when every one is taken). If the identity
        got linked meanwhile (two sign-ins at once), that account.
        """

        def create(conn: Connection) -> User:
            def free(name: str) -> bool:
                found = conn.execute(select(t.users.c.id).where(t.users.c.username == name))
                return found.first() is None

            username = next((n for n in names if free(n)), None)
            suffix = 2
            while username is None:
                tail = f"-{suffix}"
                name = names[0][: 32 - len(tail)].rstrip(".-_") + tail
                username = name if free(name) else None
                suffix += 1
            try:
                with conn.begin_nested():
                    result = conn.execute(
                        insert(t.users).values(
                            username=username,
                            role=role,
                            password_hash=None,
                            full_name=full_name,
                            email=email,
                            is_active=True,
                            accepted_guidelines=False,
                            created_at=now(),
                        )
                    )
                    user_id = _new_id(result)
                    conn.execute(
                        insert(t.oidc_identities).values(
                            user_id=user_id, issuer=issuer, subject=subject, created_at=now()
                        )
                    )
                    self._attach_pending(conn, user_id, username)
            except IntegrityError:
                linked = self._linked_user(conn, issuer, subject)
                if linked is None:
                    raise Conflict("username_taken", "try signing in again") from None
                return linked
            return self._user(conn.execute(select(t.users).where(t.users.c.id == user_id)).one())

        return self._tx(create)

    def add_ssh_key(
        self, user_id: int, public_key: str, fingerprint: str, comment: str
    ) -> Deferred[None]:
        def add(conn: Connection) -> None:
            try:
                conn.execute(
                    insert(t.ssh_keys).values(
                        user_id=user_id,
                        public_key=public_key,
                        fingerprint=fingerprint,
                        comment=comment,
                        created_at=now(),
                    )
                )
            except IntegrityError:
                raise Conflict("key_exists", "this key is already registered") from None

        return self._tx(add)

    def ssh_keys(self, user_id: int) -> Deferred[list[dict[str, Any]]]:
        return self._tx(
            lambda conn: [
                {
                    "id": r.id,
                    "fingerprint": r.fingerprint,
                    "comment": r.comment,
                    "public_key": r.public_key,
                }
                # ORDER BY: PostgreSQL returns rows in no promised order (SQLite's is the id's)
                for r in conn.execute(
                    select(t.ssh_keys)
                    .where(t.ssh_keys.c.user_id == user_id)
                    .order_by(t.ssh_keys.c.id)
                )
            ]
        )

    def delete_ssh_key(self, user_id: int, key_id: int) -> Deferred[bool]:
        return self._delete_owned(t.ssh_keys, user_id, key_id)

    def has_ssh_key(self, username: str, fingerprint: str) -> Deferred[bool]:
        return self._tx(
            lambda conn: (
                conn.execute(
                    select(t.ssh_keys.c.id)
                    .join(t.users, t.users.c.id == t.ssh_keys.c.user_id)
                    .where(
                        and_(
                            t.users.c.username == username, t.ssh_keys.c.fingerprint == fingerprint
                        )
                    )
                ).first()
                is not None
            )
        )

    # -- sessions ----------------------------------------------------------------------------

    def create_session(self, user_id: int, lifetime: timedelta) -> Deferred[tuple[str, str]]:
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)

        def create(conn: Connection) -> tuple[str, str]:
            conn.execute(
                insert(t.sessions).values(
                    id_hash=_hash(session_id),
                    user_id=user_id,
                    csrf_token=csrf,
                    created_at=now(),
                    expires_at=now() + lifetime,
                )
            )
            return session_id, csrf

        return self._tx(create)

    def session(self, session_id: str) -> Deferred[tuple[User, str] | None]:
        def get(conn: Connection) -> tuple[User, str] | None:
            row = conn.execute(
                select(t.users, t.sessions.c.csrf_token, t.sessions.c.expires_at)
                .join(t.sessions, t.sessions.c.user_id == t.users.c.id)
                .where(t.sessions.c.id_hash == _hash(session_id))
            ).first()
            if row is None:
                return None
            expires = row.expires_at
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            if expires < now():
                conn.execute(delete(t.sessions).where(t.sessions.c.id_hash == _hash(session_id)))
                return None
            return self._user(row), row.csrf_token

        return self._tx(get)

    def delete_session(self, session_id: str) -> Deferred[None]:
        def remove(conn: Connection) -> None:
            conn.execute(delete(t.sessions).where(t.sessions.c.id_hash == _hash(session_id)))

        return self._tx(remove)

    def delete_sessions(self, user_id: int, keep: str | None = None) -> Deferred[int]:
        """End every session of the user except C{keep}; how many ended."""

        def remove(conn: Connection) -> int:
            where = t.sessions.c.user_id == user_id
            if keep is not None:
                where = and_(where, t.sessions.c.id_hash != _hash(keep))
            return int(conn.execute(delete(t.sessions).where(where)).rowcount)

        return self._tx(remove)

    def session_started(self, session_id: str) -> Deferred[datetime | None]:
        """When the session's user signed in (its creation), if the session exists."""

        def get(conn: Connection) -> datetime | None:
            value = conn.execute(
                select(t.sessions.c.created_at).where(t.sessions.c.id_hash == _hash(session_id))
            ).scalar()
            return _aware(value)

        return self._tx(get)

    # -- images and database hosts -------------------------------------------------------------

    def list_images(self) -> Deferred[list[dict[str, Any]]]:
        return self._tx(
            lambda conn: [
                dict(r._mapping) for r in conn.execute(select(t.images).order_by(t.images.c.id))
            ]
        )

    def put_image(
        self,
        name: str,
        friendly_name: str,
        description: str = "",
        setup_command: str | None = None,
        is_default: bool = False,
    ) -> Deferred[None]:
        def put(conn: Connection) -> None:
            if is_default:
                conn.execute(update(t.images).values(is_default=False))
            values = {
                "friendly_name": friendly_name,
                "description": description,
                "setup_command": setup_command,
                "is_default": is_default,
            }
            if (
                conn.execute(
                    update(t.images).where(t.images.c.name == name).values(**values)
                ).rowcount
                == 0
            ):
                conn.execute(insert(t.images).values(name=name, is_public=True, **values))

        return self._tx(put)

    def delete_image(self, name: str) -> Deferred[None]:
        """
        Take an image out of the catalogue: NotFound if it is not in it, Conflict while it
        is the default or any site is built on it (nothing is changed then).
        """

        def delete_(conn: Connection) -> None:
            row = conn.execute(select(t.images).where(t.images.c.name == name)).first()
            if row is None:
                raise NotFound(name)
            if row.is_default:
                raise Conflict(
                    "default_image", "make another image the default before deleting this one"
                )
            users = conn.execute(
                select(func.count(t.sites.c.id)).where(t.sites.c.image == name)
            ).scalar()
            if users:
                raise Conflict(
                    "image_in_use", f"{users} site(s) use this image; move them to another first"
                )
            conn.execute(delete(t.images).where(t.images.c.id == row.id))

        return self._tx(delete_)

    def delete_database_host(self, host_id: int) -> Deferred[dict[str, Any]]:
        """Forget a database host (the one it was): NotFound, or Conflict while in use."""

        def delete_(conn: Connection) -> dict[str, Any]:
            row = conn.execute(
                select(t.database_hosts).where(t.database_hosts.c.id == host_id)
            ).first()
            if row is None:
                raise NotFound(host_id)
            used = conn.execute(
                select(func.count(t.databases.c.site_id)).where(t.databases.c.host_id == host_id)
            ).scalar()
            if used:
                raise Conflict(
                    "host_in_use", f"{used} site database(s) are on this host; remove them first"
                )
            conn.execute(delete(t.database_hosts).where(t.database_hosts.c.id == host_id))
            return dict(row._mapping)

        return self._tx(delete_)

    def default_image(self) -> Deferred[str | None]:
        return self._tx(
            lambda conn: conn.execute(
                select(t.images.c.name).where(t.images.c.is_default.is_(True))
            ).scalar()
        )

    def put_database_host(
        self,
        kind: str,
        admin_host: str,
        admin_port: int,
        admin_user: str,
        admin_password: str,
        container_host: str | None,
        container_port: int | None,
    ) -> Deferred[int]:
        def put(conn: Connection) -> int:
            values = {
                "admin_user": admin_user,
                "admin_password": admin_password,
                "container_host": container_host,
                "container_port": container_port,
            }
            where = and_(
                t.database_hosts.c.kind == kind,
                t.database_hosts.c.admin_host == admin_host,
                t.database_hosts.c.admin_port == admin_port,
            )
            row = conn.execute(select(t.database_hosts.c.id).where(where)).first()
            if row:
                conn.execute(update(t.database_hosts).where(where).values(**values))
                return int(row.id)
            result = conn.execute(
                insert(t.database_hosts).values(
                    kind=kind, admin_host=admin_host, admin_port=admin_port, **values
                )
            )
            return _new_id(result)

        return self._tx(put)

    def database_host(
        self, kind: str | None = None, host_id: int | None = None
    ) -> Deferred[dict[str, Any] | None]:
        def get(conn: Connection) -> dict[str, Any] | None:
            query = select(t.database_hosts)
            if host_id is not None:
                query = query.where(t.database_hosts.c.id == host_id)
            if kind is not None:
                query = query.where(t.database_hosts.c.kind == kind)
            row = conn.execute(query.order_by(t.database_hosts.c.id)).first()
            return dict(row._mapping) if row else None

        return self._tx(get)

    def remove_unused_database_host(
        self, kind: str, admin_host: str, admin_port: int
    ) -> Deferred[bool]:
        """Forget a database host no site database is on; False if it is in use or unknown."""

        def remove(conn: Connection) -> bool:
            where = and_(
                t.database_hosts.c.kind == kind,
                t.database_hosts.c.admin_host == admin_host,
                t.database_hosts.c.admin_port == admin_port,
            )
            row = conn.execute(select(t.database_hosts.c.id).where(where)).first()
            if row is None:
                return False
            used = conn.execute(
                select(t.databases.c.host_id).where(t.databases.c.host_id == row.id).limit(1)
            ).first()
            if used is not None:
                return False
            conn.execute(t.database_hosts.delete().where(t.database_hosts.c.id == row.id))
            return True

        return self._tx(remove)

    def list_database_hosts(self) -> Deferred[list[dict[str, Any]]]:
        return self._tx(
            lambda conn: [
                dict(r._mapping)
                for r in conn.execute(select(t.database_hosts).order_by(t.database_hosts.c.id))
            ]
        )

    # -- sites -------------------------------------------------------------------------------

    def _load_sites(
        self, conn: Connection, where: Any = None, limit: int | None = None, offset: int = 0
    ) -> list[Site]:
        query = select(t.sites).order_by(t.sites.c.name)
        if where is not None:
            query = query.where(where)
        if limit is not None:
            query = query.limit(limit).offset(offset)
        rows = conn.execute(query).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        members: dict[int, list[str]] = {}
        for m in conn.execute(
            select(t.site_members.c.site_id, t.users.c.username)
            .join(t.users, t.users.c.id == t.site_members.c.user_id)
            .where(t.site_members.c.site_id.in_(ids))
            .order_by(t.users.c.username)
        ):
            members.setdefault(m.site_id, []).append(m.username)
        pending: dict[int, list[str]] = {}
        for m in conn.execute(
            select(t.pending_members.c.site_id, t.pending_members.c.username)
            .where(t.pending_members.c.site_id.in_(ids))
            .order_by(t.pending_members.c.username)
        ):
            pending.setdefault(m.site_id, []).append(m.username)
        domain_map: dict[int, list[str]] = {}
        for d in conn.execute(
            select(t.domains).where(t.domains.c.site_id.in_(ids)).order_by(t.domains.c.id)
        ):
            domain_map.setdefault(d.site_id, []).append(d.domain)
        dbs: dict[int, Database] = {}
        for d in conn.execute(
            select(
                t.databases,
                t.database_hosts.c.kind,
                t.database_hosts.c.admin_host,
                t.database_hosts.c.admin_port,
                t.database_hosts.c.container_host,
                t.database_hosts.c.container_port,
            )
            .join(t.database_hosts, t.database_hosts.c.id == t.databases.c.host_id)
            .where(t.databases.c.site_id.in_(ids))
        ):
            dbs[d.site_id] = Database(
                kind=d.kind,
                name=d.name,
                username=d.username,
                password=d.password,
                host=d.container_host or d.admin_host,
                port=d.container_port or d.admin_port,
                host_id=d.host_id,
            )
        placed = {r.orchestrator_id for r in rows} - {None}
        orchestrators = (
            dict(
                conn.execute(
                    select(t.orchestrators.c.id, t.orchestrators.c.name).where(
                        t.orchestrators.c.id.in_(placed)
                    )
                ).all()
            )
            if placed
            else {}
        )
        return [
            Site(
                id=r.id,
                name=r.name,
                type=r.type,
                purpose=r.purpose,
                availability=r.availability,
                description=r.description,
                image=r.image,
                image_tag=r.image_tag,
                packages=tuple(r.packages or ()),
                limits={
                    "cpus": r.cpus,
                    "memory_mb": r.memory_mb,
                    "pids": r.pids,
                    "client_max_body_size": r.client_max_body_size,
                    "disk_quota_mb": r.disk_quota_mb,
                },
                members=tuple(members.get(r.id, [])),
                pending_members=tuple(pending.get(r.id, [])),
                domains=tuple(domain_map.get(r.id, [])),
                database=dbs.get(r.id),
                admin_comments=r.admin_comments,
                public_comment=r.public_comment,
                created_at=r.created_at,
                disk_usage_bytes=r.disk_usage_bytes,
                disk_quota_bytes=r.disk_quota_bytes,
                orchestrator=orchestrators.get(r.orchestrator_id),
            )
            for r in rows
        ]

    def set_disk_usage(self, usage: dict[int, tuple[int | None, int | None]]) -> Deferred[int]:
        """Record each site's disk use and quota (bytes) as its orchestrator reported them."""

        def record(conn: Connection) -> int:
            changed = 0
            for site_id, (used, quota) in usage.items():
                result = conn.execute(
                    update(t.sites)
                    .where(t.sites.c.id == site_id)
                    .values(disk_usage_bytes=used, disk_quota_bytes=quota)
                )
                changed += result.rowcount
            return changed

        return self._tx(record)

    def largest_sites(self, limit: int = 20) -> Deferred[list[Site]]:
        """The sites using the most disk, largest first (sites not measured yet left out)."""

        def largest(conn: Connection) -> list[Site]:
            ids = [
                r.id
                for r in conn.execute(
                    select(t.sites.c.id)
                    .where(t.sites.c.disk_usage_bytes.is_not(None))
                    .order_by(t.sites.c.disk_usage_bytes.desc(), t.sites.c.name)
                    .limit(limit)
                )
            ]
            if not ids:
                return []
            by_id = {s.id: s for s in self._load_sites(conn, t.sites.c.id.in_(ids))}
            return [by_id[i] for i in ids if i in by_id]

        return self._tx(largest)

    def get_site(self, name: str) -> Deferred[Site | None]:
        def get(conn: Connection) -> Site | None:
            found = self._load_sites(conn, t.sites.c.name == name)
            return found[0] if found else None

        return self._tx(get)

    def get_site_by_id(self, site_id: int) -> Deferred[Site | None]:
        def get(conn: Connection) -> Site | None:
            found = self._load_sites(conn, t.sites.c.id == site_id)
            return found[0] if found else None

        return self._tx(get)

    def list_sites(
        self,
        member: str | None = None,
        search: list[tuple[str, str]] | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> Deferred[list[Site]]:
        """
        Sites (only C{member}'s when given) matching every search term (see
        L{models.parse_query}): name, description (any case) and member, exact id.
        """

        def list_(conn: Connection) -> list[Site]:
            clauses: list[Any] = []
            if member is not None:
                clauses.append(t.sites.c.id.in_(self._member_sites(member)))
            for key, value in search or ():
                escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                pattern = f"%{escaped}%"
                name = t.sites.c.name.ilike(pattern, escape="\\")
                description = t.sites.c.description.ilike(pattern, escape="\\")
                if key == "name":
                    clauses.append(name)
                elif key == "desc":
                    clauses.append(description)
                elif key == "user":
                    clauses.append(t.sites.c.id.in_(self._member_sites(value)))
                elif key == "id":
                    number = int(value) if value.isdigit() and len(value) <= 12 else None
                    clauses.append(t.sites.c.id == number if number is not None else false())
                elif key == "any":
                    clauses.append(or_(name, description))
            return self._load_sites(conn, and_(*clauses) if clauses else None, limit, offset)

        return self._tx(list_)

    @staticmethod
    def _member_sites(username: str) -> Any:
        return (
            select(t.site_members.c.site_id)
            .join(t.users, t.users.c.id == t.site_members.c.user_id)
            .where(t.users.c.username == username)
        )

    def highest_site_id(self) -> Deferred[int]:
        """The highest site id this database ever gave (0 for none)."""

        def get(conn: Connection) -> int:
            given = conn.execute(select(func.max(t.site_ids.c.id))).scalar()
            seen = conn.execute(select(func.max(t.operations.c.site_id))).scalar()
            return max(int(given or 0), int(seen or 0))

        return self._tx(get)

    def count_sites(self) -> Deferred[int]:
        return self._tx(
            lambda conn: int(conn.execute(select(func.count(t.sites.c.id))).scalar() or 0)
        )

    def _set_members(self, conn: Connection, site_id: int, usernames: list[str]) -> None:
        """
        The site's members are C{usernames}: those with an account now, the others when
        they first sign in (pending). At least one of a non-empty list must have an account.
        """
        rows = conn.execute(
            select(t.users.c.id, t.users.c.username).where(t.users.c.username.in_(usernames))
        ).all()
        if usernames and not rows:
            raise Conflict(
                "no_member", "a site needs at least one member who has signed in to Director"
            )
        conn.execute(delete(t.site_members).where(t.site_members.c.site_id == site_id))
        for row in rows:
            conn.execute(insert(t.site_members).values(site_id=site_id, user_id=row.id))
        conn.execute(delete(t.pending_members).where(t.pending_members.c.site_id == site_id))
        for username in sorted(set(usernames) - {r.username for r in rows}):
            conn.execute(
                insert(t.pending_members).values(
                    site_id=site_id, username=username, created_at=now()
                )
            )

    def _attach_pending(self, conn: Connection, user_id: int, username: str) -> None:
        """A new account joins the sites it was added to before it existed."""
        pending = t.pending_members
        for row in conn.execute(select(pending.c.site_id).where(pending.c.username == username)):
            conn.execute(insert(t.site_members).values(site_id=row.site_id, user_id=user_id))
        conn.execute(delete(pending).where(pending.c.username == username))

    def create_site(
        self,
        fields: dict[str, Any],
        members: list[str],
        operation: tuple[str, list[str]],
        created_by: int | None,
    ) -> Deferred[tuple[Site, Operation]]:
        """Insert a site, its members and its create operation together (or nothing)."""

        def create(conn: Connection) -> tuple[Site, Operation]:
            values = dict(fields)
            limits = values.pop("limits", DEFAULT_LIMITS)
            site_id = _new_id(conn.execute(insert(t.site_ids)))
            try:
                conn.execute(
                    insert(t.sites).values(
                        **values,
                        id=site_id,
                        cpus=limits["cpus"],
                        memory_mb=limits["memory_mb"],
                        pids=limits["pids"],
                        client_max_body_size=limits["client_max_body_size"],
                        disk_quota_mb=limits.get("disk_quota_mb"),
                        created_at=now(),
                    )
                )
            except IntegrityError:
                raise Conflict("name_taken", f"the name {fields['name']} is taken") from None
            self._set_members(conn, site_id, members)
            op = self._create_operation(
                conn, site_id, fields["name"], operation[0], operation[1], {}, created_by
            )
            return self._load_sites(conn, t.sites.c.id == site_id)[0], op

        return self._tx(create)

    def update_site(
        self,
        site_id: int,
        values: dict[str, Any],
        members: list[str] | None = None,
        domains: list[str] | None = None,
        operation: tuple[str, list[str]] | None = None,
        params: dict[str, Any] | None = None,
        created_by: int | None = None,
        database: dict[str, Any] | Keep | None = KEEP,
    ) -> Deferred[tuple[Site, Operation | None]]:
        """
        Change a site (its record, members, domains and database row) and start the
        operation that applies it, atomically: a refused operation changes nothing.
        """

        def change(conn: Connection) -> tuple[Site, Operation | None]:
            current = self._load_sites(conn, t.sites.c.id == site_id)
            if not current:
                raise NotFound(site_id)
            update_values = dict(values)
            limits = update_values.pop("limits", None)
            if limits is not None:
                update_values.update(
                    cpus=limits["cpus"],
                    memory_mb=limits["memory_mb"],
                    pids=limits["pids"],
                    client_max_body_size=limits["client_max_body_size"],
                    disk_quota_mb=limits.get("disk_quota_mb"),
                )
            op = None
            if operation is not None:
                op = self._create_operation(
                    conn,
                    site_id,
                    update_values.get("name", current[0].name),
                    operation[0],
                    operation[1],
                    params or {},
                    created_by,
                )
            if update_values:
                try:
                    conn.execute(
                        update(t.sites).where(t.sites.c.id == site_id).values(**update_values)
                    )
                except IntegrityError:
                    raise Conflict("name_taken", "that name is taken") from None
            if members is not None:
                self._set_members(conn, site_id, members)
            if domains is not None:
                conn.execute(delete(t.domains).where(t.domains.c.site_id == site_id))
                for domain in domains:
                    try:
                        with conn.begin_nested():
                            conn.execute(
                                insert(t.domains).values(
                                    site_id=site_id, domain=domain, created_at=now()
                                )
                            )
                    except IntegrityError:
                        raise Conflict(
                            "domain_taken", f"{domain} is already used by another site"
                        ) from None
            if not isinstance(database, Keep):
                self._set_database(conn, site_id, database)
            return self._load_sites(conn, t.sites.c.id == site_id)[0], op

        return self._tx(change)

    @staticmethod
    def _set_database(conn: Connection, site_id: int, database: dict[str, Any] | None) -> None:
        conn.execute(delete(t.databases).where(t.databases.c.site_id == site_id))
        if database is not None:
            conn.execute(insert(t.databases).values(site_id=site_id, created_at=now(), **database))

    def delete_site_rows(self, site_id: int) -> Deferred[None]:
        def remove(conn: Connection) -> None:
            conn.execute(delete(t.sites).where(t.sites.c.id == site_id))

        return self._tx(remove)

    # -- operations ------------------------------------------------------------------------------

    def _create_operation(
        self,
        conn: Connection,
        site_id: int | None,
        site_name: str,
        kind: str,
        action_names: list[str],
        params: dict[str, Any],
        created_by: int | None,
    ) -> Operation:
        try:
            with conn.begin_nested():
                result = conn.execute(
                    insert(t.operations).values(
                        site_id=site_id,
                        site_name=site_name,
                        type=kind,
                        status="pending",
                        params=params,
                        created_by=created_by,
                        created_at=now(),
                        updated_at=now(),
                        attempts=0,
                        next_attempt_at=0.0,
                    )
                )
        except IntegrityError:
            raise Conflict(
                "operation_running",
                "another operation is still running on this site; wait for it to finish",
            ) from None
        op_id = _new_id(result)
        for position, name in enumerate(action_names):
            conn.execute(
                insert(t.actions).values(
                    operation_id=op_id, position=position, name=name, status="pending", message=""
                )
            )
        return self._operation(conn, op_id)

    def create_operation(
        self,
        site_id: int | None,
        site_name: str,
        kind: str,
        action_names: list[str],
        params: dict[str, Any] | None = None,
        created_by: int | None = None,
    ) -> Deferred[Operation]:
        return self._tx(
            lambda conn: self._create_operation(
                conn, site_id, site_name, kind, action_names, params or {}, created_by
            )
        )

    def _operation(self, conn: Connection, op_id: int) -> Operation:
        row = conn.execute(select(t.operations).where(t.operations.c.id == op_id)).first()
        if row is None:
            raise NotFound(op_id)
        actions = tuple(
            Action(a.position, a.name, a.status, a.message)
            for a in conn.execute(
                select(t.actions)
                .where(t.actions.c.operation_id == op_id)
                .order_by(t.actions.c.position)
            )
        )
        return Operation(
            id=row.id,
            site_id=row.site_id,
            site_name=row.site_name,
            type=row.type,
            status=row.status,
            params=row.params or {},
            error=row.error,
            actions=actions,
            created_at=row.created_at,
            updated_at=row.updated_at,
            attempts=row.attempts,
        )

    def get_operation(self, op_id: int) -> Deferred[Operation]:
        return self._tx(lambda conn: self._operation(conn, op_id))

    def list_operations(
        self, site_id: int | None = None, failed_first: bool = False, limit: int = 100
    ) -> Deferred[list[Operation]]:
        def list_(conn: Connection) -> list[Operation]:
            query = select(t.operations.c.id)
            if site_id is not None:
                query = query.where(t.operations.c.site_id == site_id)
            order: list[Any] = [t.operations.c.id.desc()]
            if failed_first:
                order.insert(0, (t.operations.c.status != "failed"))
            ids = [r.id for r in conn.execute(query.order_by(*order).limit(limit))]
            return [self._operation(conn, i) for i in ids]

        return self._tx(list_)

    def active_operation(self, site_id: int) -> Deferred[Operation | None]:
        def get(conn: Connection) -> Operation | None:
            row = conn.execute(
                select(t.operations.c.id).where(
                    and_(
                        t.operations.c.site_id == site_id,
                        t.operations.c.status.in_(("pending", "running")),
                    )
                )
            ).first()
            return self._operation(conn, row.id) if row else None

        return self._tx(get)

    def claim_operation(
        self, worker: str, clock_now: float, lease: float, identity: str | None = None
    ) -> Deferred[Operation | None]:
        """
        Claim the oldest runnable operation for C{worker}: pending ones, running ones whose
        claimant's lease expired (a manager that died mid-operation), and, with C{identity},
        running ones leased by an earlier incarnation of that identity (C{<identity>/...}
        but not C{worker}: this manager before its restart), whatever their lease. Safe with
        several managers: the conditional UPDATE succeeds for one claimant only, and a live
        manager's unexpired lease is never taken by another identity.
        """
        claimable = or_(
            t.operations.c.claimed_by.is_(None),
            t.operations.c.lease_until < clock_now,
        )
        if identity is not None:
            claimable = or_(
                claimable,
                and_(
                    t.operations.c.claimed_by.startswith(f"{identity}/", autoescape=True),
                    t.operations.c.claimed_by != worker,
                ),
            )

        def claim(conn: Connection) -> Operation | None:
            candidates = conn.execute(
                select(t.operations.c.id)
                .where(
                    and_(
                        t.operations.c.status.in_(("pending", "running")),
                        t.operations.c.next_attempt_at <= clock_now,
                        claimable,
                    )
                )
                .order_by(t.operations.c.id)
                .limit(10)
            ).all()
            for candidate in candidates:
                if _updated_one(
                    conn,
                    update(t.operations)
                    .where(
                        and_(
                            t.operations.c.id == candidate.id,
                            claimable,
                        )
                    )
                    .values(
                        claimed_by=worker,
                        lease_until=clock_now + lease,
                        status="running",
                        updated_at=now(),
                    ),
                ):
                    return self._operation(conn, candidate.id)
            return None

        return self._tx(claim)

    def renew_lease(self, op_id: int, worker: str, until: float) -> Deferred[bool]:
        return self._tx(
            lambda conn: _updated_one(
                conn,
                update(t.operations)
                .where(and_(t.operations.c.id == op_id, t.operations.c.claimed_by == worker))
                .values(lease_until=until),
            )
        )

    def set_action(
        self, op_id: int, position: int, status: str, message: str = ""
    ) -> Deferred[None]:
        def set_(conn: Connection) -> None:
            values: dict[str, Any] = {"status": status, "message": message[:2000]}
            if status == "running":
                values["started_at"] = now()
            elif status in ("succeeded", "failed"):
                values["finished_at"] = now()
            conn.execute(
                update(t.actions)
                .where(and_(t.actions.c.operation_id == op_id, t.actions.c.position == position))
                .values(**values)
            )
            conn.execute(
                update(t.operations).where(t.operations.c.id == op_id).values(updated_at=now())
            )

        return self._tx(set_)

    def release_operation(
        self,
        op_id: int,
        status: str,
        error: str | None = None,
        retry_at: float | None = None,
        count_attempt: bool = True,
    ) -> Deferred[Operation]:
        """
        Finish (succeeded/failed) or hand back (pending, to retry at C{retry_at}) an
        operation this worker claimed; C{count_attempt} False: a wait (its orchestrator is
        down) that does not use up one of its attempts.
        """

        def release(conn: Connection) -> Operation:
            values: dict[str, Any] = {
                "status": status,
                "error": error,
                "claimed_by": None,
                "lease_until": None,
                "updated_at": now(),
            }
            if retry_at is not None:
                values["next_attempt_at"] = retry_at
                if count_attempt:
                    values["attempts"] = t.operations.c.attempts + 1
            conn.execute(update(t.operations).where(t.operations.c.id == op_id).values(**values))
            return self._operation(conn, op_id)

        return self._tx(release)

    def due_now(self, op_ids: list[int]) -> Deferred[int]:
        """Make the pending operations C{op_ids} runnable at once (a wait ended); how many."""

        def due(conn: Connection) -> int:
            changed = conn.execute(
                update(t.operations)
                .where(and_(t.operations.c.id.in_(op_ids), t.operations.c.status == "pending"))
                .values(next_attempt_at=0.0)
            )
            return int(changed.rowcount or 0)

        return self._tx(due)

    def note_degraded_routers(self, op_id: int, names: list[str]) -> Deferred[None]:
        """
        Remember (in the operation's params, shown as its C{degraded_routers}) the routers
        that were down when one of its changes went to the others; they catch up later.
        """

        def note(conn: Connection) -> None:
            row = conn.execute(
                select(t.operations.c.params).where(t.operations.c.id == op_id)
            ).first()
            if row is None:
                return
            params = dict(row.params or {})
            params["degraded_routers"] = sorted({*params.get("degraded_routers", []), *names})
            conn.execute(
                update(t.operations).where(t.operations.c.id == op_id).values(params=params)
            )

        return self._tx(note)

    def retry_operation(self, op_id: int) -> Deferred[Operation]:
        """Make a failed operation runnable again from its first unfinished action."""

        def retry(conn: Connection) -> Operation:
            op = self._operation(conn, op_id)
            if op.status != "failed":
                raise Conflict("not_failed", "only a failed operation can be retried")
            try:
                with conn.begin_nested():
                    conn.execute(
                        update(t.operations)
                        .where(t.operations.c.id == op_id)
                        .values(
                            status="pending",
                            error=None,
                            attempts=0,
                            next_attempt_at=0.0,
                            updated_at=now(),
                        )
                    )
            except IntegrityError:
                raise Conflict(
                    "operation_running", "another operation is running on this site"
                ) from None
            conn.execute(
                update(t.actions)
                .where(and_(t.actions.c.operation_id == op_id, t.actions.c.status != "succeeded"))
                .values(status="pending", message="")
            )
            return self._operation(conn, op_id)

        return self._tx(retry)

    # -- scheduled tasks ---------------------------------------------------------------------

    @staticmethod
    def _task_run(row: Any) -> TaskRun:
        return TaskRun(
            id=row.id,
            task_id=row.task_id,
            trigger=row.trigger,
            status=row.status,
            exit_code=row.exit_code,
            output=row.output or "",
            output_truncated=bool(row.output_truncated),
            message=row.message or "",
            started_at=_aware(row.started_at) or now(),
            finished_at=_aware(row.finished_at),
        )

    def _tasks(self, conn: Connection, where: Any) -> list[Task]:
        rows = conn.execute(select(t.tasks).where(where).order_by(t.tasks.c.id)).all()
        last: dict[int, TaskRun] = {}
        if rows:
            newest = (
                select(func.max(t.task_runs.c.id))
                .where(t.task_runs.c.task_id.in_([r.id for r in rows]))
                .group_by(t.task_runs.c.task_id)
            )
            for run in conn.execute(select(t.task_runs).where(t.task_runs.c.id.in_(newest))):
                last[run.task_id] = self._task_run(run)
        return [
            Task(
                id=r.id,
                site_id=r.site_id,
                name=r.name,
                schedule=r.schedule,
                command=r.command,
                timeout=r.timeout,
                enabled=r.enabled,
                next_run_at=r.next_run_at,
                created_at=_aware(r.created_at),
                last_run=last.get(r.id),
            )
            for r in rows
        ]

    def list_tasks(self, site_id: int) -> Deferred[list[Task]]:
        return self._tx(lambda conn: self._tasks(conn, t.tasks.c.site_id == site_id))

    def get_task(self, site_id: int, task_id: int) -> Deferred[Task | None]:
        def get(conn: Connection) -> Task | None:
            found = self._tasks(conn, and_(t.tasks.c.site_id == site_id, t.tasks.c.id == task_id))
            return found[0] if found else None

        return self._tx(get)

    def create_task(
        self, site_id: int, values: dict[str, Any], most: int | None, created_by: int | None
    ) -> Deferred[Task]:
        """Add a task to the site; 409 limit_reached when it has C{most} already."""

        def create(conn: Connection) -> Task:
            if most is not None:
                count = conn.execute(
                    select(func.count(t.tasks.c.id)).where(t.tasks.c.site_id == site_id)
                ).scalar()
                if int(count or 0) >= most:
                    raise Conflict(
                        "limit_reached", f"a site may have at most {most} scheduled tasks"
                    )
            result = conn.execute(
                insert(t.tasks).values(
                    site_id=site_id, created_by=created_by, created_at=now(), **values
                )
            )
            return self._tasks(conn, t.tasks.c.id == _new_id(result))[0]

        return self._tx(create)

    def update_task(self, task_id: int, values: dict[str, Any]) -> Deferred[Task]:
        def change(conn: Connection) -> Task:
            if values:
                conn.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(**values))
            found = self._tasks(conn, t.tasks.c.id == task_id)
            if not found:
                raise NotFound(task_id)
            return found[0]

        return self._tx(change)

    def delete_task(self, task_id: int) -> Deferred[bool]:
        def remove(conn: Connection) -> bool:
            conn.execute(delete(t.task_runs).where(t.task_runs.c.task_id == task_id))
            return _updated_one(conn, delete(t.tasks).where(t.tasks.c.id == task_id))

        return self._tx(remove)

    def due_tasks(self, clock_now: float, limit: int = 100) -> Deferred[list[tuple[Task, str]]]:
        """Enabled tasks whose next run is due, each with its site's availability."""

        def due(conn: Connection) -> list[tuple[Task, str]]:
            rows = conn.execute(
                select(t.tasks.c.id, t.sites.c.availability)
                .join(t.sites, t.sites.c.id == t.tasks.c.site_id)
                .where(and_(t.tasks.c.enabled.is_(True), t.tasks.c.next_run_at <= clock_now))
                .order_by(t.tasks.c.next_run_at)
                .limit(limit)
            ).all()
            availability = {r.id: r.availability for r in rows}
            if not rows:
                return []
            tasks = self._tasks(conn, t.tasks.c.id.in_(list(availability)))
            return [(task, availability[task.id]) for task in tasks]

        return self._tx(due)

    def advance_task(self, task_id: int, expected: float, following: float) -> Deferred[bool]:
        """
        Move a due task's next run from C{expected} to C{following}: True for the one
        manager whose conditional UPDATE matched (it runs the due run), False for the others.
        """
        return self._tx(
            lambda conn: _updated_one(
                conn,
                update(t.tasks)
                .where(and_(t.tasks.c.id == task_id, t.tasks.c.next_run_at == expected))
                .values(next_run_at=following),
            )
        )

    def start_run(
        self,
        task_id: int,
        trigger: str,
        worker: str,
        lease_until: float,
        started_at: datetime,
        keep: int,
    ) -> Deferred[tuple[TaskRun, bool]]:
        """
        Record a run of the task, leased to C{worker}: (run, True) when it may start, or,
        when the previous run still runs (the database allows one running run per task),
        (a run recorded as skipped, False) for a scheduled run and (the running run, False)
        for one asked for now.
        """

        def start(conn: Connection) -> tuple[TaskRun, bool]:
            values = {
                "task_id": task_id,
                "trigger": trigger,
                "output": "",
                "output_truncated": False,
                "started_at": started_at,
            }
            try:
                with conn.begin_nested():
                    result = conn.execute(
                        insert(t.task_runs).values(
                            **values,
                            status="running",
                            message="",
                            claimed_by=worker,
                            lease_until=lease_until,
                        )
                    )
                allowed = True
            except IntegrityError:
                if trigger != "schedule":  # asked for now: the refusal says it, nothing is kept
                    running = conn.execute(
                        select(t.task_runs).where(
                            and_(
                                t.task_runs.c.task_id == task_id,
                                t.task_runs.c.status == "running",
                            )
                        )
                    ).first()
                    if running is not None:
                        return self._task_run(running), False
                result = conn.execute(
                    insert(t.task_runs).values(
                        **values,
                        status="skipped",
                        message="skipped: the previous run was still going",
                        finished_at=started_at,
                    )
                )
                allowed = False
                self._prune_runs(conn, task_id, keep)
            row = conn.execute(select(t.task_runs).where(t.task_runs.c.id == _new_id(result))).one()
            return self._task_run(row), allowed

        return self._tx(start)

    @staticmethod
    def _prune_runs(conn: Connection, task_id: int, keep: int) -> None:
        """
        Delete the task's finished runs but the newest C{keep} that ran and the newest
        C{keep} skipped ones (so that skipped runs never push out the output of real ones).
        """
        newest: list[int] = []
        for skipped in (True, False):
            kind = t.task_runs.c.status == "skipped"
            newest += [
                r.id
                for r in conn.execute(
                    select(t.task_runs.c.id)
                    .where(and_(t.task_runs.c.task_id == task_id, kind if skipped else ~kind))
                    .order_by(t.task_runs.c.id.desc())
                    .limit(keep)
                )
            ]
        conn.execute(
            delete(t.task_runs).where(
                and_(
                    t.task_runs.c.task_id == task_id,
                    t.task_runs.c.status != "running",
                    t.task_runs.c.id.not_in(newest or [0]),
                )
            )
        )

    def renew_run(self, run_id: int, worker: str, until: float) -> Deferred[bool]:
        """Extend C{worker}'s lease on its running run (False: it is no longer C{worker}'s)."""
        return self._tx(
            lambda conn: _updated_one(
                conn,
                _my_running_run(run_id, worker).values(lease_until=until),
            )
        )

    def finish_run(
        self,
        run_id: int,
        worker: str,
        status: str,
        exit_code: int | None,
        output: str,
        truncated: bool,
        message: str,
        finished_at: datetime,
        keep: int,
    ) -> Deferred[TaskRun | None]:
        """Record how C{worker}'s run ended (None if it is no longer C{worker}'s)."""

        def finish(conn: Connection) -> TaskRun | None:
            done = _updated_one(
                conn,
                _my_running_run(run_id, worker).values(
                    status=status,
                    exit_code=exit_code,
                    output=output,
                    output_truncated=truncated,
                    message=message[:2000],
                    finished_at=finished_at,
                    claimed_by=None,
                    lease_until=None,
                ),
            )
            row = conn.execute(select(t.task_runs).where(t.task_runs.c.id == run_id)).first()
            if row is None or not done:
                return None
            self._prune_runs(conn, row.task_id, keep)
            return self._task_run(row)

        return self._tx(finish)

    def interrupt_runs(
        self, clock_now: float, identity: str, worker: str, finished_at: datetime
    ) -> Deferred[int]:
        """
        Mark as interrupted the runs whose manager is gone: their lease expired, or they
        belong to an earlier incarnation of C{identity} (this manager before a restart).
        """

        def interrupt(conn: Connection) -> int:
            return int(
                conn.execute(
                    update(t.task_runs)
                    .where(
                        and_(
                            t.task_runs.c.status == "running",
                            or_(
                                t.task_runs.c.lease_until < clock_now,
                                and_(
                                    t.task_runs.c.claimed_by.startswith(
                                        f"{identity}/", autoescape=True
                                    ),
                                    t.task_runs.c.claimed_by != worker,
                                ),
                            ),
                        )
                    )
                    .values(
                        status="interrupted",
                        message="interrupted: Director restarted or lost it while it ran",
                        finished_at=finished_at,
                        claimed_by=None,
                        lease_until=None,
                    )
                ).rowcount
            )

        return self._tx(interrupt)

    def list_runs(self, task_id: int, limit: int = 100) -> Deferred[list[TaskRun]]:
        return self._tx(
            lambda conn: [
                self._task_run(r)
                for r in conn.execute(
                    select(t.task_runs)
                    .where(t.task_runs.c.task_id == task_id)
                    .order_by(t.task_runs.c.id.desc())
                    .limit(limit)
                )
            ]
        )

    # -- requests ----------------------------------------------------------------------------

    def create_request(
        self, requester_id: int, teacher_id: int, name: str, activity: str, description: str
    ) -> Deferred[int]:
        def create(conn: Connection) -> int:
            result = conn.execute(
                insert(t.site_requests).values(
                    requester_id=requester_id,
                    teacher_id=teacher_id,
                    name=name,
                    activity=activity,
                    description=description,
                    status="pending-teacher",
                    created_at=now(),
                )
            )
            return _new_id(result)

        return self._tx(create)

    def list_requests(self, user_id: int | None = None) -> Deferred[list[dict[str, Any]]]:
        def list_(conn: Connection) -> list[dict[str, Any]]:
            requester = t.users.alias("requester")
            teacher = t.users.alias("teacher")
            query = (
                select(
                    t.site_requests,
                    requester.c.username.label("requester"),
                    teacher.c.username.label("teacher"),
                )
                .join(requester, requester.c.id == t.site_requests.c.requester_id)
                .join(teacher, teacher.c.id == t.site_requests.c.teacher_id)
                .order_by(t.site_requests.c.id.desc())
            )
            if user_id is not None:
                query = query.where(
                    or_(
                        t.site_requests.c.requester_id == user_id,
                        t.site_requests.c.teacher_id == user_id,
                    )
                )
            return [
                {
                    "id": r.id,
                    "name": r.name,
                    "activity": r.activity,
                    "description": r.description,
                    "status": r.status,
                    "requester": r.requester,
                    "teacher": r.teacher,
                    "site_id": r.site_id,
                    "created_at": r.created_at.isoformat(),
                    "public_comment": r.public_comment,
                    "admin_comment": r.admin_comment,
                }
                for r in conn.execute(query)
            ]

        return self._tx(list_)

    def set_request_comments(self, request_id: int, values: dict[str, str]) -> Deferred[bool]:
        """Set a request's public_comment and/or admin_comment; False if there is none."""
        return self._tx(
            lambda conn: (
                conn.execute(
                    update(t.site_requests)
                    .where(t.site_requests.c.id == request_id)
                    .values(**values)
                ).rowcount
                > 0
            )
        )

    def set_request_status(
        self, request_id: int, status: str, site_id: int | None = None
    ) -> Deferred[None]:
        def set_(conn: Connection) -> None:
            values: dict[str, Any] = {"status": status}
            if site_id is not None:
                values["site_id"] = site_id
            if (
                conn.execute(
                    update(t.site_requests)
                    .where(t.site_requests.c.id == request_id)
                    .values(**values)
                ).rowcount
                == 0
            ):
                raise NotFound(request_id)

        return self._tx(set_)

    # -- audit -------------------------------------------------------------------------------

    def audit(
        self, user: User | None, action: str, target: str, details: dict[str, Any]
    ) -> Deferred[None]:
        def add(conn: Connection) -> None:
            conn.execute(
                insert(t.audit_log).values(
                    at=now(),
                    user_id=user.id if user else None,
                    username=user.username if user else "",
                    action=action,
                    target=target,
                    details=details,
                )
            )

        return self._tx(add)

    def list_audit(self, limit: int = 200) -> Deferred[list[dict[str, Any]]]:
        return self._tx(
            lambda conn: [
                {
                    "at": r.at.isoformat(),
                    "user": r.username,
                    "action": r.action,
                    "target": r.target,
                    "details": r.details,
                }
                for r in conn.execute(
                    select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit)
                )
            ]
        )
