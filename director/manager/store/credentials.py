"""How users prove who they are: API tokens, SSH keys, dashboard sessions."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from director.manager import schema as t
from director.manager.models import User
from director.manager.store.base import Conflict, StoreBase, aware, secret_hash, utc
from director.manager.store.rows import ApiToken, SshKey
from director.manager.store.users import user_from_row

TOKEN_PREFIX = "dir_"  # noqa: S105 (a prefix, not a secret)
# A token's last use is recorded this coarsely (one write per token per interval at most).
TOKEN_USE_GRANULARITY = timedelta(minutes=5)


class CredentialStore(StoreBase):
    """API tokens (kept hashed), SSH public keys and sessions."""

    def create_token(
        self, user_id: int, name: str, expires_at: datetime | None = None
    ) -> Deferred[str]:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def create(conn: Connection) -> str:
            conn.execute(
                insert(t.api_tokens).values(
                    user_id=user_id,
                    name=name,
                    token_hash=secret_hash(token),
                    created_at=self.now(),
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
                .where(t.api_tokens.c.token_hash == secret_hash(token))
            ).first()
            if row is None:
                return None
            moment = self.now()
            expires = aware(row.token_expires_at)
            if expires is not None and expires <= moment:
                return None
            last = aware(row.token_last_used_at)
            if last is None or moment - last > TOKEN_USE_GRANULARITY:
                conn.execute(
                    update(t.api_tokens)
                    .where(t.api_tokens.c.id == row.token_id)
                    .values(last_used_at=moment)
                )
            return user_from_row(row)

        return self._tx(get)

    def list_tokens(self, user_id: int) -> Deferred[list[ApiToken]]:
        """The user's tokens (never the secrets), newest first, expired ones included."""

        def list_(conn: Connection) -> list[ApiToken]:
            rows = conn.execute(
                select(t.api_tokens)
                .where(t.api_tokens.c.user_id == user_id)
                .order_by(t.api_tokens.c.id.desc())
            )
            moment = self.now()
            out = []
            for r in rows:
                expires = aware(r.expires_at)
                out.append(
                    ApiToken(
                        id=r.id,
                        name=r.name,
                        created_at=utc(r.created_at),
                        expires_at=expires,
                        last_used_at=aware(r.last_used_at),
                        expired=expires is not None and expires <= moment,
                    )
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
                        created_at=self.now(),
                    )
                )
            except IntegrityError:
                raise Conflict("key_exists", "this key is already registered") from None

        return self._tx(add)

    def ssh_keys(self, user_id: int) -> Deferred[list[SshKey]]:
        return self._tx(
            lambda conn: [
                SshKey(
                    id=r.id, fingerprint=r.fingerprint, comment=r.comment, public_key=r.public_key
                )
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
            moment = self.now()
            conn.execute(
                insert(t.sessions).values(
                    id_hash=secret_hash(session_id),
                    user_id=user_id,
                    csrf_token=csrf,
                    created_at=moment,
                    expires_at=moment + lifetime,
                )
            )
            return session_id, csrf

        return self._tx(create)

    def session(self, session_id: str) -> Deferred[tuple[User, str] | None]:
        def get(conn: Connection) -> tuple[User, str] | None:
            row = conn.execute(
                select(t.users, t.sessions.c.csrf_token, t.sessions.c.expires_at)
                .join(t.sessions, t.sessions.c.user_id == t.users.c.id)
                .where(t.sessions.c.id_hash == secret_hash(session_id))
            ).first()
            if row is None:
                return None
            if utc(row.expires_at) < self.now():
                conn.execute(
                    delete(t.sessions).where(t.sessions.c.id_hash == secret_hash(session_id))
                )
                return None
            return user_from_row(row), row.csrf_token

        return self._tx(get)

    def delete_session(self, session_id: str) -> Deferred[None]:
        def remove(conn: Connection) -> None:
            conn.execute(delete(t.sessions).where(t.sessions.c.id_hash == secret_hash(session_id)))

        return self._tx(remove)

    def delete_sessions(self, user_id: int, keep: str | None = None) -> Deferred[int]:
        """End every session of the user except C{keep}; how many ended."""

        def remove(conn: Connection) -> int:
            where = t.sessions.c.user_id == user_id
            if keep is not None:
                where = and_(where, t.sessions.c.id_hash != secret_hash(keep))
            return int(conn.execute(delete(t.sessions).where(where)).rowcount)

        return self._tx(remove)

    def session_started(self, session_id: str) -> Deferred[datetime | None]:
        """When the session's user signed in (its creation), if the session exists."""

        def get(conn: Connection) -> datetime | None:
            value = conn.execute(
                select(t.sessions.c.created_at).where(
                    t.sessions.c.id_hash == secret_hash(session_id)
                )
            ).scalar()
            return aware(value)

        return self._tx(get)
