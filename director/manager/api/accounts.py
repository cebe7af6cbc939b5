"""Your account: /me, API tokens and SSH keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.manager.access import authenticated
from director.manager.api.base import (
    APIError,
    ManagerBase,
    _token_request,
    app,
    not_found,
    parse_public_key,
    read_object,
)
from director.manager.models import User, ValidationError
from director.manager.passwords import MAX_LENGTH as MAX_PASSWORD_LENGTH
from director.manager.passwords import validate_password


class AccountRoutes(ManagerBase):
    # -- me, tokens, keys -----------------------------------------------------------------------

    @app.route("/api/v1/me", methods=["GET"])
    @authenticated()
    async def me(self, request: IRequest, user: User) -> bytes:
        return render_json(request, user.to_json())

    @app.route("/api/v1/me", methods=["PATCH"])
    @authenticated()
    async def patch_me(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"accepted_guidelines", "password", "current_password"})
        values: dict[str, Any] = {}
        if "accepted_guidelines" in body:
            if body["accepted_guidelines"] is not True:
                raise ValidationError("accepted_guidelines", "can only be set to true")
            values["accepted_guidelines"] = True
        current = body.get("current_password")
        if current is not None and (
            not isinstance(current, str) or len(current) > MAX_PASSWORD_LENGTH
        ):
            raise ValidationError("current_password", "your current password, as text")
        if "password" in body and user.is_service:
            raise APIError(
                409, "service_account", "service accounts have no password: they use API tokens"
            )
        if "password" in body:
            found = await self.store.password_hash(user.username)
            has_password = found is not None and found[1] is not None
            if found is None or (
                has_password
                and not (isinstance(current, str) and await self.passwords.check(current, found[1]))
            ):
                raise APIError(403, "wrong_password", "the current password is wrong")
            if not has_password and not await self._recently_authenticated(request, user, None):
                # An account that signs in through the school has no password to confirm:
                # giving it one needs a fresh sign-in instead.
                raise APIError(
                    403, "reauthenticate", "setting a first password needs a recent sign-in"
                )
            values["password_hash"] = await self.passwords.hash(validate_password(body["password"]))
        updated = await self.store.update_user(user.username, **values) if values else user
        if "password_hash" in values:
            # Whoever else was signed in as this user (with the old password) is signed out.
            ended = await self.store.delete_sessions(
                user.id, keep=getattr(request, "director_session_id", None)
            )
            await self.store.audit(
                user, "change_password", user.username, {"sessions_ended": ended}
            )
        return render_json(request, updated.to_json())

    async def _recently_authenticated(self, request: Any, user: User, password: object) -> bool:
        """A dashboard session signed in within C{reauth}, or the account's password."""
        session_id = getattr(request, "director_session_id", None)
        if session_id is not None:
            started = await self.store.session_started(session_id)
            if started is not None and self.store.now() - started <= self.reauth:
                return True
        if password is None:
            return False
        found = await self.store.password_hash(user.username)
        return (
            isinstance(password, str)
            and len(password) <= 256
            and found is not None
            and found[1] is not None
            and await self.passwords.check(password, found[1])
        )

    @app.route("/api/v1/tokens", methods=["GET"])
    @authenticated()
    async def list_tokens(self, request: IRequest, user: User) -> bytes:
        return render_json(
            request, {"tokens": [t.to_json() for t in await self.store.list_tokens(user.id)]}
        )

    @app.route("/api/v1/tokens", methods=["POST"])
    @authenticated()
    async def create_token(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"name", "expires_in_days", "password"})
        name, days = _token_request(body)
        if not await self._recently_authenticated(request, user, body.get("password")):
            raise APIError(
                403,
                "reauthenticate",
                "creating a token needs a recent sign-in: sign in again, or send your "
                "current password as password",
            )
        expires = self.store.now() + timedelta(days=days) if days is not None else None
        token = await self.store.create_token(user.id, name, expires)
        await self.store.audit(
            user, "create_token", user.username, {"name": name, "expires_in_days": days}
        )
        return render_json(
            request,
            {"token": token, "name": name, "expires_at": expires.isoformat() if expires else None},
            201,
        )

    @app.route("/api/v1/tokens/<int(max=2147483647):token_id>", methods=["DELETE"])
    @authenticated()
    async def delete_token(self, request: IRequest, user: User, token_id: int) -> bytes:
        if not await self.store.delete_token(user.id, token_id):
            raise not_found("no such token")
        await self.store.audit(user, "revoke_token", user.username, {"id": token_id})
        return render_json(request, {"deleted": token_id})

    @app.route("/api/v1/me/keys", methods=["GET"])
    @authenticated()
    async def list_keys(self, request: IRequest, user: User) -> bytes:
        return render_json(
            request, {"keys": [k.to_json() for k in await self.store.ssh_keys(user.id)]}
        )

    @app.route("/api/v1/me/keys", methods=["POST"])
    @authenticated()
    async def add_key(self, request: IRequest, user: User) -> bytes:
        body = read_object(request, {"public_key"})
        line = body.get("public_key")
        fingerprint, comment, normalized = parse_public_key(line)
        await self.store.add_ssh_key(user.id, normalized, fingerprint, comment)
        await self.store.audit(user, "add_ssh_key", user.username, {"fingerprint": fingerprint})
        return render_json(request, {"fingerprint": fingerprint, "comment": comment}, 201)

    @app.route("/api/v1/me/keys/<int(max=2147483647):key_id>", methods=["DELETE"])
    @authenticated()
    async def delete_key(self, request: IRequest, user: User, key_id: int) -> bytes:
        if not await self.store.delete_ssh_key(user.id, key_id):
            raise not_found("no such key")
        return render_json(request, {"deleted": key_id})
