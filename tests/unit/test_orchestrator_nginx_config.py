"""Rendering the orchestrator nginx's per-site files (plain values in, text out)."""

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from director.orchestrator.nginx_config import (
    NOT_RUNNING_PAGE,
    PAGES,
    main_config,
    needs_own_file,
    site_config,
)
from director.orchestrator.sites import HostedSite, Limits

SITE_DIR = Path("/srv/var/sites/7")
PAGES_DIR = Path("/srv/var/orchestrator/nginx/pages")


def render(site: HostedSite, upstream: list[str] | None = None) -> str:
    return site_config(site, "127.0.0.1:8180", "sites.test", SITE_DIR, upstream or [], PAGES_DIR)


class SiteConfigTests(SynchronousTestCase):
    def test_custom_domains_never_redirect_here(self) -> None:
        """
        Every address of a site is served alike by the orchestrator, whatever the manager
        sends as primary_url: redirecting to a custom domain is the router's decision.
        """
        site = HostedSite(
            7,
            "seven",
            "static",
            custom_domains=("www.example.test",),
            primary_url="https://www.example.test",
        )
        text = render(site)
        self.assertNotIn("return 302", text)
        self.assertNotIn("x_forwarded_host", text)
        self.assertIn("root /srv/var/sites/7/public;", text)
        self.assertFalse(needs_own_file(site))  # the static fast path serves it

    def test_not_served_static_site_is_not_served(self) -> None:
        for kind in ("static", "dynamic"):
            text = render(HostedSite(7, "seven", kind, availability="not-served"), ["10.0.0.5"])
            self.assertIn("return 503", text)
            self.assertIn("not being served", text)
            self.assertNotIn("root ", text)
            self.assertNotIn("proxy_pass", text)

    def test_disabled_site_shows_the_disabled_page(self) -> None:
        for kind in ("static", "dynamic"):
            text = render(HostedSite(7, "seven", kind, availability="disabled"), ["10.0.0.5"])
            self.assertIn("return 403", text)
            self.assertIn("This site has been disabled", text)
            self.assertNotIn("root ", text)
            self.assertNotIn("proxy_pass", text)

    def test_static_folder_without_index_gets_a_page(self) -> None:
        text = render(HostedSite(7, "seven", "static", limits=Limits(client_max_body_size="5m")))
        self.assertIn("index index.html index.htm /__director/no-index;", text)
        self.assertIn("error_page 404 /__director/no-index.html;", text)
        self.assertIn(f"root {PAGES_DIR};", text)
        self.assertIn("internal;", text)

    def test_unreachable_task_answers_not_running(self) -> None:
        """A task nginx cannot connect to (gone before nginx heard) is "not running" (503)."""
        text = render(HostedSite(7, "seven", "dynamic"), ["10.0.0.5"])
        self.assertIn("server 10.0.0.5:8080 max_fails=0;", text)
        self.assertIn("error_page 502 =503 @director_not_running;", text)
        self.assertIn(NOT_RUNNING_PAGE, text)
        no_task = render(HostedSite(7, "seven", "dynamic"))
        self.assertIn("return 503", no_task)
        self.assertIn(NOT_RUNNING_PAGE, no_task)
        self.assertNotIn("proxy_pass", no_task)

    def test_pages_are_plain(self) -> None:
        """The inline page cannot end nginx's quoted string or start a variable."""
        for char in "'\\$":
            self.assertNotIn(char, NOT_RUNNING_PAGE)
        self.assertEqual(set(PAGES), {"not-found.html", "no-index.html"})


class MainConfigTests(SynchronousTestCase):
    def test_static_fast_path_folder_without_index(self) -> None:
        text = main_config(
            Path("/srv/var/orchestrator/nginx"),
            "127.0.0.1:8180",
            "sites.test",
            Path("/srv/var/orchestrator/hosts"),
            Path("/srv/var/orchestrator/nginx/sites"),
        )
        self.assertIn("index index.html index.htm /__director/no-index;", text)
        self.assertIn("error_page 404 /__director/no-index.html;", text)
        self.assertIn("root /srv/var/orchestrator/nginx/pages;", text)
