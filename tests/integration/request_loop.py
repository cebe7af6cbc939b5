"""
Visitors for zero-downtime tests: a loop of GET requests through a front nginx (alternating
new connections and one keep-alive connection) counting every failed request, and a slow
download that stays in flight while the test does something disruptive.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class RequestLoop:
    """GET C{path} for C{host} on C{address}:C{port} until stopped; C{status} + C{body}: success."""

    port: int
    host: str
    body: bytes
    path: str = "/"
    status: int = 200
    interval: float = 0.005
    address: str = "127.0.0.1"
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    #: when each failure happened (time.monotonic()), beside C{failures}
    failed_at: list[float] = field(default_factory=list)
    # A keep-alive connection the server closed while idle (a graceful nginx reload closes
    # idle connections) is opened again and the request sent again, as browsers and
    # HTTP libraries do; counted here, never as a success without an answer.
    reconnects: int = 0
    #: seconds from the first failure of a run of failures to the next success, the longest
    downtime: float = 0.0
    _failing_since: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RequestLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _check(self, status: int, data: bytes) -> None:
        if status == self.status and data == self.body:
            self.ok += 1
            if self._failing_since is not None:
                self.downtime = max(self.downtime, time.monotonic() - self._failing_since)
                self._failing_since = None
        else:
            self._fail(f"{status}: {data[:200]!r}")

    def _fail(self, what: str) -> None:
        self.failures.append(what)
        now = time.monotonic()
        self.failed_at.append(now)
        if self._failing_since is None:
            self._failing_since = now

    def _run(self) -> None:
        keep: http.client.HTTPConnection | None = None
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                if n % 2:
                    conn = http.client.HTTPConnection(self.address, self.port, timeout=10)
                    conn.request(
                        "GET", self.path, headers={"Host": self.host, "Connection": "close"}
                    )
                    response = conn.getresponse()
                    self._check(response.status, response.read())
                    conn.close()
                else:
                    keep, status, data = self._keep_alive(keep)
                    self._check(status, data)
            except Exception as e:
                self._fail(f"{type(e).__name__}: {e}")
                keep = None
            time.sleep(self.interval)
        if keep is not None:
            keep.close()
        if self._failing_since is not None:
            self.downtime = max(self.downtime, time.monotonic() - self._failing_since)

    def _keep_alive(
        self, keep: http.client.HTTPConnection | None
    ) -> tuple[http.client.HTTPConnection, int, bytes]:
        if keep is not None:
            try:
                keep.request("GET", self.path, headers={"Host": self.host})
                response = keep.getresponse()
                return keep, response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                keep.close()
                self.reconnects += 1
        keep = http.client.HTTPConnection(self.address, self.port, timeout=10)
        keep.request("GET", self.path, headers={"Host": self.host})
        response = keep.getresponse()
        return keep, response.status, response.read()


class SlowDownload:
    """GET C{path}, reading C{chunk} bytes every C{pause} seconds: a request long in flight."""

    def __init__(
        self, port: int, host: str, path: str, chunk: int = 65536, pause: float = 0.01
    ) -> None:
        self.port, self.host, self.path = port, host, path
        self.chunk, self.pause = chunk, pause
        self.started = threading.Event()
        self.status = 0
        self.received = 0
        self.digest = ""
        self.error = ""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SlowDownload:
        self._thread.start()
        return self

    def join(self, timeout: float = 120) -> None:
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as conn:
                conn.sendall(
                    f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                data = b""
                while b"\r\n\r\n" not in data:
                    more = conn.recv(4096)
                    if not more:
                        raise ConnectionError("closed before the headers")
                    data += more
                head, _, body = data.partition(b"\r\n\r\n")
                self.status = int(head.split()[1])
                digest = hashlib.sha256(body)
                self.received = len(body)
                self.started.set()
                while True:
                    more = conn.recv(self.chunk)
                    if not more:
                        break
                    digest.update(more)
                    self.received += len(more)
                    time.sleep(self.pause)
                self.digest = digest.hexdigest()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.started.set()
