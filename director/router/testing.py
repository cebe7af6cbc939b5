"""
Verified fakes for the router's tests: an in-memory ACME CA, an nginx config directory
that keeps files in a dict, and a runner that runs blocking work only when told to.

L{FakeACMEClient} passes the same tests as the real client against pebble
(tests/unit/test_router_acme.py and tests/integration/test_router_acme.py).
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from director.common.nginx import SAFE_FILENAME, NginxError
from director.router.front_nginx_config import FrontSettings
from director.router.issuer import ACMEError, IACMEClient, IChallengeResponder

T = TypeVar("T")
ERROR = "urn:ietf:params:acme:error:"

#: A front nginx's settings for the router's unit tests (sites.test, one upstream).
FRONT_SETTINGS = FrontSettings(
    sites_domain="sites.test",
    http_listen=("127.0.0.1:8080",),
    https_listen=("127.0.0.1:8443",),
    https_port=8443,
    upstreams=("127.0.0.1:8180",),
    max_body_size="2m",
)


def webroot_fetcher(webroot: Path) -> Callable[[str, str], str | None]:
    """What a CA would fetch at http://<domain>/.well-known/acme-challenge/<token>."""

    def fetch(domain: str, token: str) -> str | None:
        try:
            return (webroot / token).read_text()
        except OSError:
            return None

    return fetch


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@implementer(IACMEClient)
class FakeACMEClient:
    """
    A CA in memory. It "validates" a challenge by calling C{fetch(domain, token)} (by
    default reading the webroot the router writes) and issues real X.509 certificates from
    its own root, valid for C{lifetime} seconds from C{now()}.

    C{unreachable}: domains whose challenge cannot be fetched (an ACME connection error);
    C{ocsp_url}: the OCSP responder its certificates name (none by default, like pebble's);
    C{during_issue}: called with the domain while an order is in progress;
    C{orders}: every domain ordered, in order.
    """

    def __init__(
        self,
        fetch: Callable[[str, str], str | None],
        now: Callable[[], float],
        lifetime: float = 90 * 86400.0,
    ) -> None:
        self._fetch = fetch
        self._now = now
        self.lifetime = lifetime
        self.unreachable: set[str] = set()
        self.ocsp_url: str | None = None
        self.during_issue: Callable[[str], None] | None = None
        self.orders: list[str] = []
        self.thumbprint = secrets.token_urlsafe(32)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        start = datetime.datetime.fromtimestamp(now(), datetime.UTC)
        self.root = (
            x509.CertificateBuilder()
            .subject_name(_name("Fake ACME root"))
            .issuer_name(_name("Fake ACME root"))
            .public_key(self.root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(days=1))
            .not_valid_after(start + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.root_key, hashes.SHA256())
        )

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def issue(self, domain: str, key_pem: bytes, responder: IChallengeResponder) -> bytes:
        self.orders.append(domain)
        token = secrets.token_urlsafe(32)
        expected = f"{token}.{self.thumbprint}"
        responder.publish(token, expected)
        try:
            if self.during_issue is not None:
                self.during_issue(domain)
            if domain in self.unreachable:
                raise ACMEError(
                    domain, ERROR + "connection", f"{domain}: Connection refused (fake CA)"
                )
            got = self._fetch(domain, token)
            if got != expected:
                raise ACMEError(
                    domain,
                    ERROR + "unauthorized",
                    f"the key authorization at /.well-known/acme-challenge/{token} was "
                    f"{got!r}, not the expected one (fake CA)",
                )
        finally:
            responder.withdraw(token)
        key = serialization.load_pem_private_key(key_pem, password=None)
        start = datetime.datetime.fromtimestamp(self._now(), datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(domain))
            .issuer_name(self.root.subject)
            .public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(seconds=self.lifetime))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if self.ocsp_url is not None:
            builder = builder.add_extension(ocsp_access(self.ocsp_url), critical=False)
        leaf = builder.sign(self.root_key, hashes.SHA256())
        return leaf.public_bytes(serialization.Encoding.PEM) + self.root_pem


def ocsp_access(url: str) -> x509.AuthorityInformationAccess:
    """The Authority Information Access extension naming C{url} as OCSP responder."""
    return x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url)
            )
        ]
    )


class FakeConfigDirectory:
    """
    Stands in for L{director.common.nginx.NginxConfigDirectory}: files live in C{files};
    C{reject(name, text)} returning a message makes that change fail like `nginx -t` would
    (and leaves C{files} as it was).
    """

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.applied: list[dict[str, str | None]] = []
        self.reject: Callable[[str, str], str | None] | None = None

    def apply(self, changes: Mapping[str, str | None]) -> Deferred[None]:
        for name, text in changes.items():
            if not SAFE_FILENAME.fullmatch(name):
                raise ValueError(f"bad nginx config file name {name!r}")
            if text is not None and self.reject is not None:
                message = self.reject(name, text)
                if message:
                    return fail(NginxError(f"nginx rejected the configuration: {message}", message))
        for name, text in changes.items():
            if text is None:
                self.files.pop(name, None)
            else:
                self.files[name] = text
        self.applied.append(dict(changes))
        return succeed(None)


class ManualRunner:
    """A L{director.common.threads.Runner} whose work runs only when C{run_next} is called."""

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self.queue.append((lambda: f(*args, **kwargs), d))
        return d

    def run_next(self) -> None:
        work, d = self.queue.pop(0)
        try:
            result = work()
        except BaseException:
            d.errback()
        else:
            d.callback(result)
