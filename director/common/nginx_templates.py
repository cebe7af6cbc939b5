"""
The one Jinja environment for the nginx templates in nginx/ (the orchestrator's and the
router's), and the check that makes it safe.

Values are validated before they reach a template; rendering checks again. A template
expression may only print an integer, a quoted string (the C{q} filter, which refuses
quotes, C{$}, C{;}, braces and whitespace), text the code built from constants
(L{NginxText}), an absolute path of plain characters, or a bare token made of characters
that cannot end a directive or open a block. Anything else raises instead of rendering.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from director.common.nginx import nginx_string

TEMPLATES = Path(__file__).resolve().parents[2] / "nginx"
_TOKEN = re.compile(r"[A-Za-z0-9._:*\[\]-]*")
_PATH = re.compile(r"/[A-Za-z0-9._/\[\]-]*")


class NginxText(str):
    """
    Printed as it is: the output of the C{q} filter, or text the code built from its own
    constants (a regular expression, an inline page), never from a request or a setting.
    """


def _quote(value: object) -> NginxText:
    return NginxText(nginx_string(str(value)))


def _finalize(value: object) -> object:
    if isinstance(value, NginxText) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and _TOKEN.fullmatch(value):
        return value
    if isinstance(value, PurePath) and _PATH.fullmatch(str(value)):
        return value
    raise ValueError(f"refusing to put {value!r} into an nginx configuration")


def _environment() -> Environment:
    # Not HTML, so no autoescape: values are validated, and checked again by _finalize.
    env = Environment(  # noqa: S701
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.filters["q"] = _quote
    return env


#: Shared by the orchestrator and the router (templates are read once, then cached).
NGINX_TEMPLATES = _environment()
