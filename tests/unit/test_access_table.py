"""
Every cell of the access table, through the real Klein apps behind the real guard, with
the real signing client (StubTreq in place of the network).
"""

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from director.common.client import ComponentClient
from director.common.guard import ComponentGuard
from director.common.signing import HEADER_DIGEST
from director.manager.shell_server import ShellServerAPI
from director.manager.web import ManagerWeb, PrefixDispatch
from director.orchestrator.web import OrchestratorAPI
from director.router.web import RouterAPI
from director.testing.keys import Keyring

CALLERS = ("manager", "shell", "orchestrator", "router", "anonymous", "wrong credentials")

# target cell -> (component, path, callers allowed)
TARGETS = {
    "manager /shell-server/": ("manager", "/shell-server/whoami", {"shell"}),
    "manager other": ("manager", "/healthz", set(CALLERS)),
    "orchestrator HTTP": ("orchestrator", "/v1/whoami", {"manager"}),
    "orchestrator WS": ("orchestrator", "/ws/whoami", {"manager"}),
    "orchestrator /ws/shell-server/": (
        "orchestrator",
        "/ws/shell-server/whoami",
        {"manager", "shell"},
    ),
    "router HTTP": ("router", "/v1/whoami", {"manager"}),
}


def manager_resource() -> Any:
    """The manager's web root as the service assembles it (the parts the table touches)."""
    root = PrefixDispatch(ManagerWeb().app.resource())
    root.add(b"/shell-server/", ShellServerAPI(None, None, None, None, "http://o").app.resource())  # type: ignore[arg-type]
    return root


APPS: dict[str, Any] = {
    "manager": manager_resource,
    "orchestrator": lambda: OrchestratorAPI().app.resource(),
    "router": lambda: RouterAPI().app.resource(),
}


def expected_status(caller: str, target: str) -> int:
    _component, _path, allowed = TARGETS[target]
    if caller in allowed:
        return 200
    if caller in ("anonymous", "wrong credentials"):
        return 401
    return 403


class AccessTableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.keys = Keyring()
        self.stubs: dict[str, Any] = {
            name: StubTreq(ComponentGuard(name, app(), self.keys.verifier(name, self.clock)))
            for name, app in APPS.items()
        }

    def call(self, caller: str, component: str, path: str, method: str = "GET", body: bytes = b""):
        http = self.stubs[component]
        url = f"http://{component}.test{path}"
        if caller == "anonymous":
            d = http.request(method, url, data=body or None)
        else:
            signer = (
                self.keys.impostor("manager", self.clock)
                if caller == "wrong credentials"
                else self.keys.signer(caller, self.clock)
            )
            client = ComponentClient(
                self.clock, signer, component, f"http://{component}.test", http
            )
            d = Deferred.fromCoroutine(client.request(method, path, data=body))
        response = self.successResultOf(d)
        content = self.successResultOf(http.content(response))
        return response.code, content

    def test_every_cell(self) -> None:
        """
        For each caller and target, the guard answers exactly as the table says: allowed
        callers get through, unsigned or wrongly signed requests get 401, and signed requests
        from a component that may not call the target get 403.
        """
        for target, (component, path, _allowed) in TARGETS.items():
            for caller in CALLERS:
                code, body = self.call(caller, component, path)
                want = expected_status(caller, target)
                if want == 200 and path.startswith("/ws/"):
                    # Past the guard, a plain GET reaches the websocket resource, which
                    # refuses it for lacking an upgrade; the real upgrade is tested in
                    # tests/integration/test_daemon.py.
                    self.assertEqual(code, 426, (caller, target, body))
                    continue
                self.assertEqual(code, want, (caller, target, body))
                answer = json.loads(body)
                if want != 200:
                    self.assertIn("message", answer)
                elif path == "/healthz":
                    self.assertEqual(answer["status"], "ok")
                else:
                    self.assertEqual(answer["caller"], caller)

    def test_site_archives_are_the_managers(self) -> None:
        """
        A site's whole files, out and in (moving a site between orchestrators): only the
        manager gets past the guard (to the bare app's 503: it runs no sites here).
        """
        for method in ("GET", "PUT"):
            for caller in CALLERS:
                code, body = self.call(caller, "orchestrator", "/v1/sites/3/archive", method)
                want = {"manager": 503, "anonymous": 401, "wrong credentials": 401}
                self.assertEqual(code, want.get(caller, 403), (method, caller, body))

    def test_healthz_says_nothing_sensitive(self) -> None:
        """The only public orchestrator and router path reports status and name, no more."""
        for component in ("orchestrator", "router"):
            code, body = self.call("anonymous", component, "/healthz")
            self.assertEqual(code, 200)
            self.assertEqual(json.loads(body), {"status": "ok", "component": component})

    def test_unknown_path_needs_credentials_first(self) -> None:
        """A missing path is 401 without credentials (nothing is revealed), 404 with them."""
        self.assertEqual(self.call("anonymous", "orchestrator", "/v1/nope")[0], 401)
        self.assertEqual(self.call("manager", "orchestrator", "/v1/nope")[0], 404)

    def test_replayed_and_tampered_requests(self) -> None:
        """Reusing a signed request's headers, or changing its body, is refused with 401."""
        http = self.stubs["orchestrator"]
        signer = self.keys.signer("manager", self.clock)
        headers = signer.headers("orchestrator", "POST", "/v1/whoami", b"body")
        wire = {k: [v] for k, v in headers.items()}
        first = self.successResultOf(
            http.request("POST", "http://o.test/v1/whoami", data=b"body", headers=wire)
        )
        self.assertEqual(first.code, 405)  # authenticated; whoami is GET only
        again = self.successResultOf(
            http.request("POST", "http://o.test/v1/whoami", data=b"body", headers=wire)
        )
        self.assertEqual(again.code, 401)
        self.assertEqual(json.loads(self.successResultOf(http.content(again)))["error"], "replayed")
        headers = signer.headers("orchestrator", "POST", "/v1/whoami", b"body")
        tampered = self.successResultOf(
            http.request(
                "POST",
                "http://o.test/v1/whoami",
                data=b"other",
                headers={k: [v] for k, v in headers.items()},
            )
        )
        self.assertEqual(tampered.code, 401)
        headers = signer.headers("orchestrator", "GET", "/v1/whoami")
        headers[HEADER_DIGEST] = "0" * 64
        forged = self.successResultOf(
            http.request(
                "GET", "http://o.test/v1/whoami", headers={k: [v] for k, v in headers.items()}
            )
        )
        self.assertEqual(forged.code, 401)

    def test_expired_request(self) -> None:
        """A request signed more than the allowed skew ago is refused."""
        http = self.stubs["router"]
        headers = self.keys.signer("manager", self.clock).headers("router", "GET", "/v1/whoami")
        self.clock.advance(3600)
        response = self.successResultOf(
            http.request(
                "GET", "http://r.test/v1/whoami", headers={k: [v] for k, v in headers.items()}
            )
        )
        self.assertEqual(response.code, 401)
        self.assertEqual(
            json.loads(self.successResultOf(http.content(response)))["error"], "expired"
        )

    def test_refusals_are_logged(self) -> None:
        """Every refusal leaves a warning naming the path and the reason."""
        observer = EventLoggingObserver()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.call("anonymous", "router", "/v1/whoami")
        self.call("shell", "router", "/v1/whoami")
        refusals = [e for e in observer if e.get("path") == "/v1/whoami"]
        self.assertEqual(len(refusals), 2)
        self.assertEqual(refusals[0]["code"], "missing_credentials")
        self.assertEqual(refusals[1]["caller"], "shell")

    def test_dot_segments_refused(self) -> None:
        """A path that climbs out of /ws/shell-server/ is a 400, even for the shell."""
        code, _ = self.call("shell", "orchestrator", "/ws/shell-server/../v1/whoami")
        self.assertEqual(code, 400)

    def test_large_bodies_are_checked_a_chunk_at_a_time(self) -> None:
        """
        A large signed body (an upload) is hashed over several reactor turns, not in one
        go, and still refused if it was tampered with.
        """
        body = b"u" * (3 * 1024 * 1024)
        signer = self.keys.signer("manager", self.clock)
        http = self.stubs["orchestrator"]
        headers = signer.headers("orchestrator", "PUT", "/v1/whoami", body)
        d = http.request(
            "PUT",
            "http://orchestrator.test/v1/whoami",
            data=body,
            headers={k: [v] for k, v in headers.items()},
        )
        self.assertNoResult(d)  # hashing has started, not finished
        for _ in range(200):
            self.clock.advance(0)
            http.flush()
        response = self.successResultOf(d)
        self.assertNotIn(response.code, (401, 403))  # past the guard (whoami takes GET)
        tampered = signer.headers("orchestrator", "PUT", "/v1/whoami", body)
        d = http.request(
            "PUT",
            "http://orchestrator.test/v1/whoami",
            data=body[:-1] + b"X",
            headers={k: [v] for k, v in tampered.items()},
        )
        for _ in range(200):
            self.clock.advance(0)
            http.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 401)
        self.assertEqual(
            json.loads(self.successResultOf(http.content(response)))["error"], "tampered"
        )
