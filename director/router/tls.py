"""
What the front nginx needs to know about certificates and the machine to render HTTPS
well: whether a certificate names an OCSP responder (stapling is rendered only then, so
nginx never warns that it ignores it) and which name servers nginx may ask to reach that
responder. Pure functions on bytes and text, plus two blocking readers for start-up.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

#: Where the system's name servers are listed (nginx does not read it itself).
RESOLV_CONF = Path("/etc/resolv.conf")


def ocsp_responder(chain_pem: bytes) -> str | None:
    """
    The OCSP responder URL (an http URL of the leaf's Authority Information Access), or
    C{None}: the first certificate of C{chain_pem} is the leaf; anything unreadable is C{None}.
    """
    try:
        leaf = x509.load_pem_x509_certificate(chain_pem)
        access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension):
        return None
    for description in access:
        location = description.access_location
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            location, x509.UniformResourceIdentifier
        ):
            if _host(location.value, "http"):  # nginx fetches OCSP over plain HTTP only
                return location.value
    return None


def _host(url: str, scheme: str) -> str | None:
    """The host of C{url} if it is a well-formed C{scheme} URL with one."""
    try:
        parts = urlsplit(url)
        return parts.hostname if parts.scheme == scheme else None
    except ValueError:
        return None


def stapling_possible(responder: str | None, resolvers: tuple[str, ...]) -> bool:
    """
    nginx can staple for a certificate whose responder it can reach: one is named, and its
    host is an address or nginx has a name server to resolve it with (without one nginx
    logs an error at every attempt instead).
    """
    host = _host(responder, "http") if responder is not None else None
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(resolvers)


def nameservers(resolv_conf: str) -> tuple[str, ...]:
    """
    The C{nameserver} addresses of a resolv.conf, as nginx's C{resolver} takes them
    (IPv6 in brackets). Addresses with a zone (C{fe80::1%eth0}) are left out: nginx
    cannot use them.
    """
    found: list[str] = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(fields[1])
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            continue
        text = f"[{address}]" if address.version == 6 else str(address)
        if text not in found:
            found.append(text)
    return tuple(found)


def system_nameservers(path: Path = RESOLV_CONF) -> tuple[str, ...]:
    """Blocking (start-up): the system's name servers; none if the file cannot be read."""
    try:
        return nameservers(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return ()


def certificate_file_responder(path: str) -> str | None:
    """
    Blocking (start-up): the OCSP responder of the certificate file at C{path}, or C{None}
    if it names none or cannot be read (then C{nginx -t} reports what is wrong with it).
    """
    try:
        return ocsp_responder(Path(path).read_bytes())
    except OSError:
        return None
