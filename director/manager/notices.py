"""
What administrators tell many people at once: banners on every dashboard page and e-mail
to a role or to a site's members. Checks and choices only; the API does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from director.manager.models import ROLES, SITE_NAME, User, ValidationError

BANNER_LEVELS = ("info", "warning")
MAX_BANNER = 500
MAX_SUBJECT = 200
MAX_BODY = 20_000
MAIL_ROLES = (*ROLES, "everyone")


def validate_banner(body: dict[str, Any]) -> tuple[str, str, int | None]:
    """(message, level, hours until it expires or None) from a banner request."""
    message = body.get("message")
    if not isinstance(message, str) or not 1 <= len(message) <= MAX_BANNER:
        raise ValidationError("message", f"the notice, 1 to {MAX_BANNER} characters")
    level = body.get("level", "info")
    if level not in BANNER_LEVELS:
        raise ValidationError("level", "info or warning")
    raw = body.get("expires_in_hours")
    whole = isinstance(raw, int | float) and not isinstance(raw, bool) and float(raw).is_integer()
    hours = int(raw) if whole and raw is not None else None
    if raw is not None and (hours is None or not 1 <= hours <= 8760):
        raise ValidationError("expires_in_hours", "a whole number of hours from 1 to 8760")
    return message, str(level), hours


def validate_mail(body: dict[str, Any]) -> tuple[tuple[str, str], str, str]:
    """((\"role\" or \"site\", which), subject, body) from a mail request."""
    role, site = body.get("role"), body.get("site")
    if (role is None) == (site is None):
        raise ValidationError("role", "send either role or site")
    if role is not None and role not in MAIL_ROLES:
        raise ValidationError("role", "one of " + ", ".join(MAIL_ROLES))
    if site is not None and not (isinstance(site, str) and SITE_NAME.fullmatch(site)):
        raise ValidationError("site", "a site's name")
    subject, text = body.get("subject"), body.get("body")
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT:
        raise ValidationError("subject", f"1 to {MAX_SUBJECT} characters")
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_BODY:
        raise ValidationError("body", f"the message, 1 to {MAX_BODY} characters")
    audience = ("role", str(role)) if role is not None else ("site", str(site))
    # A subject is one line of a mail header: line breaks and runs of spaces become one.
    return audience, " ".join(subject.split()) or "(no subject)", text


def recipients(people: Iterable[User | None], audience: tuple[str, str]) -> list[str]:
    """
    The addresses to mail, once each: active people with an address (never service
    accounts), of the role asked for (a site's members are all of them).
    """
    kind, which = audience
    found: dict[str, None] = {}
    for person in people:
        if person is None or not person.is_active or person.is_service or not person.email:
            continue
        if kind == "role" and which != "everyone" and person.role != which:
            continue
        found.setdefault(person.email.lower(), None)
    return list(found)
