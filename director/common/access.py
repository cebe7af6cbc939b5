"""
Who may call what: the access table from the design, as plain data and one function.

    manager -> every orchestrator URL (HTTP and websocket), every router URL
    shell   -> manager URLs under /shell-server/; orchestrator URLs under /ws/shell-server/
    nobody else reaches the manager's /shell-server/ or the orchestrator and router APIs.

C{/healthz} on every component is public and says nothing sensitive.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

PUBLIC_PATHS = frozenset({"/healthz"})
SHELL_SERVER_PREFIX = "/shell-server/"
WS_SHELL_SERVER_PREFIX = "/ws/shell-server/"


@dataclass(frozen=True)
class Rule:
    """Paths under C{prefix} on component C{target} may be called by C{callers}."""

    target: str
    prefix: str
    callers: frozenset[str]


# The most specific (longest) matching prefix wins.
RULES = (
    Rule("manager", SHELL_SERVER_PREFIX, frozenset({"shell"})),
    Rule("orchestrator", "/", frozenset({"manager"})),
    Rule("orchestrator", WS_SHELL_SERVER_PREFIX, frozenset({"manager", "shell"})),
    Rule("router", "/", frozenset({"manager"})),
)


class BadPath(ValueError):
    """A path that could mean something other than it says (dot segments, encoded slashes)."""


def normalized_path(raw_path: str) -> str:
    """
    The path the rules are checked against. Paths whose meaning would change under
    normalisation are refused rather than interpreted.
    """
    path = raw_path.split("?", 1)[0]
    decoded = unquote(path)
    if not path.startswith("/") or "\\" in decoded or "\0" in decoded:
        raise BadPath("path must be absolute and plain")
    if "%2f" in path.lower() or "%5c" in path.lower():
        raise BadPath("encoded slashes are not allowed")
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise BadPath("dot segments are not allowed")
    return decoded


def rule_for(target: str, path: str) -> Rule | None:
    """The rule protecting C{path} on C{target}, or C{None} when the path is public there."""
    if path in PUBLIC_PATHS:
        return None
    matches = [r for r in RULES if r.target == target and (path + "/").startswith(r.prefix)]
    return max(matches, key=lambda r: len(r.prefix), default=None)


def is_allowed(caller: str, target: str, path: str) -> bool:
    """May the authenticated component C{caller} call C{path} on C{target}?"""
    rule = rule_for(target, path)
    return rule is None or caller in rule.callers
