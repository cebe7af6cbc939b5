"""
Custom domains: the one rule for what a site's custom domain may be, and its canonical form.

Everything here ends up in nginx configuration (the router's and the orchestrator's), so a
name is checked strictly and turned into one form: lower-case ASCII (IDNA A-labels).
"""

from __future__ import annotations

import re

import idna

from director.contract.errors import ValidationError

#: One DNS label: 1-63 of a-z, 0-9 and inner hyphens.
LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_DOMAIN_LENGTH = 253
#: Longer input is refused before it is looked at.
MAX_DOMAIN_INPUT = 1000
# Characters that would change the meaning of an nginx configuration, or of a file name.
_FORBIDDEN = re.compile(r"[\s\"'`;{}$\\/#*?,<>|&()\[\]=+@%!~^\x00-\x1f\x7f]")


def _refused(message: str) -> ValidationError:
    return ValidationError("domain", message)


def normalize_domain(raw: object) -> str:
    """
    The canonical (ASCII, lower-case) form of a custom domain, or L{ValidationError}.

    International names are accepted and become IDNA A-labels; a final dot is dropped;
    anything that is not a plain host name of two labels or more is refused, as is a name
    whose last label is all digits (an IP address).
    """
    if not isinstance(raw, str) or not raw:
        raise _refused(f"a domain must be a non-empty string, got {raw!r}")
    shown = raw if len(raw) <= 80 else raw[:80] + "..."
    if len(raw) > MAX_DOMAIN_INPUT:
        raise _refused(f"{shown!r} is too long to be a domain name")
    bad = _FORBIDDEN.search(raw)
    if bad:
        raise _refused(f"{shown!r} contains {bad.group()!r}, which is not allowed in a domain name")
    name = raw[:-1] if raw.endswith(".") else raw
    try:
        ascii_name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as e:
        raise _refused(f"{shown!r} is not a valid domain name: {e}") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise _refused(f"{shown!r} needs at least two labels (like example.org)")
    if len(ascii_name) > MAX_DOMAIN_LENGTH:
        raise _refused(f"{shown!r} is longer than {MAX_DOMAIN_LENGTH} characters")
    for label in labels:
        if not LABEL.fullmatch(label):
            raise _refused(
                f"{shown!r}: label {label!r} must be 1-63 letters, digits or inner hyphens"
            )
    if labels[-1].isdigit():
        raise _refused(f"{shown!r} looks like an IP address, not a domain")
    return ascii_name


def is_within(domain: str, parent: str) -> bool:
    """Whether C{domain} is C{parent} or a name under it (both canonical)."""
    return domain == parent or domain.endswith("." + parent)


def domain_schema() -> dict[str, object]:
    """
    The JSON Schema of a custom domain as a person may type it in ASCII (the API
    lower-cases it): L{normalize_domain}'s rule for ASCII input, for the OpenAPI document.
    """
    label = LABEL.pattern.replace("a-z", "a-zA-Z")
    # IDNA refuses "--" in the third and fourth places of a label, except in A-labels (xn--).
    plain = r"(?!(?![xX][nN])[a-zA-Z0-9]{2}--)"
    return {
        "type": "string",
        "pattern": f"^(?=.{{1,{MAX_DOMAIN_LENGTH}}}\\.?$)({plain}{label}\\.)+"
        f"(?![0-9]+\\.?$){plain}{label}\\.?$",
        "maxLength": MAX_DOMAIN_LENGTH + 1,
    }
