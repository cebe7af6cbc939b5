"""Accounts: users, and the identities at the OpenID Connect provider linked to them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from director.manager import schema as t
from director.manager.models import User
from director.manager.store.base import Conflict, NotFound, StoreBase, new_id
from director.manager.store.members import attach_pending


def user_from_row(row: Any) -> User:
    """A L{User} from a row of C{users} (or of a join that selects it)."""
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


class UserStore(StoreBase):
    """Users and their OpenID Connect identities."""

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
                        created_at=self.now(),
                        is_service=is_service,
                    )
                )
            except IntegrityError:
                raise Conflict("username_taken", f"user {username} already exists") from None
            user_id = new_id(result)
            attach_pending(conn, user_id, username)
            row = conn.execute(select(t.users).where(t.users.c.id == user_id)).one()
            return user_from_row(row)

        return self._tx(create)

    def get_user(self, username: str) -> Deferred[User | None]:
        def get(conn: Connection) -> User | None:
            row = conn.execute(select(t.users).where(t.users.c.username == username)).first()
            return user_from_row(row) if row else None

        return self._tx(get)

    def password_hash(self, username: str) -> Deferred[tuple[User, str | None] | None]:
        def get(conn: Connection) -> tuple[User, str | None] | None:
            row = conn.execute(select(t.users).where(t.users.c.username == username)).first()
            return (user_from_row(row), row.password_hash) if row else None

        return self._tx(get)

    def list_users(self) -> Deferred[list[User]]:
        return self._tx(
            lambda conn: [
                user_from_row(r) for r in conn.execute(select(t.users).order_by(t.users.c.username))
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
            return user_from_row(
                conn.execute(select(t.users).where(t.users.c.username == username)).one()
            )

        return self._tx(change)

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
        return user_from_row(row) if row else None

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
                            user_id=user_id, issuer=issuer, subject=subject, created_at=self.now()
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
                            created_at=self.now(),
                        )
                    )
                    user_id = new_id(result)
                    conn.execute(
                        insert(t.oidc_identities).values(
                            user_id=user_id, issuer=issuer, subject=subject, created_at=self.now()
                        )
                    )
                    attach_pending(conn, user_id, username)
            except IntegrityError:
                linked = self._linked_user(conn, issuer, subject)
                if linked is None:
                    raise Conflict("username_taken", "try signing in again") from None
                return linked
            return user_from_row(conn.execute(select(t.users).where(t.users.c.id == user_id)).one())

        return self._tx(create)
