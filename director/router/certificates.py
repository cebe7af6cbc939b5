"""
Keeping every custom domain's certificate obtained, installed and renewed.

One timer per domain, on the injected clock: a check loads the shared certificate, orders a
new one when there is none or it is due for renewal, installs it into this router's nginx,
and sets the next timer (renewal time, or a backoff after a failure). A failing domain is
reported with the ACME error and retried on its own; the others are not held up.

Orders run in the ACME thread pool and, for their whole duration, hold the domain's lease
in the shared store: a router that finds the lease taken waits for the other router's
certificate instead of ordering its own (docs/router.md, "Several routers").
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from director.common.nginx import NginxError
from director.common.threads import Runner
from director.router.cert_store import (
    Bundle,
    CertificateStore,
    Installed,
    InstalledCertificates,
    StoreError,
    new_private_key_pem,
)
from director.router.issuer import ACMEError, IACMEClient, IChallengeResponder, WebrootChallenges
from director.router.layout import RouterLayout
from director.router.renewal import RenewalPolicy


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


@dataclass
class DomainStatus:
    """What the manager is told about one domain's certificate."""

    domain: str
    site: str
    # pending (no certificate yet), waiting (another router is ordering it), valid, failed
    state: str = "pending"
    attempts: int = 0
    last_error: tuple[str, str] | None = None
    next_check: float | None = None
    bundle: Bundle | None = None
    renew_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        bundle = self.bundle
        return {
            "domain": self.domain,
            "site": self.site,
            "state": self.state,
            "serial": bundle.serial if bundle else None,
            "not_before": _iso(bundle.not_before) if bundle else None,
            "not_after": _iso(bundle.not_after) if bundle else None,
            "renew_at": _iso(self.renew_at),
            "attempts": self.attempts,
            "last_error": (
                {"type": self.last_error[0], "detail": self.last_error[1]}
                if self.last_error
                else None
            ),
            "next_check_at": _iso(self.next_check),
        }


@dataclass(frozen=True)
class Outcome:
    """What an order attempt found: C{busy} (another holder), an existing or a new bundle."""

    bundle: Bundle | None
    issued: bool = False
    busy: bool = False


def obtain(
    store: CertificateStore,
    client: IACMEClient,
    responder: IChallengeResponder,
    policy: RenewalPolicy,
    domain: str,
    now: float,
) -> Outcome:
    """
    Blocking (ACME pool): under the domain's lease, take the stored certificate if it is
    still good (another router may have just renewed it), else order a new one and store it.
    """
    lease = store.try_lock(domain)
    if lease is None:
        return Outcome(None, busy=True)
    with lease:
        try:
            current = store.load(domain)
        except StoreError:
            current = None
        if current is not None and now < policy.renew_at(
            current.not_before, current.not_after, current.obtained_at
        ):
            return Outcome(current)
        key_pem = new_private_key_pem()
        chain = client.issue(domain, key_pem, responder)
        try:
            bundle = Bundle.parse(domain, key_pem, chain, now)
        except StoreError as e:
            raise ACMEError(domain, "bad_certificate", str(e)) from None
        store.save(bundle)
        return Outcome(bundle, issued=True)


