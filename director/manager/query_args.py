"""
A route's query parameters, read against the same schemas the OpenAPI document publishes.

One table (L{director.manager.openapi.QUERY_PARAMETERS}) says what each route takes; this reads
a request's arguments against it, so the document and the behaviour cannot drift apart: a value
the document refuses is refused here with a 400 that names the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from director.manager.models import ValidationError

_DIGITS = re.compile(r"[0-9]{1,12}")


def _describe(schema: Mapping[str, Any]) -> str:
    if "description" in schema:
        return str(schema["description"])
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    if schema.get("type") == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if high is None:
            return f"a whole number from {low}"
        return f"a whole number from {low} to {high}"
    if "maxLength" in schema:
        return f"text of at most {schema['maxLength']} characters"
    return "text of the documented form"


def _matches(pattern: str, text: str) -> bool:
    """JSON Schema's pattern; an anchored one must match all of C{text} (Python's $ lets a
    trailing newline through)."""
    if pattern.startswith("^") and pattern.endswith("$"):
        return re.fullmatch(pattern[1:-1], text) is not None
    return re.search(pattern, text) is not None


def read_value(name: str, raw: bytes, schema: Mapping[str, Any]) -> str | int:
    """One value against one schema (the subset the document uses: enum, integer, text)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(name, "not valid UTF-8", code="bad_query") from None
    refusal = ValidationError(name, _describe(schema), code="bad_query")
    if "enum" in schema:
        if text not in schema["enum"]:
            raise refusal
        return text
    if schema.get("type") == "integer":
        if not _DIGITS.fullmatch(text):
            raise refusal
        number = int(text)
        if number < schema.get("minimum", 0) or number > schema.get("maximum", 10**12):
            raise refusal
        return number
    if len(text) > schema.get("maxLength", 10_000):
        raise refusal
    if "pattern" in schema and not _matches(schema["pattern"], text):
        raise refusal
    return text


def read_query(
    args: Mapping[bytes, Sequence[bytes]],
    parameters: Sequence[tuple[str, Mapping[str, Any]]],
    required: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    """
    The route's parameters by name: each given one checked and typed, each missing one None
    (or a 400 when required). Parameters the route does not take are ignored, as HTTP expects.
    """
    values: dict[str, Any] = {}
    for name, schema in parameters:
        given = args.get(name.encode())
        if not given:
            if name in required:
                raise ValidationError(name, "required: " + _describe(schema), code="bad_query")
            values[name] = None
            continue
        values[name] = read_value(name, given[0], schema)
    return values
