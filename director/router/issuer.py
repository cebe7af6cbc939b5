"""
Getting a certificate from an ACME v2 server with HTTP-01 (certbot's C{acme} library).

L{IACMEClient} is what the router needs, in its own terms: "issue a certificate for this
domain and key, publishing the challenge answers here". Its methods block (C{acme} uses
C{requests} and sleeps while polling), so they run only in the router's ACME thread pool.
L{ACMEClient} is the real one; L{director.router.testing.FakeACMEClient} is an in-memory
CA that passes the same tests (tests/unit/test_router_acme.py against the fake,
tests/integration/test_router_acme.py against pebble).
"""

from __future__ import annotations

import datetime
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import josepy as jose
import requests
from acme import challenges, crypto_util, errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from zope.interface import Interface, implementer

from director.common.atomic import atomic_write

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_KEY_AUTHORIZATION = re.compile(r"[A-Za-z0-9_.-]{1,512}")


class ACMEError(Exception):
    """An order failed. C{type} is the ACME problem type (or a short word of ours)."""

    def __init__(self, domain: str, type: str, detail: str) -> None:
        super().__init__(f"{domain}: {type}: {detail}")
        self.domain = domain
        self.type = type
        self.detail = detail


class IChallengeResponder(Interface):
    """Makes HTTP-01 answers reachable at http://<domain>/.well-known/acme-challenge/<token>."""

    def publish(token: str, key_authorization: str) -> None:
        """Serve C{key_authorization} for C{token} (before the CA is told to look)."""

    def withdraw(token: str) -> None:
        """Stop serving C{token}."""


class IACMEClient(Interface):
    """A CA that issues certificates after an HTTP-01 challenge. Blocking."""

    def issue(domain: str, key_pem: bytes, responder: IChallengeResponder) -> bytes:
        """
        Order a certificate for C{domain} and the private key C{key_pem}; return the full
        chain (PEM). Raises L{ACMEError} when the CA refuses or cannot be reached.
        """


