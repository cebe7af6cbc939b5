"""
Signing in and out (L{SignInPages}): the password form, OIDC and its callback, linking an
identity, and accepting the guidelines. They are plain forms handled here, not API calls,
because they create or change the session itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from director.manager.dashboard.oidc import Attempt, OIDCError
from director.manager.dashboard.page_base import (
    OIDC_COOKIE,
    DashboardBase,
    PageError,
    Redirect,
    Viewer,
    _arg,
    app,
    not_found,
)
from director.manager.dashboard.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    get_cookie,
    new_nonce,
    safe_next,
    set_cookie,
    tokens_match,
)
from director.manager.models import (
    User,
)
from director.manager.store import Conflict


class SignInPages(DashboardBase):
    """The pages that make, change and end a session."""

    # -- sign-in -----------------------------------------------------------------------------------

    def _cookie(
        self, request: Any, name: bytes, value: str, max_age: int, same_site: str = "Lax"
    ) -> None:
        set_cookie(request, name, value, self.origin, max_age, same_site, self.proxies)

    def _login_token(self, request: Any) -> str:
        token = new_nonce()
        self._cookie(request, LOGIN_CSRF_COOKIE, token, 3600, same_site="Strict")
        return token

    @app.route("/login", methods=["GET"])
    async def login_form(self, request: Any) -> bytes:
        if await self.viewer(request) is not None:
            raise Redirect("/")
        next_url = safe_next(_arg(request, "next"))
        return await self.render(
            request,
            "login.html",
            title="Sign in",
            login_csrf=self._login_token(request),
            next=next_url,
            username="",
            error="",
        )

    @app.route("/login", methods=["POST"])
    async def login(self, request: Any) -> bytes:
        username = (_arg(request, "username") or "").strip().lower()[:64]
        password = _arg(request, "password") or ""
        next_url = safe_next(_arg(request, "next"))
        sent = _arg(request, "csrf")
        expected = get_cookie(request, LOGIN_CSRF_COOKIE, self.proxies)

        async def again(status: int, error: str) -> bytes:
            return await self.render(
                request,
                "login.html",
                status,
                title="Sign in",
                login_csrf=self._login_token(request),
                next=next_url,
                username=username,
                error=error,
            )

        if not tokens_match(sent, expected.decode("latin-1") if expected else None):
            return await again(
                400, "Your sign-in form expired (or cookies are off). Please try again."
            )
        if not username or not password:
            return await again(400, "Enter your username and password.")
        address = self.proxies.client(request)
        if await self.login_throttle.blocked(username, address):
            return await again(429, "Too many failed attempts. Wait a few minutes and try again.")
        found = await self.store.password_hash(username)
        # A missing account is checked against a dummy hash: it takes as long as a real one.
        ok = await self.passwords.check(password, found[1] if found else None)
        if not ok or found is None:
            await self.login_throttle.failed(username, address)
            return await again(401, "Wrong username or password.")
        user = found[0]
        await self.login_throttle.succeeded(username, address)
        if not user.is_active:
            return await again(403, "This account is deactivated. Ask an administrator.")
        self._cookie(request, LOGIN_CSRF_COOKIE, "", 0, same_site="Strict")
        return await self._sign_in(request, user, next_url, "password")

    async def _sign_in(self, request: Any, user: User, next_url: str, how: str) -> bytes:
        """Start a session for C{user} and send the browser on."""
        session_id, _ = await self.store.create_session(user.id, self.session_lifetime)
        self._cookie(
            request, SESSION_COOKIE, session_id, int(self.session_lifetime.total_seconds())
        )
        address = self.proxies.client(request)
        await self.store.audit(user, "sign_in", user.username, {"address": address, "via": how})
        if not user.accepted_guidelines:
            raise Redirect("/guidelines?" + urlencode({"next": next_url}))
        raise Redirect(next_url)

    @app.route("/login/oidc", methods=["GET"])
    async def login_oidc(self, request: Any) -> bytes:
        """
        Send the browser to the school's sign-in service: to sign in, or (C{?link=1}, from
        the account page, signed in recently) to link that identity to this account.
        """
        if self.oidc is None:
            raise not_found()
        link = _arg(request, "link") == "1"
        if link:
            viewer = await self.require(request, guidelines=False)
            if not await self._recently_signed_in(viewer):
                raise PageError(
                    403,
                    "Sign in again",
                    "Linking a sign-in needs a recent sign-in: sign out, sign in, and try again.",
                )
        attempt = Attempt.new(link)
        self._cookie(request, OIDC_COOKIE, attempt.cookie(), 600, same_site="Lax")
        raise Redirect(self.oidc.authorization_url(attempt))

    async def _recently_signed_in(self, viewer: Viewer) -> bool:
        started = await self.store.session_started(viewer.session_id)
        return started is not None and self.store.now() - started <= self.reauth

    @app.route("/login/oidc/callback", methods=["GET"])
    async def login_oidc_callback(self, request: Any) -> bytes:
        """
        The sign-in service sent the browser back: sign into the account linked to the
        identity, link it (when asked from the account page), or create a new account.
        """
        if self.oidc is None:
            raise not_found()
        cookie = get_cookie(request, OIDC_COOKIE, self.proxies)
        attempt = Attempt.from_cookie(cookie.decode("latin-1") if cookie else None)
        self._cookie(request, OIDC_COOKIE, "", 0, same_site="Lax")
        if attempt is None:
            raise PageError(400, "Sign-in expired", "Start signing in again.")
        try:
            identity = await self.oidc.identify(
                attempt, _arg(request, "state"), _arg(request, "code")
            )
        except OIDCError as e:
            raise PageError(400, "Could not sign in", str(e)) from None
        except Exception:
            self.log.failure("signing in through the provider")
            raise PageError(
                502, "Could not sign in", "The school's sign-in service did not answer; try again."
            ) from None
        if attempt.link:
            return await self._link_identity(request, identity)
        user = await self.store.oidc_user(identity.issuer, identity.subject)
        if user is None:
            settings = self.oidc.settings
            if not settings.new_user_role:
                raise PageError(
                    403,
                    "No account",
                    "No Director account is linked to this sign-in. Sign in with your "
                    "password and link it on your account page, or ask an administrator.",
                )
            refusal = identity.may_get_account(settings.allowed_domains)
            if refusal is not None:
                raise PageError(403, "No account", f"Cannot create an account: {refusal}.")
            user = await self.store.create_oidc_user(
                list(identity.names),
                settings.new_user_role,
                identity.email,
                identity.full_name,
                identity.issuer,
                identity.subject,
            )
            await self.store.audit(
                user, "create_user", user.username, {"role": user.role, "via": "oidc"}
            )
        if not user.is_active:
            raise PageError(403, "Account deactivated", "Ask an administrator.")
        return await self._sign_in(request, user, "/", "oidc")

    async def _link_identity(self, request: Any, identity: Any) -> bytes:
        viewer = await self.require(request, guidelines=False)
        if not await self._recently_signed_in(viewer):
            raise PageError(403, "Sign in again", "Linking a sign-in needs a recent sign-in.")
        try:
            await self.store.link_oidc(viewer.user.id, identity.issuer, identity.subject)
        except Conflict:
            raise PageError(
                409, "Already linked", "This sign-in is already linked to another account."
            ) from None
        await self.store.audit(
            viewer.user, "link_oidc", viewer.user.username, {"issuer": identity.issuer}
        )
        raise Redirect("/account")

    @app.route("/logout", methods=["POST"])
    async def logout(self, request: Any) -> bytes:
        viewer = await self.viewer(request)
        if viewer is not None:
            if not tokens_match(_arg(request, "csrf"), viewer.csrf):
                raise PageError(403, "Expired form", "Reload the page and sign out again.")
            await self.store.delete_session(viewer.session_id)
        self._cookie(request, SESSION_COOKIE, "", 0)
        raise Redirect("/login")

    @app.route("/guidelines", methods=["GET"])
    async def guidelines(self, request: Any) -> bytes:
        viewer = await self.require(request, guidelines=False)
        page = self.guide.page("guidelines")
        return await self.render(
            request,
            "guidelines.html",
            title="Guidelines",
            page=page,
            accepted=viewer.user.accepted_guidelines,
            next=safe_next(_arg(request, "next")),
            error="",
        )

    @app.route("/guidelines", methods=["POST"])
    async def accept_guidelines(self, request: Any) -> bytes:
        viewer = await self.require(request, guidelines=False)
        if not tokens_match(_arg(request, "csrf"), viewer.csrf):
            raise PageError(403, "Expired form", "Reload the page and try again.")
        next_url = safe_next(_arg(request, "next"))
        if _arg(request, "accept") != "yes":
            return await self.render(
                request,
                "guidelines.html",
                400,
                title="Guidelines",
                page=self.guide.page("guidelines"),
                accepted=False,
                next=next_url,
                error="Tick the box to accept the guidelines.",
            )
        await self.store.update_user(viewer.user.username, accepted_guidelines=True)
        await self.store.audit(viewer.user, "accept_guidelines", viewer.user.username, {})
        raise Redirect(next_url)
