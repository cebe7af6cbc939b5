"""
Certificates on disk (blocking file I/O: call these in a thread pool).

The shared store keeps one file per domain, C{certs/<domain>.json}, holding the private key,
the full chain and when it was obtained; it is replaced with one atomic rename, so a router
reading it never sees a key from one certificate next to the chain of another. Private keys
are written mode 0600. C{locks/<domain>.lock} is the per-domain order lease: C{flock}ed for
the whole of an order, released by the kernel if the router holding it dies.

Each router installs copies into its own nginx directory under names that include the
certificate's fingerprint, so its nginx never reads the shared store directly and a new
certificate never overwrites a file a running configuration still names.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from director.common.atomic import atomic_write
from director.router.layout import RouterLayout, file_stem
from director.router.tls import ocsp_responder

_INSTALLED = re.compile(r"([0-9a-f]{16})\.(crt|key)")


class StoreError(Exception):
    """A stored certificate cannot be used (unreadable, corrupt, or not for its domain)."""


@dataclass(frozen=True)
class Bundle:
    """A private key and the certificate chain issued for it, for one domain."""

    domain: str
    key_pem: bytes
    fullchain_pem: bytes
    obtained_at: float
    not_before: float
    not_after: float
    serial: str
    #: the leaf's OCSP responder, if it names one (its HTTPS server then staples)
    ocsp_url: str | None = None

    @property
    def version(self) -> str:
        """Short fingerprint of the chain: names this certificate's installed files."""
        return hashlib.sha256(self.fullchain_pem).hexdigest()[:16]

    @classmethod
    def parse(cls, domain: str, key_pem: bytes, fullchain_pem: bytes, obtained_at: float) -> Bundle:
        """Check that the chain is for C{domain} and matches the key; raise L{StoreError}."""
        try:
            leaf = x509.load_pem_x509_certificate(fullchain_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as e:
            raise StoreError(f"{domain}: unreadable certificate or key: {e}") from None
        if leaf.public_key() != key.public_key():
            raise StoreError(f"{domain}: the certificate does not match its private key")
        try:
            names = leaf.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        if domain not in names:
            raise StoreError(f"{domain}: the certificate is for {names}, not {domain}")
        return cls(
            domain=domain,
            key_pem=key_pem,
            fullchain_pem=fullchain_pem,
            obtained_at=obtained_at,
            not_before=leaf.not_valid_before_utc.timestamp(),
            not_after=leaf.not_valid_after_utc.timestamp(),
            serial=format(leaf.serial_number, "x"),
            ocsp_url=ocsp_responder(fullchain_pem),
        )


def new_private_key_pem() -> bytes:
    """A fresh P-256 key for a certificate (one per order, never reused)."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Lease:
    """An exclusive C{flock} on one domain's lock file; C{release} (or C{with}) ends it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class CertificateStore:
    """The shared certificates of every router (see the module docstring)."""

    def __init__(self, layout: RouterLayout) -> None:
        self._layout = layout

    def prepare(self) -> None:
        """Create the shared directories; the webroot must be readable by nginx's workers."""
        layout = self._layout
        for path, mode in (
            (layout.shared, 0o755),
            (layout.account_key.parent, 0o700),
            (layout.bundles_dir, 0o700),
            (layout.locks_dir, 0o700),
            (layout.webroot, 0o755),
            (layout.webroot / ".well-known", 0o755),
            (layout.challenge_dir, 0o755),
        ):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)

    def load(self, domain: str) -> Bundle | None:
        """The stored certificate of C{domain}, or C{None}; L{StoreError} if it is corrupt."""
        path = self._layout.bundle(domain)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            return Bundle.parse(
                domain,
                data["key_pem"].encode("ascii"),
                data["fullchain_pem"].encode("ascii"),
                float(data["obtained_at"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise StoreError(f"{path}: corrupt certificate file: {e}") from None

    def save(self, bundle: Bundle) -> None:
        data: dict[str, Any] = {
            "domain": bundle.domain,
            "obtained_at": bundle.obtained_at,
            "not_after": bundle.not_after,
            "key_pem": bundle.key_pem.decode("ascii"),
            "fullchain_pem": bundle.fullchain_pem.decode("ascii"),
        }
        atomic_write(self._layout.bundle(bundle.domain), json.dumps(data), 0o600, durable=True)

    def delete(self, domain: str) -> None:
        # The lock file stays: another router may hold a lease on it right now, and a new
        # file would let a third router take a second lease on the same domain.
        self._layout.bundle(domain).unlink(missing_ok=True)

    def try_lock(self, domain: str) -> Lease | None:
        """The order lease for C{domain}, or C{None} while another holder has it."""
        handle = open(self._layout.lock(domain), "ab")  # kept open by the Lease
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        except BaseException:
            handle.close()
            raise
        return Lease(handle)


@dataclass(frozen=True)
class Installed:
    """A certificate found installed at start-up: its version and its OCSP responder."""

    version: str
    ocsp_url: str | None = None


class InstalledCertificates:
    """This router's copies of certificates, in its nginx directory."""

    def __init__(self, layout: RouterLayout) -> None:
        self._layout = layout

    def prepare(self) -> None:
        self._layout.installed_dir.mkdir(parents=True, exist_ok=True)
        self._layout.installed_dir.chmod(0o700)

    def install(self, bundle: Bundle) -> str:
        """Write C{bundle}'s files (if not there yet); return the version to configure."""
        version = bundle.version
        cert = self._layout.installed_cert(bundle.domain, version)
        key = self._layout.installed_key(bundle.domain, version)
        if not (cert.exists() and key.exists()):
            atomic_write(key, bundle.key_pem, 0o600, durable=True)
            atomic_write(cert, bundle.fullchain_pem, 0o644, durable=True)
        return version

    def remove(self, domain: str, keep: str | None = None) -> None:
        """Delete C{domain}'s installed files, except version C{keep}."""
        for path, version in self._files(domain):
            if version != keep:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def scan(self, domains: set[str]) -> dict[str, Installed]:
        """Installed, loadable versions of C{domains} (the newest if several): at start-up."""
        found: dict[str, Installed] = {}
        for domain in domains:
            best: tuple[float, Installed] | None = None
            for cert, version in self._files(domain):
                if cert.suffix != ".crt":
                    continue
                key = self._layout.installed_key(domain, version)
                try:
                    bundle = Bundle.parse(domain, key.read_bytes(), cert.read_bytes(), 0.0)
                    mtime = cert.stat().st_mtime
                except (OSError, StoreError):
                    continue
                if best is None or mtime > best[0]:
                    best = (mtime, Installed(version, bundle.ocsp_url))
            if best is not None:
                found[domain] = best[1]
        return found

    def _files(self, domain: str) -> list[tuple[Path, str]]:
        """C{domain}'s installed files and their versions (never another domain's)."""
        stem = file_stem(domain)
        files = []
        for path in self._layout.installed_dir.glob(f"{stem}.*"):
            match = _INSTALLED.fullmatch(path.name[len(stem) + 1 :])
            if match:
                files.append((path, match.group(1)))
        return files