@implementer(IChallengeResponder)
class WebrootChallenges:
    """Answers written as files into the webroot every router's nginx serves."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def publish(self, token: str, key_authorization: str) -> None:
        # A token names a file: a hostile ACME server must not write outside the webroot.
        if not _TOKEN.fullmatch(token) or not _KEY_AUTHORIZATION.fullmatch(key_authorization):
            raise ACMEError("?", "malformed", f"refusing challenge token {token[:80]!r}")
        atomic_write(self._dir / token, key_authorization, 0o644)

    def withdraw(self, token: str) -> None:
        if _TOKEN.fullmatch(token):
            (self._dir / token).unlink(missing_ok=True)


def load_or_create_account_key(path: Path) -> jose.JWKEC:
    """
    The ACME account key (P-256, mode 0600). Routers sharing the directory may start
    together: the key is created under a temporary name and linked into place, so exactly
    one key wins and everybody uses it.
    """
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f"{path.name}.new-{os.getpid()}-{threading.get_ident()}")
        atomic_write(tmp, pem, 0o600, durable=True)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ACMEError("?", "account", f"{path}: the ACME account key must be an EC key")
    return jose.JWKEC(key=loaded)


@implementer(IACMEClient)
class ACMEClient:
    """
    The real CA client. Each order gets its own C{ClientNetwork} (an HTTP session and its
    nonces), so two pool threads never share one; the account is registered once.
    """

    def __init__(
        self,
        directory_url: str,
        email: str,
        account_key_path: Path,
        ca_bundle: str = "",
        timeout: float = 30.0,
        deadline: float = 120.0,
    ) -> None:
        self._url = directory_url
        self._email = email
        self._key_path = account_key_path
        self._verify: Any = ca_bundle or True
        self._timeout = timeout
        self._deadline = deadline
        self._lock = threading.Lock()
        self._key: jose.JWKEC | None = None
        self._account: messages.RegistrationResource | None = None

    def _connect(self) -> ClientV2:
        with self._lock:
            if self._key is None:
                self._key = load_or_create_account_key(self._key_path)
            net = ClientNetwork(
                self._key,
                account=self._account,
                alg=jose.ES256,
                verify_ssl=self._verify,
                user_agent="director-router",
                timeout=max(1, int(self._timeout)),
            )
            acme = ClientV2(ClientV2.get_directory(self._url, net), net)
            if self._account is None:
                registration = messages.NewRegistration.from_data(
                    email=self._email or None, terms_of_service_agreed=True
                )
                try:
                    self._account = acme.new_account(registration)
                except errors.ConflictError as existing:
                    # The key already has an account (another router, or an earlier run).
                    self._account = acme.query_registration(
                        messages.RegistrationResource(
                            uri=existing.location, body=messages.Registration()
                        )
                    )
            return acme

    def issue(self, domain: str, key_pem: bytes, responder: IChallengeResponder) -> bytes:
        try:
            return self._issue(domain, key_pem, responder)
        except ACMEError as e:
            raise ACMEError(domain, e.type, e.detail) from None
        except messages.Error as e:
            raise ACMEError(domain, e.typ, e.detail or str(e)) from None
        except errors.ValidationError as e:
            raise _validation_error(domain, e.failed_authzrs) from None
        except errors.IssuanceError as e:
            raise ACMEError(domain, e.error.typ, e.error.detail or str(e.error)) from None
        except errors.TimeoutError:
            raise ACMEError(
                domain, "timeout", f"the order was not done within {self._deadline:.0f} s"
            ) from None
        except requests.RequestException as e:
            raise ACMEError(domain, "network", f"cannot reach the ACME server: {e}") from None
        except errors.Error as e:
            raise ACMEError(domain, "acme", str(e) or type(e).__name__) from None

    def _issue(self, domain: str, key_pem: bytes, responder: IChallengeResponder) -> bytes:
        acme = self._connect()
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=self._deadline)
        order = acme.new_order(crypto_util.make_csr(key_pem, [domain]))
        published: list[str] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA reused an earlier authorisation
                challenge = next(
                    (c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)),
                    None,
                )
                if challenge is None:
                    raise ACMEError(domain, "unsupported", "the CA offered no http-01 challenge")
                response, validation = challenge.response_and_validation(acme.net.key)
                token = challenge.chall.encode("token")
                responder.publish(token, validation)
                published.append(token)
                acme.answer_challenge(challenge, response)
            authorizations = _poll_authorizations(acme, order, deadline)
        finally:
            for token in published:
                responder.withdraw(token)
        return _finalize(acme, order.update(authorizations=authorizations), deadline)


def _poll_authorizations(
    acme: ClientV2, order: messages.OrderResource, deadline: datetime.datetime
) -> list[messages.AuthorizationResource]:
    """
    Wait for every authorisation to leave "pending". Unlike C{ClientV2.poll_authorizations}
    (one-second sleeps) this starts polling after 50 ms and backs off to one second, which
    takes about a second off each order.
    """
    done = []
    for authz in order.authorizations:
        delay = 0.05
        while authz.body.status == messages.STATUS_PENDING:
            if datetime.datetime.now() >= deadline:
                raise errors.TimeoutError()
            time.sleep(delay)
            delay = min(1.0, delay * 2)
            authz, _ = acme.poll(authz)
        done.append(authz)
    failed = [a for a in done if a.body.status != messages.STATUS_VALID]
    if failed:
        raise errors.ValidationError(failed)
    return done


def _post_as_get(acme: ClientV2, url: str) -> requests.Response:
    """RFC 8555 POST-as-GET through the client's (public) network object."""
    return acme.net.post(url, None, new_nonce_url=acme.directory["newNonce"])


def _finalize(acme: ClientV2, order: messages.OrderResource, deadline: datetime.datetime) -> bytes:
    """
    Send the CSR and wait for the certificate. C{ClientV2.finalize_order} sleeps a full
    second before its first look at the order; this looks after 50 ms and backs off (to
    the server's Retry-After, when it sends one), which takes another second off an order.
    """
    order = acme.begin_finalization(order)
    delay = 0.05
    while True:
        body = order.body
        if body.status == messages.STATUS_INVALID:
            if body.error is not None:
                raise errors.IssuanceError(body.error)
            raise errors.Error("the CA declared the order invalid")
        if body.status == messages.STATUS_VALID and body.certificate is not None:
            return _post_as_get(acme, body.certificate).text.encode("ascii")
        if datetime.datetime.now() >= deadline:
            raise errors.TimeoutError()
        time.sleep(delay)
        delay = min(1.0, delay * 2)
        response = _post_as_get(acme, order.uri)
        order = order.update(body=messages.Order.from_json(response.json()))
        if order.body.status == messages.STATUS_PROCESSING and "Retry-After" in response.headers:
            wait = (ClientV2.retry_after(response, 1) - datetime.datetime.now()).total_seconds()
            delay = max(delay, min(wait, 10.0))


def _validation_error(domain: str, failed: list[messages.AuthorizationResource]) -> ACMEError:
    for authz in failed:
        for challenge in authz.body.challenges:
            if challenge.error is not None:
                error = challenge.error
                return ACMEError(domain, error.typ, error.detail or str(error))
    status = failed[0].body.status if failed else "invalid"
    return ACMEError(domain, "unauthorized", f"the authorisation is {status}")
