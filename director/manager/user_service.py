"""
People and service accounts: creating and changing users (role, deactivation, passwords),
and API tokens (a person's own; an administrator's for a service account). Each change is
audited. No HTTP here: the domain errors (L{ValidationError}, L{Conflict}, L{NotFound},
L{AccessDenied}) are the routes' to render; whether a request was signed in recently is
the caller's to tell.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from director.manager import models
from director.manager.access import AccessDenied
from director.manager.models import User, ValidationError
from director.manager.passwords import MAX_LENGTH as MAX_PASSWORD_LENGTH
from director.manager.passwords import Passwords, validate_password
from director.manager.store import Conflict, NotFound, Store


def text_field(fields: dict[str, Any], key: str, longest: int) -> str:
    """An optional text field of C{fields} ("" when absent), at most C{longest} characters."""
    value = fields.get(key, "")
    # no NUL: PostgreSQL's text cannot hold it (SQLite's can; it was a 500 there)
    if not isinstance(value, str) or len(value) > longest or "\x00" in value:
        raise ValidationError(key, f"text of at most {longest} characters, without NUL")
    return value


def token_request(fields: dict[str, Any]) -> tuple[str, int | None]:
    """(name, days until it expires or None) of a new API token."""
    name = fields.get("name", "api")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise ValidationError("name", "1 to 100 characters")
    days = models.whole_number(fields.get("expires_in_days"))
    if fields.get("expires_in_days") is not None and (days is None or not 1 <= days <= 3650):
        raise ValidationError("expires_in_days", "a whole number of days from 1 to 3650")
    return name, days


def _no_password() -> Conflict:
    """Refused: a password for an account that signs in with API tokens only."""
    return Conflict("service_account", "service accounts have no password: they use API tokens")


class UserService:
    """The users and API tokens of C{store}; passwords hashed and checked by C{passwords}."""

    def __init__(self, store: Store, passwords: Passwords) -> None:
        self.store = store
        self.passwords = passwords

    async def listed_for(self, viewer: User) -> list[User]:
        """Every user, for a teacher or an administrator (L{AccessDenied} for others)."""
        if not viewer.is_teacher:
            raise AccessDenied(403, "forbidden", "only teachers and administrators list users")
        return await self.store.list_users()

    async def create(self, actor: User, fields: dict[str, Any]) -> User:
        """
        An administrator's new user from C{fields} (C{username}, C{role}, C{password},
        C{full_name}, C{email}, C{is_service}). L{ValidationError} for a bad field,
        L{Conflict} for a password on a service account or a name taken.
        """
        username = models.validate_username(fields.get("username"))
        role = models.validate_choice("role", fields.get("role", "student"), models.ROLES)
        service = fields.get("is_service", False)
        if not isinstance(service, bool):
            raise ValidationError("is_service", "true for an account that only has API tokens")
        password_hash = None
        if fields.get("password") is not None:
            if service:
                raise _no_password()
            password_hash = await self.passwords.hash(validate_password(fields["password"]))
        created = await self.store.create_user(
            username,
            role,
            password_hash,
            text_field(fields, "full_name", 200),
            text_field(fields, "email", 254),
            is_service=service,
        )
        await self.store.audit(
            actor, "create_user", username, {"role": role, "is_service": service}
        )
        return created

    async def change(self, actor: User, username: str, fields: dict[str, Any]) -> User:
        """
        An administrator's change of C{username}'s C{role}, C{is_active} or C{password}
        (at least one of them); a new password or a deactivation ends their sessions.
        L{ValidationError} for a bad field, L{Conflict} for a service account's password,
        L{NotFound} for no such user.
        """
        values: dict[str, Any] = {}
        if "role" in fields:
            values["role"] = models.validate_choice("role", fields["role"], models.ROLES)
        if "is_active" in fields:
            if not isinstance(fields["is_active"], bool):
                raise ValidationError("is_active", "true or false")
            values["is_active"] = fields["is_active"]
        if "password" in fields:
            target = await self.store.get_user(username)
            if target is not None and target.is_service:
                raise _no_password()
            values["password_hash"] = await self.passwords.hash(
                validate_password(fields["password"])
            )
        updated = await self.store.update_user(username, **values)
        if "password_hash" in values or values.get("is_active") is False:
            await self.store.delete_sessions(updated.id)
        await self.store.audit(
            actor, "edit_user", username, {k: v for k, v in values.items() if k != "password_hash"}
        )
        return updated

    async def change_own(
        self,
        user: User,
        fields: dict[str, Any],
        recently_signed_in: Callable[[], Awaitable[bool]],
        keep_session: str | None,
    ) -> User:
        """
        C{user}'s change of their own account: C{accepted_guidelines} (to true), or a new
        C{password} confirmed by C{current_password} (or, for an account with none yet, by
        C{recently_signed_in}). Other sessions than C{keep_session} end with a new password.
        L{ValidationError}, L{Conflict} for a service account, L{AccessDenied} C{wrong_password}
        or C{reauthenticate}.
        """
        values: dict[str, Any] = {}
        if "accepted_guidelines" in fields:
            if fields["accepted_guidelines"] is not True:
                raise ValidationError("accepted_guidelines", "can only be set to true")
            values["accepted_guidelines"] = True
        current = fields.get("current_password")
        if current is not None and (
            not isinstance(current, str) or len(current) > MAX_PASSWORD_LENGTH
        ):
            raise ValidationError("current_password", "your current password, as text")
        if "password" in fields and user.is_service:
            raise _no_password()
        if "password" in fields:
            found = await self.store.password_hash(user.username)
            has_password = found is not None and found[1] is not None
            if found is None or (
                has_password
                and not (isinstance(current, str) and await self.passwords.check(current, found[1]))
            ):
                raise AccessDenied(403, "wrong_password", "the current password is wrong")
            if not has_password and not await recently_signed_in():
                # An account that signs in through the school has no password to confirm:
                # giving it one needs a fresh sign-in instead.
                raise AccessDenied(
                    403, "reauthenticate", "setting a first password needs a recent sign-in"
                )
            values["password_hash"] = await self.passwords.hash(
                validate_password(fields["password"])
            )
        updated = await self.store.update_user(user.username, **values) if values else user
        if "password_hash" in values:
            # Whoever else was signed in as this user (with the old password) is signed out.
            ended = await self.store.delete_sessions(user.id, keep=keep_session)
            await self.store.audit(
                user, "change_password", user.username, {"sessions_ended": ended}
            )
        return updated

    async def password_matches(self, user: User, password: object) -> bool:
        """Whether C{password} is C{user}'s (an account without one has none to match)."""
        found = await self.store.password_hash(user.username)
        return (
            isinstance(password, str)
            and len(password) <= 256
            and found is not None
            and found[1] is not None
            and await self.passwords.check(password, found[1])
        )

    async def issue_token(
        self, actor: User, owner: User, name: str, days: int | None
    ) -> tuple[str, datetime | None]:
        """A new API token C{name} of C{owner}'s, for C{days} (None: no end); its expiry."""
        expires = self.store.now() + timedelta(days=days) if days is not None else None
        token = await self.store.create_token(owner.id, name, expires)
        await self.store.audit(
            actor, "create_token", owner.username, {"name": name, "expires_in_days": days}
        )
        return token, expires

    async def issue_service_token(
        self, actor: User, username: str, name: str, days: int | None
    ) -> tuple[str, datetime | None]:
        """
        An administrator's new token for the service account C{username}: L{NotFound} if
        there is no such user, L{Conflict} C{not_service} for a person.
        """
        known = models.USERNAME.fullmatch(username)
        target = await self.store.get_user(username) if known else None
        if target is None:
            raise NotFound(username)
        if not target.is_service:
            raise Conflict("not_service", "only service accounts get tokens from an administrator")
        return await self.issue_token(actor, target, name, days)

    async def revoke_token(self, user: User, token_id: int) -> None:
        """Revoke one of C{user}'s own tokens: L{NotFound} if they have no such token."""
        if not await self.store.delete_token(user.id, token_id):
            raise NotFound(token_id)
        await self.store.audit(user, "revoke_token", user.username, {"id": token_id})
