"""
What one user may do beyond the built-in rules of L{director.manager.models}: a school's
site-name rules (L{SiteNameRules}), the limits on what a user takes (L{UserLimits},
L{membership_refusal}), and who may change a site's purpose (L{purpose_refusal}). No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from director.manager.models import Site, User


@dataclass(frozen=True)
class SiteNameRules:
    """
    A school's own rules for the site names people other than administrators choose
    (manager.reserved_site_names, manager.site_name_pattern): on top of the built-in ones,
    which bind everyone. Personal sites are named after their owner and are exempt.
    """

    reserved: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None
    #: How the pattern reads to a person ("start with your graduation year").
    rule: str = ""

    @classmethod
    def from_config(cls, reserved: str, pattern: str, rule: str) -> SiteNameRules:
        names = frozenset(n for n in re.split(r"[,\s]+", reserved) if n)
        return cls(names, re.compile(pattern) if pattern else None, rule)

    def refusal(self, user: User, name: str, purpose: str) -> str | None:
        """Why C{user} may not give a C{purpose} site the name C{name}, or None."""
        if user.is_admin or purpose == "personal":
            return None
        if name in self.reserved:
            return f"{name!r} is reserved; choose another name"
        if self.pattern is not None and not self.pattern.fullmatch(name):
            return self.rule or f"the name must match {self.pattern.pattern}"
        return None


@dataclass(frozen=True)
class UserLimits:
    """What one user may take (manager.max_* in the config); administrators are not limited."""

    sites_per_student: int = 10
    personal_sites_per_user: int = 1
    dynamic_sites_per_user: int = 3
    domains_per_site: int = 10
    databases_per_site: int = 1
    admin_contact: str = "the administrators"
    creation_wait: float = 30.0
    names: SiteNameRules = field(default_factory=SiteNameRules)
    #: What students agree to when they create or request a site (empty: nothing to tick).
    student_agreement: str = ""

    def agreement_refusal(self, user: User, agreed: object) -> str | None:
        """Why C{user}'s creation or request needs C{agreed} ticked, or None."""
        if not self.student_agreement or not user.is_student or agreed is True:
            return None
        return "tick the box to agree to the student agreement: " + self.student_agreement


def membership_refusal(
    limits: UserLimits,
    user: User,
    others: list[Site],
    purpose: str,
    kind: str,
    availability: str,
) -> str | None:
    """
    Why C{user}, already a member of the sites C{others}, may not also be a member of a site
    with this purpose, type and availability; None if they may.
    """
    if user.is_admin:
        return None
    if user.role == "student" and len(others) + 1 > limits.sites_per_student:
        return (
            f"{user.username} is already a member of {len(others)} sites, "
            f"the most a student may have ({limits.sites_per_student})"
        )
    personal = sum(s.purpose == "personal" for s in others)
    if purpose == "personal" and personal + 1 > limits.personal_sites_per_user:
        return (
            f"{user.username} already has {personal} personal site(s), "
            f"the most allowed ({limits.personal_sites_per_user})"
        )
    dynamic = sum(s.type == "dynamic" and s.availability != "disabled" for s in others)
    if (
        kind == "dynamic"
        and availability != "disabled"
        and dynamic + 1 > limits.dynamic_sites_per_user
    ):
        return (
            f"{user.username} already has {dynamic} dynamic site(s), "
            f"the most allowed ({limits.dynamic_sites_per_user}); make one static first"
        )
    return None


# Purposes whose sites only administrators delete, or move to another purpose.
ADMIN_PURPOSES = ("personal", "activity")


def purpose_refusal(user: User, current: str | None, wanted: str) -> str | None:
    """Why C{user} may not give a site (now of purpose C{current}) the purpose C{wanted}."""
    if user.is_admin or current == wanted:
        return None
    if current in ADMIN_PURPOSES:
        return f"only administrators change the purpose of a {current} site"
    if wanted == "activity" and not user.is_teacher:
        return "students request activity sites (see /requests); a teacher sponsors them"
    return None