class CertificateKeeper(Service):
    """
    Owns the certificate state of every custom domain of this router. The router tells it
    which domains exist (L{set_domains}) and gives it a callback that re-renders the site of
    a domain whose installed certificate changed (L{attach}).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        files: Runner,
        acme: Runner,
        layout: RouterLayout,
        client: IACMEClient,
        policy: RenewalPolicy,
    ) -> None:
        self._clock = clock
        self._files = files
        self._acme = acme
        self._client = client
        self._policy = policy
        self.store = CertificateStore(layout)
        self.installed_files = InstalledCertificates(layout)
        self.responder = WebrootChallenges(layout.challenge_dir)
        self._status: dict[str, DomainStatus] = {}
        #: failed orders by kind of error (not nginx refusing a certificate), for the metrics
        self.acme_failures: Counter[str] = Counter()
        self._versions: dict[str, str] = {}
        #: installed version -> the OCSP responder its certificate names (those that do)
        self._responders: dict[str, str] = {}
        self._timers: dict[str, IDelayedCall] = {}
        self._busy: set[str] = set()
        self._refresh: Callable[[str], Awaitable[None]] | None = None

    def attach(self, refresh: Callable[[str], Awaitable[None]]) -> None:
        """C{refresh(domain)} re-applies the nginx config of the site owning C{domain}."""
        self._refresh = refresh

    def seed(self, found: Mapping[str, Installed]) -> None:
        """Certificates found installed at start-up (already in the first nginx config)."""
        for domain, installed in found.items():
            self._versions[domain] = installed.version
            if installed.ocsp_url is not None:
                self._responders[installed.version] = installed.ocsp_url

    @property
    def installed(self) -> Mapping[str, str]:
        """Domain -> version of its installed certificate (what nginx should use)."""
        return self._versions

    def ocsp_responder(self, domain: str) -> str | None:
        """The OCSP responder named by C{domain}'s installed certificate, if any."""
        version = self._versions.get(domain)
        return self._responders.get(version) if version is not None else None

    def status(self, domain: str) -> DomainStatus | None:
        return self._status.get(domain)

    def statuses(self) -> dict[str, DomainStatus]:
        return dict(self._status)

    def set_domains(self, owners: Mapping[str, str]) -> set[str]:
        """
        The domains to keep certificates for (domain -> site). New ones are checked at
        once; returns the domains dropped, whose files the caller removes with L{forget}
        once no nginx configuration names them.
        """
        removed = set(self._status) - set(owners)
        for domain in removed:
            self._cancel(domain)
            del self._status[domain]
        for domain, site in owners.items():
            status = self._status.get(domain)
            if status is None:
                self._status[domain] = DomainStatus(domain, site)
                if self.running:
                    self._schedule(domain, 0)
            else:
                status.site = site
        return removed

    async def forget(self, domains: set[str]) -> None:
        """Delete the certificates of removed domains, here and in the shared store."""
        for domain in sorted(domains):
            if domain in self._status:
                continue  # added back in the meantime
            version = self._versions.pop(domain, None)
            self._responders.pop(version or "", None)
            await self._files.run(self.installed_files.remove, domain)
            await self._files.run(self.store.delete, domain)
            self.log.info("deleted the certificate of removed domain {domain}", domain=domain)

    def check_soon(self, domain: str) -> None:
        """Look at C{domain} now (for example after a peer router may have renewed it)."""
        if domain in self._status and self.running:
            self._schedule(domain, 0)

    def startService(self) -> None:
        super().startService()
        for domain in sorted(self._status):
            self._schedule(domain, 0)

    def stopService(self) -> None:
        super().stopService()
        for domain in list(self._timers):
            self._cancel(domain)

    def _cancel(self, domain: str) -> None:
        timer = self._timers.pop(domain, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _schedule(self, domain: str, delay: float) -> None:
        self._cancel(domain)
        if not self.running:
            self._status[domain].next_check = None  # startService checks every domain
            return
        delay = max(0.0, delay)
        self._status[domain].next_check = self._clock.seconds() + delay
        self._timers[domain] = self._clock.callLater(delay, self._fire, domain)

    def _fire(self, domain: str) -> None:
        self._timers.pop(domain, None)
        d = Deferred.fromCoroutine(self._check(domain))
        d.addErrback(
            lambda f: self.log.failure("certificate check of {domain} failed", f, domain=domain)
        )

    async def _check(self, domain: str) -> None:
        status = self._status.get(domain)
        if status is None or domain in self._busy:
            return
        self._busy.add(domain)
        status.next_check = None
        try:
            await self._check_once(domain, status)
        except ACMEError as e:
            self._failed(status, e.type, e.detail)
        except NginxError as e:
            self._failed(status, "nginx", f"nginx refused the certificate: {e.output or e}")
        except (DeferredTimeoutError, TimeoutError, CancelledError):
            self._failed(status, "timeout", "the order did not finish in time")
        except Exception as e:
            self.log.failure("certificate check of {domain} failed", domain=domain)
            self._failed(status, "internal", f"{type(e).__name__}: {e}")
        finally:
            self._busy.discard(domain)

    async def _check_once(self, domain: str, status: DomainStatus) -> None:
        now = self._clock.seconds()
        try:
            bundle = await self._files.run(self.store.load, domain)
        except StoreError as e:
            self.log.warn("ignoring the stored certificate: {error}", error=str(e))
            bundle = None
        if bundle is None or now >= self._renew_at(bundle):
            outcome = await self._acme.run(
                obtain, self.store, self._client, self.responder, self._policy, domain, now
            )
            if self._status.get(domain) is not status:
                # Removed while ordering: do not leave its certificate behind.
                if outcome.issued:
                    await self._files.run(self.store.delete, domain)
                return
            if outcome.busy:
                if domain not in self._versions:
                    status.state = "waiting"
                self._schedule(domain, self._policy.wait_for_peer)
                return
            assert outcome.bundle is not None
            bundle = outcome.bundle
            if outcome.issued:
                self.log.info(
                    "obtained a certificate for {domain} (serial {serial}, until {until})",
                    domain=domain,
                    serial=bundle.serial,
                    until=_iso(bundle.not_after),
                )
        if self._versions.get(domain) != bundle.version:
            await self._install(domain, bundle)
        if self._status.get(domain) is not status:
            return
        status.state = "valid"
        status.bundle = bundle
        status.attempts = 0
        status.last_error = None
        status.renew_at = self._renew_at(bundle)
        self._schedule(domain, status.renew_at - self._clock.seconds())

    def _renew_at(self, bundle: Bundle) -> float:
        return self._policy.renew_at(bundle.not_before, bundle.not_after, bundle.obtained_at)

    async def _install(self, domain: str, bundle: Bundle) -> None:
        """Copy the certificate into nginx's directory and reload; undo it if nginx refuses."""
        old = self._versions.get(domain)
        version = await self._files.run(self.installed_files.install, bundle)
        if domain not in self._status:
            await self._files.run(self.installed_files.remove, domain)
            return
        self._versions[domain] = version
        if bundle.ocsp_url is not None:
            self._responders[version] = bundle.ocsp_url
        try:
            if self._refresh is not None:
                await self._refresh(domain)
        except Exception:
            if old is None:
                self._versions.pop(domain, None)
            else:
                self._versions[domain] = old
            if version != old:
                self._responders.pop(version, None)
            await self._files.run(self.installed_files.remove, domain, old)
            raise
        if old is not None and old != version:
            self._responders.pop(old, None)
        await self._files.run(self.installed_files.remove, domain, version)

    def _failed(self, status: DomainStatus, kind: str, detail: str) -> None:
        if self._status.get(status.domain) is not status:
            return
        status.attempts += 1
        if kind != "nginx":
            self.acme_failures[kind] += 1
        status.last_error = (kind, detail)
        status.state = "valid" if status.domain in self._versions else "failed"
        delay = self._policy.retry_delay(status.attempts)
        self.log.warn(
            "no certificate for {domain} (attempt {attempts}): {kind}: {detail}; "
            "retrying in {delay:.0f} s",
            domain=status.domain,
            attempts=status.attempts,
            kind=kind,
            detail=detail,
            delay=delay,
        )
        self._schedule(status.domain, delay)
