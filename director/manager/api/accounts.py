"""Your account: /me, API tokens and SSH keys."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.manager.access import authenticated
from director.manager.api.base import (
    APIError,
    ManagerBase,
    app,
    not_found,
    parse_public_key,
    read_object,
)
from director.manager.models import User
from director.manager.store import NotFound
from director.manager.user_service import token_request


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
        updated = await self.user_service.change_own(
            user,
            body,
            lambda: self._recently_authenticated(request, user, None),
            getattr(request, "director_session_id", None),
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
        return await self.user_service.password_matches(user, password)

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
        name, days = token_request(body)
        if not await self._recently_authenticated(request, user, body.get("password")):
            raise APIError(
                403,
                "reauthenticate",
                "creating a token needs a recent sign-in: sign in again, or send your "
                "current password as password",
            )
        token, expires = await self.user_service.issue_token(user, user, name, days)
        return render_json(
            request,
            {"token": token, "name": name, "expires_at": expires.isoformat() if expires else None},
            201,
        )

    @app.route("/api/v1/tokens/<int(max=2147483647):token_id>", methods=["DELETE"])
    @authenticated()
    async def delete_token(self, request: IRequest, user: User, token_id: int) -> bytes:
        try:
            await self.user_service.revoke_token(user, token_id)
        except NotFound:
            raise not_found("no such token") from None
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
