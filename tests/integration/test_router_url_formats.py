"""
URL formats for real: the manager's routes (L{route_spec} from a site and the formats of
[director] url_formats) sent by the manager's router client to a real router, whose own
nginx serves a path-format site under /<name>/ of a shared host (the prefix stripped,
X-Forwarded-Prefix set, /<name> redirected, HTTPS from pebble over real HTTP-01) and a
host-format site at its own host; the URL in the site's API representation is the one
that answers. A small HTTP server on loopback stands in for the orchestrators' nginx.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from services import PebbleServer, Services, free_port
from test_router import (
    SITES,
    Reply,
    RouterUnderTest,
    eventually,
    http,
    served_over_https,
    start_router,
)
from twisted.internet.defer import Deferred

from director.clients import RouterClient
from director.contract.urls import UrlFormats
from director.manager.models import DEFAULT_LIMITS, Site
from director.manager.operation_actions import route_spec

PATH_HOST = "user.example.test"
FORMATS = UrlFormats.parse(
    SITES, {"personal": f"{PATH_HOST}/{{name}}/", "activity": "{name}.clubs.example.test"}
)


class Orchestrators(ThreadingHTTPServer):
    """Says which site (Host) and path each request reached; /folder redirects like nginx."""

    daemon_threads = True

    def __init__(self) -> None:
        self.headers_of: dict[str, dict[str, str]] = {}
        super().__init__(("127.0.0.1", free_port()), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Orchestrators
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.headers_of[self.path] = {k.lower(): v for k, v in self.headers.items()}
        host = self.headers.get("Host", "")
        if self.path == "/folder":  # what nginx answers for a folder without its slash
            self.send_response(301)
            self.send_header("Location", f"http://{host}:8081/folder/")
            body = b""
        else:
            self.send_response(200)
            body = f"{host} {self.path}".encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def front(services: Services) -> Iterator[tuple[RouterUnderTest, Orchestrators]]:
    base = services.base_dir / "router-urls"
    base.mkdir()
    backend = Orchestrators()
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    http_port = free_port()
    pebble = services.start(
        PebbleServer(services.base_dir, name="pebble-urls", http_port=http_port)
    )
    # start_router sends every site to the backend's address (router.upstreams).
    started = start_router(base, pebble, backend, http_port=http_port)
    under_test, stop = pytest_twisted.blockon(Deferred.fromCoroutine(started))
    yield under_test, backend
    pytest_twisted.blockon(Deferred.fromCoroutine(stop()))
    backend.shutdown()
    backend.server_close()
    services.stop(pebble)


def site(name: str, purpose: str, site_id: int = 1) -> Site:
    return Site(
        id=site_id, name=name, type="static", purpose=purpose, availability="enabled",
        description="", image="director/debian:bookworm", image_tag=None, packages=(),
        limits=dict(DEFAULT_LIMITS),
    )  # fmt: skip


async def publish(router: RouterUnderTest, s: Site) -> dict[str, Any]:
    """What the manager's apply_router action sends, through the manager's router client."""
    return await RouterClient(router.api).put_route(s.name, route_spec(s, None, FORMATS))


def get(router: RouterUnderTest, url: str, **kwargs: Any) -> Reply:
    """GET C{url} as a browser reaches it (L{fetch}): the answer."""
    return fetch(router, url, **kwargs)[0]


def fetch(router: RouterUnderTest, url: str, **kwargs: Any) -> tuple[Reply, str]:
    """
    GET C{url} (its host) from the front nginx as a browser reaches it: over HTTP, or over
    HTTPS once HTTP redirects there (pebble may issue a host's certificate at any moment
    after the host is first served; from then on HTTP only redirects). The answer, and the
    C{scheme://host:port} that gave it. While nginx's reload is finishing, a worker of the
    old configuration and one of the new may answer the two requests: then both again.
    """
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname
    assert host is not None
    secure = f"https://{host}:{router.https_port}"
    deadline = time.monotonic() + 10
    while True:
        reply = http(router.http_port, host, path, **kwargs)
        if reply.status != 301 or reply.headers.get("Location") != secure + path:
            return reply, f"http://{host}:{router.http_port}"
        try:
            return _https_once(router, host, path), secure
        except ssl.SSLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _https_once(router: RouterUnderTest, host: str, path: str) -> Reply:
    """GET C{path} of C{host} over the front's HTTPS, trusting only pebble's root."""
    context = ssl.create_default_context(cadata=router.root_pem)
    connection = HTTPConnection("127.0.0.1", router.https_port, timeout=10)
    raw = socket.create_connection(("127.0.0.1", router.https_port), timeout=10)
    connection.sock = context.wrap_socket(raw, server_hostname=host)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return Reply(response.status, response.read().decode(), dict(response.getheaders()))
    finally:
        connection.close()


@pytest_twisted.ensureDeferred
async def test_path_format_site_under_its_prefix(
    front: tuple[RouterUnderTest, Orchestrators],
) -> None:
    router, backend = front
    alice, bob = site("alice", "personal"), site("bob", "personal", 2)
    url = alice.to_json(FORMATS)["url"]
    assert url == f"http://{PATH_HOST}/alice/"
    answer = await publish(router, alice)
    assert (answer["site"]["url_host"], answer["site"]["url_path"]) == (PATH_HOST, True)
    await publish(router, bob)
    try:
        # The URL of the API representation answers, from the site, the prefix stripped.
        reply = await eventually(lambda: (r := get(router, url + "page?x=1")).status == 200 and r)
        assert reply.body == f"alice.{SITES} /page?x=1"
        seen = backend.headers_of["/page?x=1"]
        assert seen["host"] == f"alice.{SITES}"
        assert seen["x-forwarded-prefix"] == "/alice"
        assert seen["x-forwarded-host"] == PATH_HOST
        await eventually(lambda: get(router, f"http://{PATH_HOST}/bob/").body == f"bob.{SITES} /")
        # The prefix without its slash is redirected to it (the query kept).
        missing = get(router, f"http://{PATH_HOST}/alice?q=2")
        assert (missing.status, missing.headers["Location"]) == (301, "/alice/?q=2")
        # A folder redirect the site makes to its own host stays under the prefix.
        folder, base = fetch(router, f"http://{PATH_HOST}/alice/folder")
        assert folder.status == 301
        assert folder.headers["Location"] == f"{base}/alice/folder/"
        # Nothing else of the shared host is a site; a longer name is not a prefix match.
        assert get(router, f"http://{PATH_HOST}/").status == 404
        assert get(router, f"http://{PATH_HOST}/alicex/").status == 404
        assert get(router, f"http://{PATH_HOST}/carol/").status == 404
        # The canonical host keeps serving the site at its root, with no prefix whatever
        # the client claims.
        canonical = http(
            router.http_port, f"alice.{SITES}", "/c", headers={"X-Forwarded-Prefix": "/x"}
        )
        assert canonical.body == f"alice.{SITES} /c"
        assert "x-forwarded-prefix" not in backend.headers_of["/c"]
        shared = router.site_files()["path-user.example.test.conf"]
        assert "location /alice/ {" in shared and "location /bob/ {" in shared, shared

        # HTTPS for the shared host, its certificate from pebble like a custom domain's.
        state = await router.wait_for(PATH_HOST, lambda s: s["state"] == "valid")
        assert state["last_error"] is None
        page, _ = await served_over_https(router, PATH_HOST, "/alice/secure")
        assert f"alice.{SITES} /secure" in page
        assert backend.headers_of["/secure"]["x-forwarded-proto"] == "https"
        plain = await eventually(
            lambda: (r := http(router.http_port, PATH_HOST, "/bob/x")).status == 301 and r
        )
        assert plain.headers["Location"] == f"https://{PATH_HOST}:{router.https_port}/bob/x"
    finally:
        await RouterClient(router.api).remove_site("alice")
    # The other site stays; with the last one the host's file and certificate go.
    assert "location /alice/" not in router.site_files()["path-user.example.test.conf"]
    page, _ = await served_over_https(router, PATH_HOST, "/bob/still")
    assert f"bob.{SITES} /still" in page
    await RouterClient(router.api).remove_site("bob")
    assert "path-user.example.test.conf" not in router.site_files()
    assert (await router.get(f"/v1/certificates/{PATH_HOST}"))[0] == 404
    await eventually(lambda: get(router, f"http://{PATH_HOST}/bob/").status == 404)


@pytest_twisted.ensureDeferred
async def test_host_format_site_and_a_change_of_purpose(
    front: tuple[RouterUnderTest, Orchestrators],
) -> None:
    router, _ = front
    chess = site("chess", "activity", 3)
    url = chess.to_json(FORMATS)["url"]
    assert url == "http://chess.clubs.example.test/"
    client = RouterClient(router.api)
    await publish(router, chess)
    try:
        reply = await eventually(lambda: (r := get(router, url + "board")).status == 200 and r)
        assert reply.body == f"chess.{SITES} /board"
        # Another site cannot take its host as a custom domain.
        code, error = await router.put("thief", {"domains": ["chess.clubs.example.test"]})
        assert (code, error["error"]) == (409, "domain_taken"), error
        # An administrator makes it a personal site: it moves under the path host.
        moved = site("chess", "personal", 3)
        assert moved.to_json(FORMATS)["url"] == f"http://{PATH_HOST}/chess/"
        await publish(router, moved)
        await eventually(lambda: get(router, f"http://{PATH_HOST}/chess/").status == 200)
        await eventually(lambda: get(router, url).status == 404)
    finally:
        await client.remove_site("chess")
        await client.remove_site("thief")


@pytest_twisted.ensureDeferred
async def test_bad_url_fields_refused_and_nothing_changes(
    front: tuple[RouterUnderTest, Orchestrators],
) -> None:
    router, _ = front
    before = router.site_files()
    for body, code in [
        ({"url_host": "evil.test;include /etc/passwd", "url_path": True}, "invalid_domain"),
        ({"url_host": "a.test\n}", "url_path": False}, "invalid_domain"),
        ({"url_path": True}, "invalid_request"),
        ({"url_host": PATH_HOST, "url_path": "yes"}, "invalid_request"),
        ({"url_host": f"paths.{SITES}", "url_path": True}, "reserved_domain"),
    ]:
        status, error = await router.put("mallory", body)
        assert (status, error["error"]) == (400, code), (body, error)
    assert router.site_files() == before
    assert (await router.get("/v1/sites/mallory"))[0] == 404
