"""
The dashboard's pages through StubTreq against the real Klein app, with a real store on
SQLite (inline threads) and fake components: sign-in and sign-out, CSRF, the security
headers, escaping, and who may see what.
"""

from __future__ import annotations

import re
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from director.common.threads import InlineRunner
from director.manager.dashboard import GUIDE_DIR, Dashboard
from director.manager.dashboard.guide import Guide
from director.manager.dashboard.metrics import CountingResource, Metrics
from director.manager.dashboard.queries import DashboardQueries
from director.manager.dashboard.security import (
    LoginThrottle,
    Origin,
    dashboard_origins,
    safe_next,
)
from director.manager.operations import OPERATIONS
from director.manager.passwords import hash_password
from director.testing.manager import ManagerHarness, static_site_fields

pytestmark = pytest.mark.manager_store


BASE = "http://127.0.0.1:8000"
XSS = "<script>alert(1)</script>"


class DashboardHarness:
    """A ManagerHarness plus the dashboard on it, and helpers to act as a browser would."""

    def __init__(self, manager_url: str = BASE, guide_dir: Path = GUIDE_DIR) -> None:
        self.h = ManagerHarness(Path(tempfile.mkdtemp()))
        self.queries = DashboardQueries(self.h.store.engine, InlineRunner())
        self.metrics = Metrics(self.h.clock, self.queries)
        self.dashboard = Dashboard(
            self.h.clock,
            self.h.store,
            self.h.passwords,
            self.queries,
            Guide(guide_dir),
            self.metrics,
            manager_url=manager_url,
            sites_domain="sites.test",
            session_lifetime=timedelta(hours=2),
            sites_port=8080,
            router=self.h.router_client,
            authenticate=self.h.api.user,
            login_throttle=LoginThrottle(self.h.clock, max_failures=3),
            placements=self.h.placements,
        )
        self.base = manager_url
        self.http: Any = StubTreq(
            CountingResource(self.dashboard.app.resource(), self.metrics, "dashboard")
        )

    def result(self, d: Any) -> Any:
        return self.h.result(d)

    def user(
        self,
        username: str,
        role: str = "student",
        password: str = "password123",  # noqa: S107
        accepted: bool = True,
    ) -> Any:
        user = self.result(self.h.store.create_user(username, role, hash_password(password, 4)))
        if accepted:
            user = self.result(self.h.store.update_user(username, accepted_guidelines=True))
        return user

    def session(self, username: str) -> tuple[str, str]:
        """A signed-in session for C{username}: (session id, CSRF token)."""
        user = self.result(self.h.store.get_user(username))
        return tuple(self.result(self.h.store.create_session(user.id, timedelta(hours=1))))

    def site(self, name: str, members: list[str], **fields: Any) -> Any:
        values = {**static_site_fields(name), **fields}
        site, _ = self.result(
            self.h.store.create_site(
                values, members, ("create_site", OPERATIONS["create_site"]), None
            )
        )
        return site

    def request(
        self,
        method: str,
        path: str,
        session: str | None = None,
        data: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[Any, str]:
        jar = dict(cookies or {})
        if session:
            jar["director_session"] = session
        all_headers = {k: [v] for k, v in (headers or {}).items()}
        if jar:
            all_headers["Cookie"] = ["; ".join(f"{k}={v}" for k, v in jar.items())]
        response = self.result(
            self.http.request(
                method, self.base + path, data=data, headers=all_headers, allow_redirects=False
            )
        )
        return response, self.result(response.text())


def cookie(response: Any, name: str) -> str | None:
    for value in response.headers.getRawHeaders("set-cookie") or []:
        if value.startswith(name + "="):
            return str(value)
    return None


def login_token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


class SignInTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.d = DashboardHarness()
        self.d.user("alice")
        self.d.user("newbie", accepted=False)

    def sign_in(
        self,
        username: str,
        password: str,
        next_url: str = "/",
        headers: dict[str, str] | None = None,
    ) -> Any:
        form, page = self.d.request("GET", "/login", headers=headers)
        token = login_token(page)
        # The login cookie's name as the server set it (__Host- prefixed over HTTPS).
        set_cookie = form.headers.getRawHeaders("set-cookie")[0]
        name = set_cookie.split("=", 1)[0]
        return self.d.request(
            "POST",
            "/login",
            data={"username": username, "password": password, "csrf": token, "next": next_url},
            cookies={name: token},
            headers=headers,
        )

    def test_anonymous_pages_redirect_to_sign_in(self) -> None:
        """A page needing a user sends an anonymous visitor to /login, remembering where."""
        response, _ = self.d.request("GET", "/sites/anything/settings")
        self.assertEqual(response.code, 303)
        self.assertEqual(
            response.headers.getRawHeaders("location"),
            ["/login?next=" + quote("/sites/anything/settings", safe="")],
        )

    def test_sign_in_sets_a_safe_session_cookie(self) -> None:
        """The session cookie is HttpOnly, SameSite=Lax, expires, and is not Secure on http."""
        response, _ = self.sign_in("alice", "password123", "/sites/new")
        self.assertEqual(response.code, 303)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/sites/new"])
        value = cookie(response, "director_session")
        assert value is not None
        self.assertIn("HttpOnly", value)
        self.assertIn("SameSite=lax", value)
        self.assertIn("Max-Age=7200", value)
        self.assertIn("Path=/", value)
        self.assertNotIn("Secure", value)

    def test_secure_cookie_on_https(self) -> None:
        """
        When the manager's URL is https, the session cookie is Secure with the __Host-
        prefix (so no sibling host can plant one), and only that name signs in.
        """
        self.d = DashboardHarness("https://director.example.org")
        self.d.user("carol")
        response, _ = self.sign_in("carol", "password123")
        self.assertIsNone(cookie(response, "director_session"))
        value = cookie(response, "__Host-director_session")
        assert value is not None
        self.assertIn("Secure", value)
        self.assertIn("Path=/", value)
        self.assertNotIn("Domain", value)
        session = value.split(";")[0].split("=", 1)[1]
        # A plain cookie (as a sibling host could set) is not a session over HTTPS.
        plain, _ = self.d.request("GET", "/", session)
        self.assertEqual(plain.code, 303)
        signed_in, _ = self.d.request("GET", "/", cookies={"__Host-director_session": session})
        self.assertEqual(signed_in.code, 200)

    def test_wrong_password_keeps_the_username(self) -> None:
        """A wrong password re-shows the form with a message and the typed username."""
        response, page = self.sign_in("alice", "wrong-password")
        self.assertEqual(response.code, 401)
        self.assertIn("Wrong username or password", page)
        self.assertIn('value="alice"', page)
        self.assertIsNone(cookie(response, "director_session"))

    def test_unknown_user_answers_like_a_wrong_password(self) -> None:
        response, page = self.sign_in("nobody", "password123")
        self.assertEqual(response.code, 401)
        self.assertIn("Wrong username or password", page)

    def test_sign_in_needs_the_form_token(self) -> None:
        """A sign-in posted from elsewhere (no matching login cookie) is refused."""
        response, page = self.d.request(
            "POST", "/login", data={"username": "alice", "password": "password123", "csrf": "x"}
        )
        self.assertEqual(response.code, 400)
        self.assertIn("form expired", page)
        self.assertIsNone(cookie(response, "director_session"))

    def test_repeated_failures_are_throttled(self) -> None:
        """After too many wrong passwords even the right one is refused for a while."""
        for _ in range(3):
            self.sign_in("alice", "wrong-password")
        response, page = self.sign_in("alice", "password123")
        self.assertEqual(response.code, 429)
        self.assertIn("Too many failed attempts", page)
        self.d.h.clock.advance(301)
        response, _ = self.sign_in("alice", "password123")
        self.assertEqual(response.code, 303)

    def test_deactivated_user_cannot_sign_in(self) -> None:
        self.d.result(self.d.h.store.update_user("alice", is_active=False))
        response, page = self.sign_in("alice", "password123")
        self.assertEqual(response.code, 403)
        self.assertIn("deactivated", page)

    def test_next_is_local_only(self) -> None:
        """The page after sign-in is always on this site (no open redirect)."""
        response, _ = self.sign_in("alice", "password123", "//evil.example/x")
        self.assertEqual(response.headers.getRawHeaders("location"), ["/"])
        self.assertEqual(safe_next("https://evil.example/"), "/")
        self.assertEqual(safe_next("/\\evil"), "/")
        self.assertEqual(safe_next("/sites/a?b=1"), "/sites/a?b=1")

    def test_guidelines_first(self) -> None:
        """A user who has not accepted the guidelines is sent to them, then to the page."""
        response, _ = self.sign_in("newbie", "password123")
        self.assertEqual(response.headers.getRawHeaders("location"), ["/guidelines?next=%2F"])
        session, csrf = self.d.session("newbie")
        response, _ = self.d.request("GET", "/", session)
        self.assertEqual(response.code, 303)
        response, page = self.d.request("GET", "/guidelines", session)
        self.assertIn("Accept and continue", page)
        response, page = self.d.request(
            "POST", "/guidelines", session, data={"csrf": csrf, "next": "/account"}
        )
        self.assertEqual(response.code, 400)  # the box was not ticked
        response, _ = self.d.request(
            "POST", "/guidelines", session, data={"csrf": csrf, "accept": "yes", "next": "/account"}
        )
        self.assertEqual(response.headers.getRawHeaders("location"), ["/account"])
        self.assertTrue(self.d.result(self.d.h.store.get_user("newbie")).accepted_guidelines)
        self.assertEqual(self.d.request("GET", "/", session)[0].code, 200)

    def test_guidelines_need_the_csrf_token(self) -> None:
        session, _ = self.d.session("newbie")
        response, _ = self.d.request(
            "POST", "/guidelines", session, data={"csrf": "forged", "accept": "yes"}
        )
        self.assertEqual(response.code, 403)
        self.assertFalse(self.d.result(self.d.h.store.get_user("newbie")).accepted_guidelines)

    def test_sign_out_needs_the_csrf_token_and_ends_the_session(self) -> None:
        session, csrf = self.d.session("alice")
        response, _ = self.d.request("POST", "/logout", session, data={"csrf": "forged"})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.d.request("GET", "/", session)[0].code, 200)
        response, _ = self.d.request("POST", "/logout", session, data={"csrf": csrf})
        self.assertEqual(response.headers.getRawHeaders("location"), ["/login"])
        self.assertIn("Max-Age=0", cookie(response, "director_session") or "")
        self.assertEqual(self.d.request("GET", "/", session)[0].code, 303)

    def test_expired_session_is_signed_out(self) -> None:
        user = self.d.result(self.d.h.store.get_user("alice"))
        session, _ = self.d.result(self.d.h.store.create_session(user.id, timedelta(seconds=-1)))
        self.assertEqual(self.d.request("GET", "/", session)[0].code, 303)


class SecurityHeaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.d = DashboardHarness()
        self.d.user("alice")
        self.session, self.csrf = self.d.session("alice")

    def test_websockets_of_the_dashboard_host_are_allowed(self) -> None:
        """The CSP lets pages served through the routers connect to the dashboard host."""
        self.d.dashboard.public_origins = dashboard_origins("director.school.test", 80, 8443)
        response, _ = self.d.request("GET", "/", self.session)
        csp = response.headers.getRawHeaders("content-security-policy")[0]
        self.assertIn(
            "connect-src 'self' ws://127.0.0.1:8000 wss://director.school.test:8443 "
            "ws://director.school.test;",
            csp,
        )

    def test_every_page_has_the_headers(self) -> None:
        """CSP without inline scripts, no framing, no sniffing, a referrer policy."""
        for path, session in (("/login", None), ("/", self.session), ("/nowhere", self.session)):
            response, page = self.d.request("GET", path, session)
            csp = response.headers.getRawHeaders("content-security-policy")[0]
            self.assertIn("script-src 'self'", csp)
            self.assertNotIn("unsafe-inline", csp)
            self.assertIn("frame-ancestors 'none'", csp)
            self.assertIn("connect-src 'self' ws://127.0.0.1:8000", csp)
            self.assertEqual(response.headers.getRawHeaders("x-frame-options"), ["DENY"])
            self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])
            self.assertEqual(response.headers.getRawHeaders("referrer-policy"), ["same-origin"])
            # Every script is an external file; the style nonce matches the header's.
            self.assertEqual(re.findall(r"<script(?![^>]*\bsrc=)", page), [])
            nonce = re.search(r'name="style-nonce" content="([^"]+)"', page)
            assert nonce is not None
            self.assertIn(f"'nonce-{nonce.group(1)}'", csp)

    def test_nonce_changes_per_response(self) -> None:
        first = self.d.request("GET", "/", self.session)[0]
        second = self.d.request("GET", "/", self.session)[0]
        self.assertNotEqual(
            first.headers.getRawHeaders("content-security-policy"),
            second.headers.getRawHeaders("content-security-policy"),
        )

    def test_pages_carry_the_session_csrf_token(self) -> None:
        """Scripts send the page's token with every API write (the API checks it)."""
        _, page = self.d.request("GET", "/", self.session)
        self.assertIn(f'<meta name="csrf-token" content="{self.csrf}">', page)
        self.assertIn(f'name="csrf" value="{self.csrf}"', page)  # the sign-out form

    def test_static_files(self) -> None:
        """Built assets are served with long caching when versioned, and never listed."""
        response, body = self.d.request("GET", "/static/favicon.svg?v=1")
        self.assertEqual(response.code, 200)
        self.assertIn("<svg", body)
        self.assertIn("immutable", response.headers.getRawHeaders("cache-control")[0])
        self.assertEqual(response.headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        self.assertEqual(self.d.request("GET", "/static/")[0].code, 404)
        self.assertEqual(self.d.request("GET", "/static/../pages.py")[0].code, 404)

    def test_origin(self) -> None:
        origin = Origin.from_url("http://127.0.0.1:8000")
        self.assertTrue(origin.matches(b"http://127.0.0.1:8000"))
        self.assertFalse(origin.matches(b"http://127.0.0.1:8001"))
        self.assertFalse(origin.matches(b"https://127.0.0.1:8000"))
        self.assertFalse(origin.matches(b"null"))
        self.assertFalse(origin.matches(None))
        self.assertTrue(Origin.from_url("https://d.example").matches(b"https://d.example:443"))
        self.assertEqual(Origin.from_url("https://d.example").websocket(), "wss://d.example")


class SitePageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.d = DashboardHarness()
        for name in ("alice", "bob"):
            self.d.user(name)
        self.d.user("root", role="admin")
        self.d.user("tina", role="teacher")
        self.site = self.d.site("alice-site", ["alice"], description=XSS)
        self.d.site("bob-site", ["bob"], description="Bob's robotics club")
        self.alice = self.d.session("alice")[0]
        self.bob = self.d.session("bob")[0]
        self.root = self.d.session("root")[0]

    def test_site_list_shows_own_sites_escaped(self) -> None:
        """A description with markup is shown as text, never as markup."""
        response, page = self.d.request("GET", "/", self.alice)
        self.assertEqual(response.code, 200)
        self.assertIn("alice-site", page)
        self.assertNotIn("bob-site", page)
        self.assertNotIn(XSS, page)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", page)
        self.assertIn("http://alice-site.sites.test:8080/", page)

    def test_every_site_page_escapes_the_description(self) -> None:
        for suffix in ("", "/settings", "/files", "/terminal", "/database", "/tasks"):
            response, page = self.d.request("GET", f"/sites/alice-site{suffix}", self.alice)
            self.assertEqual(response.code, 200, suffix)
            self.assertNotIn(XSS, page, suffix)

    def test_site_page_shows_sftp_and_git_addresses(self) -> None:
        """The SFTP host, port and user, and the git URL (with copy buttons)."""
        response, page = self.d.request("GET", "/sites/alice-site", self.alice)
        self.assertEqual(response.code, 200)
        self.assertIn("<code>director.localhost</code>", page)
        self.assertIn("<code>2322</code>", page)
        self.assertIn("<code>alice/alice-site</code>", page)
        self.assertIn('data-copy="ssh://alice@director.localhost:2322/alice-site.git"', page)

    def test_site_page_and_admins_show_disk_usage(self) -> None:
        """Members see their site's disk use and quota; admins see the largest sites."""
        _, page = self.d.request("GET", "/sites/alice-site", self.alice)
        self.assertIn("not measured yet", page)
        mb = 1024 * 1024
        bob_site = self.d.result(self.d.h.store.get_site("bob-site"))
        self.d.result(
            self.d.h.store.set_disk_usage(
                {self.site.id: (1000 * mb, 1024 * mb), bob_site.id: (3 * mb, 1024 * mb)}
            )
        )
        _, page = self.d.request("GET", "/sites/alice-site", self.alice)
        self.assertIn("1000.0 MB of 1.0 GB", page)
        self.assertIn("nearly full", page)
        response, page = self.d.request("GET", "/admin/disk", self.root)
        self.assertEqual(response.code, 200)
        self.assertLess(page.index("alice-site"), page.index("bob-site"))
        self.assertIn("3.0 MB", page)
        response, _ = self.d.request("GET", "/admin/disk", self.alice)
        self.assertEqual(response.code, 404)  # (as every admin page, to others)
        _, page = self.d.request("GET", "/sites/alice-site/settings", self.root)
        self.assertIn('name="limits.disk_quota_mb"', page)

    def test_non_member_gets_404_everywhere(self) -> None:
        """Another user's site pages are 404, the same as a site that does not exist."""
        for suffix in ("", "/settings", "/files", "/terminal", "/database", "/tasks"):
            response, page = self.d.request("GET", f"/sites/alice-site{suffix}", self.bob)
            self.assertEqual(response.code, 404, suffix)
            self.assertNotIn("alice-site", page)
            missing, _ = self.d.request("GET", f"/sites/no-such-site{suffix}", self.bob)
            self.assertEqual(missing.code, 404)

    def test_admin_sees_every_site(self) -> None:
        self.assertEqual(self.d.request("GET", "/sites/alice-site", self.root)[0].code, 200)
        _, page = self.d.request("GET", "/?all=1", self.root)
        self.assertIn("alice-site", page)
        self.assertIn("bob-site", page)
        _, page = self.d.request("GET", "/", self.root)
        self.assertNotIn("bob-site", page)  # own sites only, until asked

    def test_search_qualifiers(self) -> None:
        _, page = self.d.request("GET", "/?all=1&q=desc:robotics", self.root)
        self.assertIn("bob-site", page)
        self.assertNotIn("alice-site", page)
        _, page = self.d.request("GET", "/?all=1&q=user:alice", self.root)
        self.assertIn("alice-site", page)
        self.assertNotIn("bob-site", page)
        _, page = self.d.request("GET", "/?q=name:bob", self.root)  # none of the admin's own
        self.assertIn("bob-site", page)
        _, page = self.d.request("GET", "/?q=name:zzz", self.alice)
        self.assertIn("No site matches", page)

    def test_students_see_the_agreement_box_when_the_school_has_one(self) -> None:
        for path in ("/sites/new", "/sites/new?personal=1", "/requests"):
            _, page = self.d.request("GET", path, self.alice)
            self.assertNotIn('name="agreement"', page)
        self.d.dashboard.student_agreement = "I follow the <school's> rules."
        for path in ("/sites/new", "/sites/new?personal=1", "/requests"):
            _, page = self.d.request("GET", path, self.alice)
            self.assertIn('<input type="checkbox" name="agreement" required>', page, path)
            self.assertIn("I follow the &lt;school&#39;s&gt; rules.", page)
        _, page = self.d.request("GET", "/sites/new", self.root)
        self.assertNotIn('name="agreement"', page)  # students only

    def test_banners_show_on_every_page_escaped(self) -> None:
        from datetime import UTC, datetime, timedelta

        self.d.result(self.d.h.store.add_banner("Down <b>tonight</b>", "warning", None, None))
        past = datetime.now(UTC) - timedelta(hours=1)
        self.d.result(self.d.h.store.add_banner("Old news", "info", None, past))
        for path in ("/", "/sites/alice-site", "/account"):
            _, page = self.d.request("GET", path, self.alice)
            self.assertIn('class="banner banner-warning" role="alert"', page, path)
            self.assertIn("Down &lt;b&gt;tonight&lt;/b&gt;", page)
            self.assertNotIn("Old news", page)
        response, page = self.d.request("GET", "/admin/notices", self.root)
        self.assertEqual(response.code, 200)
        self.assertIn("Old news", page)  # admins see expired ones to remove
        self.assertIn('data-api="/api/v1/mail"', page)
        self.assertEqual(self.d.request("GET", "/admin/notices", self.alice)[0].code, 404)

    def test_request_comments_public_and_for_admins(self) -> None:
        alice = self.d.result(self.d.h.store.get_user("alice"))
        tina = self.d.result(self.d.h.store.get_user("tina"))
        request_id = self.d.result(
            self.d.h.store.create_request(alice.id, tina.id, "robots", "Robotics", "")
        )
        self.d.result(
            self.d.h.store.set_request_comments(
                request_id, {"public_comment": "Which <room>?", "admin_comment": "secret note"}
            )
        )
        _, page = self.d.request("GET", "/requests", self.alice)
        self.assertIn("Which &lt;room&gt;?", page)
        self.assertNotIn("secret note", page)
        _, page = self.d.request("GET", "/requests", self.root)
        self.assertIn("secret note", page)
        self.assertIn(f'data-api="/api/v1/requests/{request_id}" data-method="PATCH"', page)

    def test_sites_come_30_a_page(self) -> None:
        for i in range(65):
            self.d.site(f"many-{i:02d}", ["bob"])
        names = []
        for page in (1, 2, 3):
            _, html = self.d.request("GET", f"/?page={page}&q=name:many", self.bob)
            found = re.findall(r'data-site-card="(many-\d+)"', html)
            self.assertEqual(len(found), 30 if page < 3 else 5, page)
            names += found
            self.assertEqual('rel="next"' in html, page < 3)
            self.assertEqual('rel="prev"' in html, page > 1)
        self.assertEqual(names, [f"many-{i:02d}" for i in range(65)])
        self.assertIn('href="/?q=name%3Amany&amp;page=2"', html)
        _, html = self.d.request("GET", "/?page=9", self.bob)
        self.assertIn("There are no more sites", html)
        response, html = self.d.request("GET", "/?page=-1", self.bob)
        self.assertEqual(response.code, 200)
        self.assertIn('data-site-card="bob-site"', html)

    def test_site_page_shows_the_live_operation(self) -> None:
        _, page = self.d.request("GET", "/sites/alice-site", self.alice)
        self.assertIn("Creating the site", page)
        self.assertIn('data-operation-id="', page)
        self.assertIn('data-confirm-name="alice-site"', page)

    def test_failed_operation_is_explained(self) -> None:
        """A failed operation is shown in words, with a retry button when the user may."""
        self.d.h.orchestrator.answers = lambda m, p, k: (_ for _ in ()).throw(
            __import__("director.testing.manager", fromlist=["error"]).error(
                422, "build_failed", "E: Unable to locate package pyton3"
            )
        )
        self.d.h.engine.wake()
        _, page = self.d.request("GET", "/sites/alice-site", self.alice)
        self.assertIn("Last operation failed", page)
        self.assertIn("Unable to locate package", page)

    def test_site_page_shows_the_public_comment_not_the_admin_notes(self) -> None:
        self.d.result(
            self.d.h.store.update_site(
                self.site.id,
                {
                    "availability": "disabled",
                    "public_comment": "Disabled <b>for now</b>",
                    "admin_comments": "private note",
                },
            )
        )
        _, page = self.d.request("GET", "/sites/alice-site", self.alice)
        self.assertIn("Disabled &lt;b&gt;for now&lt;/b&gt;", page)
        self.assertIn("An administrator disabled this site", page)
        self.assertNotIn("private note", page)

    def test_personal_sites_offer_deletion_to_admins_only(self) -> None:
        self.d.site("alice", ["alice"], purpose="personal")
        _, page = self.d.request("GET", "/sites/alice", self.alice)
        self.assertNotIn('data-confirm-name="alice"', page)
        self.assertIn("deleted by the administrators", page)
        _, page = self.d.request("GET", "/sites/alice", self.root)
        self.assertIn('data-confirm-name="alice"', page)

    def test_settings_after_a_failed_build_show_what_was_asked(self) -> None:
        """The site still runs its old packages; the form offers the failed request again."""
        self.d.h.engine.wake()
        self.d.h.orchestrator.answers = lambda m, p, k: (_ for _ in ()).throw(
            __import__("director.testing.manager", fromlist=["error"]).error(
                422, "build_failed", "E: Unable to locate package pyton3"
            )
        )
        self.d.result(
            self.d.h.store.create_operation(
                self.site.id,
                "alice-site",
                "set_image",
                ["build_image"],
                {"image": "director/python:3", "packages": ["pyton3"]},
            )
        )
        self.d.h.engine.wake()
        _, page = self.d.request("GET", "/sites/alice-site/settings", self.alice)
        self.assertIn("The last image change failed", page)
        self.assertIn('value="pyton3"', page)
        self.assertEqual(self.d.result(self.d.h.store.get_site("alice-site")).packages, ())

    def test_settings_show_images_and_certificates(self) -> None:
        self.d.result(
            self.d.h.store.put_image("director/python:3", "Python 3", "Debian with Python", None)
        )
        self.d.result(self.d.h.store.update_site(self.site.id, {}, domains=["www.example.org"]))
        self.d.h.router.answers = lambda m, p, k: {
            "certificates": {"www.example.org": {"state": "valid", "detail": "issued"}}
        }
        _, page = self.d.request("GET", "/sites/alice-site/settings", self.alice)
        self.assertIn("Python 3", page)
        self.assertIn("certificate: valid", page)
        self.assertIn("data-run-sh-templates='", page)
        self.assertNotIn("Administration", page)
        self.assertNotIn("Runs on the orchestrator", page)
        _, page = self.d.request("GET", "/sites/alice-site/settings", self.root)
        self.assertIn("Administration", page)
        self.assertIn("Runs on the orchestrator <strong>", page)
        self.assertNotIn('id="move-form"', page)  # no other orchestrator to move to

    def test_admins_get_a_move_form_listing_the_other_orchestrators(self) -> None:
        self.d.h.add_orchestrator("node-b")
        self.d.h.add_orchestrator("node-c")
        self.d.result(self.d.h.placements.set_state("node-c", "draining"))
        self.d.result(self.d.h.placements.set_site_orchestrator(self.site.id, "main"))
        _, page = self.d.request("GET", "/sites/alice-site/settings", self.alice)
        self.assertNotIn('id="move-form"', page)
        _, page = self.d.request("GET", "/sites/alice-site/settings", self.root)
        self.assertIn('data-api="/api/v1/sites/alice-site/move" data-method="POST"', page)
        self.assertIn("Runs on the orchestrator <strong>main</strong>", page)
        self.assertIn('<option value="node-b" >node-b (0 sites)</option>', page)
        self.assertIn('<option value="node-c" disabled>node-c (0 sites, draining)</option>', page)
        self.assertNotIn('<option value="main"', page)  # where it runs

    def test_new_site_and_personal_site(self) -> None:
        _, page = self.d.request("GET", "/", self.alice)
        self.assertIn("Create my personal site", page)
        _, page = self.d.request("GET", "/sites/new?personal=1", self.alice)
        self.assertIn('name="name" value="alice"', page)
        self.d.site("alice", ["alice"], purpose="personal")
        _, page = self.d.request("GET", "/", self.alice)
        self.assertNotIn("Create my personal site", page)

    def test_database_page(self) -> None:
        _, page = self.d.request("GET", "/sites/alice-site/database", self.alice)
        self.assertIn("No database server is configured", page)
        self.d.result(
            self.d.h.store.put_database_host(
                "postgres", "127.0.0.1", 5432, "admin", "s3cret", None, None
            )
        )
        _, page = self.d.request("GET", "/sites/alice-site/database", self.alice)
        self.assertIn("PostgreSQL", page)
        self.assertNotIn("s3cret", page)

    def test_admin_pages_are_for_admins(self) -> None:
        """Admin pages are 404 for others and render for admins, without secrets."""
        self.d.result(
            self.d.h.store.put_database_host(
                "mysql", "127.0.0.1", 3306, "root", "s3cret", None, None
            )
        )
        for path in (
            "/admin/users",
            "/admin/operations",
            "/admin/images",
            "/admin/limits",
            "/admin/database-hosts",
            "/admin/audit",
        ):
            self.assertEqual(self.d.request("GET", path, self.alice)[0].code, 404, path)
            response, page = self.d.request("GET", path, self.root)
            self.assertEqual(response.code, 200, path)
            self.assertNotIn("s3cret", page)
        self.assertEqual(self.d.request("GET", "/admin", self.root)[0].code, 303)

    def test_requests_page(self) -> None:
        tina = self.d.session("tina")[0]
        tina_user = self.d.result(self.d.h.store.get_user("tina"))
        alice_user = self.d.result(self.d.h.store.get_user("alice"))
        _, page = self.d.request("GET", "/requests", self.alice)
        self.assertIn('<option value="tina">', page)
        self.d.result(
            self.d.h.store.create_request(alice_user.id, tina_user.id, "chess", "Chess club", XSS)
        )
        _, page = self.d.request("GET", "/requests", tina)
        self.assertIn("Waiting for your approval", page)
        self.assertNotIn(XSS, page)
        self.assertIn('class="badge"', page)
        _, page = self.d.request("GET", "/requests", self.bob)
        self.assertNotIn("chess", page)

    def test_account_page(self) -> None:
        response, page = self.d.request("GET", "/account", self.alice)
        self.assertEqual(response.code, 200)
        self.assertIn("SSH keys", page)


class DocsAndMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        guide = Path(tempfile.mkdtemp())
        (guide / "index.md").write_text("# Welcome\n\nSee [the editor](editor.md#saving).\n")
        (guide / "editor.md").write_text(
            f"# The editor\n\n## Saving\n\nPress Ctrl+S to save.\n\n{XSS}\n"
        )
        (guide / "guidelines.md").write_text("# Guidelines\n\nBe kind.\n")
        self.d = DashboardHarness(guide_dir=guide)
        self.d.user("alice")
        self.d.user("root", role="admin")
        self.alice = self.d.session("alice")[0]
        self.root = self.d.session("root")[0]

    def test_docs_render_without_raw_html(self) -> None:
        response, page = self.d.request("GET", "/docs/editor", self.alice)
        self.assertEqual(response.code, 200)
        self.assertIn('<h2 id="saving">Saving</h2>', page)
        self.assertNotIn(XSS, page)
        _, page = self.d.request("GET", "/docs/", self.alice)
        self.assertIn('href="/docs/editor#saving"', page)

    def test_docs_search(self) -> None:
        _, page = self.d.request("GET", "/docs/search?q=ctrl+save", self.alice)
        self.assertIn('href="/docs/editor"', page)
        _, page = self.d.request("GET", "/docs/search?q=nothingmatches", self.alice)
        self.assertIn("Nothing in the guide matches", page)

    def test_docs_unknown_and_bad_names(self) -> None:
        self.assertEqual(self.d.request("GET", "/docs/nope", self.alice)[0].code, 404)
        self.assertEqual(self.d.request("GET", "/docs/..%2Fsecret", self.alice)[0].code, 404)
        response, _ = self.d.request("GET", "/docs/editor.md", self.alice)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/docs/editor"])

    def test_the_real_guide_renders(self) -> None:
        """Every page of docs/guide renders and has a title."""
        guide = Guide(GUIDE_DIR)
        self.assertIn("guidelines", guide.names())
        for name, title in guide.contents():
            self.assertTrue(title, name)
        self.assertTrue(guide.search("run.sh"))

    def test_metrics_for_admins_only(self) -> None:
        self.d.site("a-site", ["alice"])
        self.assertEqual(self.d.request("GET", "/metrics")[0].code, 404)
        self.assertEqual(self.d.request("GET", "/metrics", self.alice)[0].code, 404)
        self.d.request("GET", "/", self.alice)
        response, text = self.d.request("GET", "/metrics", self.root)
        self.assertEqual(response.code, 200)
        self.assertIn('director_sites{availability="enabled",type="static"} 1', text)
        self.assertIn('director_operations{status="pending"} 1', text)
        self.assertIn('director_http_requests_total{area="dashboard",code="2xx"}', text)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))

    def test_metrics_with_an_admin_token(self) -> None:
        """Prometheus scrapes with an administrator's API token."""
        root = self.d.result(self.d.h.store.get_user("root"))
        token = self.d.result(self.d.h.store.create_token(root.id, "prometheus"))
        response, _ = self.d.request(
            "GET", "/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        self.assertEqual(response.code, 200)
        alice = self.d.result(self.d.h.store.get_user("alice"))
        token = self.d.result(self.d.h.store.create_token(alice.id, "x"))
        response, _ = self.d.request(
            "GET", "/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        self.assertEqual(response.code, 404)

    def test_metrics_counts_are_cached(self) -> None:
        self.d.request("GET", "/metrics", self.root)
        self.d.site("b-site", ["alice"])
        _, text = self.d.request("GET", "/metrics", self.root)
        self.assertNotIn('director_sites{availability="enabled",type="static"} 1', text)
        self.d.h.clock.advance(11)
        _, text = self.d.request("GET", "/metrics", self.root)
        self.assertIn('director_sites{availability="enabled",type="static"} 1', text)
