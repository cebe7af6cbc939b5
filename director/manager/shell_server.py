"""
/shell-server/: what the SSH shell server may ask the manager (signed requests from the
shell component only, enforced by the guard): is this password or public key right, which
sites may this user enter, a single-use token for one user and one site, and (after a
`git push` deployed a site) the deploy operation that records it and restarts the site.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from director.clients import OrchestratorClient
from director.common.guard import caller_of, render_error
from director.common.tokens import mint
from director.common.web import render_json
from director.manager.access import locked, may_act
from director.manager.api import APIError, parse_public_key, read_object
from director.manager.models import Site, User, ValidationError
from director.manager.operations import OPERATIONS, wait_for
from director.manager.orchestrator_pool import OrchestratorPool, url_of
from director.manager.passwords import Passwords
from director.manager.store import Store

TOKEN_TTL = 60.0
#: How long /shell-server/deploy waits for its operation (the shell server waits a bit longer).
DEPLOY_WAIT = 240.0
COMMIT = re.compile(r"^[0-9a-f]{7,64}$")


class ShellServerAPI:
    app = Klein()
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Store,
        passwords: Passwords,
        token_key: Any,
        orchestrator_url: str | OrchestratorPool,
        admin_contact: str = "the administrators",
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self._admin_contact = admin_contact
        self._wake = wake
        self._store = store
        self._passwords = passwords
        self._key = token_key
        # The websocket of each site's shell is on the orchestrator that runs the site.
        self._url_for = url_of(orchestrator_url)
        self._pool = orchestrator_url if isinstance(orchestrator_url, OrchestratorPool) else None

    @app.handle_errors(APIError)
    def _api_error(self, request: IRequest, failure: Any) -> bytes:
        e = failure.value
        return render_error(request, e.status, e.code, e.message)

    @app.handle_errors(ValidationError)
    def _validation_error(self, request: IRequest, failure: Any) -> bytes:
        return render_error(request, 400, failure.value.code, failure.value.message)

    @app.route("/shell-server/whoami", methods=["GET"])
    def whoami(self, request: IRequest) -> bytes:
        """Which component the guard authenticated (for `director check` and the tests)."""
        return render_json(request, {"component": "manager", "caller": caller_of(request)})

    @app.route("/shell-server/login", methods=["POST"])
    async def login(self, request: IRequest) -> bytes:
        body = read_object(request, {"username", "password", "public_key"})
        username = body.get("username")
        refused = APIError(401, "bad_credentials", "wrong username, password or key")
        if not isinstance(username, str) or len(username) > 64:
            raise refused
        found = await self._store.password_hash(username)
        if "password" in body:
            password = body["password"]
            ok = (
                isinstance(password, str)
                and len(password) <= 256
                and await self._passwords.check(password, found[1] if found else None)
            )
        elif "public_key" in body:
            try:
                fingerprint, _, _ = parse_public_key(body["public_key"])
            except ValidationError:
                raise refused from None
            ok = found is not None and await self._store.has_ssh_key(username, fingerprint)
        else:
            raise APIError(400, "bad_request", "send a password or a public_key")
        if not ok or found is None:
            raise refused
        user = found[0]
        if user.is_service:
            raise refused  # service accounts have API tokens only
        if not user.is_active:
            raise APIError(403, "inactive", "this account is deactivated")
        sites = await self._store.list_sites(member=username)
        return render_json(
            request,
            {
                "username": user.username,
                "sites": [
                    {
                        "id": s.id,
                        "name": s.name,
                        "type": s.type,
                        "availability": s.availability,
                        "locked": locked(user, s),
                    }
                    for s in sites
                ],
            },
        )

    async def _active_member(self, body: dict[str, Any]) -> tuple[User, Site]:
        """
        The active user C{body["username"]} and C{body["site"]}, one of their sites; whatever
        else the names are, one answer (no such site), which does not tell if the site exists.
        """
        username, name = body.get("username"), body.get("site")
        unknown = APIError(404, "unknown_site", "no such site, or you are not a member")
        if not isinstance(username, str) or not isinstance(name, str) or len(name) > 64:
            raise unknown
        user = await self._store.get_user(username)
        site = await self._store.get_site(name)
        if user is None or site is None or not may_act(user, site.members):
            raise unknown
        if not user.is_active:
            raise APIError(403, "inactive", "this account is deactivated")
        return user, site

    @app.route("/shell-server/session", methods=["POST"])
    async def session(self, request: IRequest) -> bytes:
        body = read_object(request, {"username", "site"})
        user, site = await self._active_member(body)
        if locked(user, site):
            raise APIError(
                403,
                "site_disabled",
                f"an administrator disabled {site.name}; contact {self._admin_contact} "
                "to have it enabled",
            )
        if self._pool is not None and not self._pool.up_for(site):
            raise APIError(
                503,
                "node_unavailable",
                f"the server {site.name} runs on is unavailable; try again soon",
            )
        token = mint(
            self._key, self._reactor, site.id, user.username, TOKEN_TTL, admin=user.is_admin
        )
        self.log.info(
            "shell session token for {user} on {site}", user=user.username, site=site.name
        )
        return render_json(
            request,
            {
                "site_id": site.id,
                "site_name": site.name,
                "token": token,
                "websocket_url": OrchestratorClient.websocket_url(
                    self._url_for(site), OrchestratorClient.shell_path(site.id)
                ),
            },
        )

    @app.route("/shell-server/deploy", methods=["POST"])
    async def deploy(self, request: IRequest) -> bytes:
        """
        A `git push` by C{username} has just put C{commit} in place in C{site}: record a
        deploy operation (which restarts a dynamic site) and answer once it has finished,
        with the operation (its status and error say how it went).
        """
        body = read_object(request, {"username", "site", "commit"})
        commit = body.get("commit")
        if not isinstance(commit, str) or not COMMIT.match(commit):
            raise APIError(400, "bad_commit", "commit must be a hexadecimal commit id")
        user, site = await self._active_member(body)
        if site.availability == "disabled":
            raise APIError(403, "site_disabled", f"{site.name} is disabled")
        params = {"commit": commit, "via": "git push"}
        _, op = await self._store.update_site(
            site.id,
            {},
            operation=("deploy", OPERATIONS["deploy"]),
            params=params,
            created_by=user.id,
        )
        await self._store.audit(user, "deploy", site.name, {"values": {}, "params": params})
        if self._wake is not None:
            self._wake()
        assert op is not None
        self.log.info(
            "git push deploy of {site} by {user} ({commit})",
            site=site.name,
            user=user.username,
            commit=commit,
        )
        done = await wait_for(self._reactor, self._store, op.id, timeout=DEPLOY_WAIT)
        return render_json(request, {"operation": done.to_json()})
