"""
The image catalogue's rules (no I/O): what an administrator may write in an entry, who sees
which entry, and the run.sh a dynamic site starts with.

Logos are a curated icon name, not an upload or a URL: an uploaded file is content the
manager would serve on its own origin (a polyglot or a mislabelled file is an XSS or
content-sniffing risk, and needs storage and size checks everywhere a manager runs), and a
URL makes every visitor's browser fetch from a third party (tracking, mixed content, a link
that can change under the admins). A name from L{LOGOS} maps to an SVG shipped with the
dashboard, so nothing an administrator types reaches a browser as markup or as an address.
"""

from __future__ import annotations

from typing import Any

from director.contract.errors import ValidationError as ContractError
from director.contract.images import validate_setup_commands as contract_setup_commands
from director.manager.models import IMAGE_REFERENCE, User, ValidationError, validate_description
from director.manager.store.rows import Image

#: Who may see and choose an image: everyone, teachers (and admins), or admins only.
VISIBILITY = ("everyone", "teachers", "hidden")
#: The curated logos (static/logos/<name>.svg); "" means a letter badge.
LOGOS = ("", "debian", "python", "nodejs", "php", "terminal", "globe")
MAX_RUN_TEMPLATE = 10_000
FIELDS = (
    "name",
    "friendly_name",
    "description",
    "logo",
    "visibility",
    "setup_commands",
    "run_template",
    "is_default",
)

#: The run.sh a dynamic site gets when its image has none of its own, by image name prefix.
DEFAULT_RUN_TEMPLATES = {
    "director/python": (
        "#!/bin/sh\n"
        "# Serves public/ with Python's built-in server; replace with your app's command.\n"
        'exec python3 -m http.server "$PORT" --bind "$HOST" --directory public\n'
    ),
    "director/node": (
        "#!/bin/sh\n"
        "# A tiny Node.js server; replace it with your app (for example: exec node server.js).\n"
        "exec node -e '\n"
        'require("http").createServer((req, res) => {\n'
        '  res.setHeader("content-type", "text/plain");\n'
        '  res.end("Hello from Node.js\\n");\n'
        "}).listen(process.env.PORT, process.env.HOST);\n"
        "'\n"
    ),
    "director/php": (
        "#!/bin/sh\n"
        "# Serves public/ with PHP's built-in server; replace with your app's command.\n"
        'exec php -S "$HOST:$PORT" -t public\n'
    ),
    "": (
        "#!/bin/sh\n"
        "# Start your server here. It must listen on $PORT and bind to $HOST.\n"
        'echo "run.sh: nothing to run yet (edit run.sh)"\n'
        "exec sleep infinity\n"
    ),
}


def setup_commands(stored: str | None) -> list[str]:
    """The stored setup commands (one a line) as a list."""
    return [line for line in (stored or "").split("\n") if line.strip()]


def setup_commands_of(images: list[Image], name: str) -> list[str]:
    """The setup commands of the catalogue's image C{name} (none if it is not there)."""
    return next((setup_commands(i.setup_command) for i in images if i.name == name), [])


def validate_setup_commands(value: object) -> list[str]:
    """A list of one-line shell commands (each a RUN step), or L{ValidationError}."""
    if isinstance(value, str):  # the older single-text form: one command a line
        value = setup_commands(value)
    try:
        return list(contract_setup_commands(value))
    except ContractError as e:
        raise ValidationError("setup_commands", e.reason) from None


def validate_entry(body: dict[str, Any], current: Image | None) -> dict[str, Any]:
    """
    The catalogue columns for C{body} (a PUT: a new entry, or changes to C{current}); fields
    left out keep their current value (or the default of a new entry).
    """
    name = body.get("name")
    if not isinstance(name, str) or not IMAGE_REFERENCE.fullmatch(name):
        raise ValidationError("name", "a local image reference like director/python:3")
    old = current.to_json() if current else {}
    friendly = body.get("friendly_name", old.get("friendly_name", name))
    if not isinstance(friendly, str) or not 1 <= len(friendly) <= 100 or "\x00" in friendly:
        raise ValidationError("friendly_name", "text of 1 to 100 characters")
    description = validate_description(body.get("description", old.get("description", "")))
    logo = body.get("logo", old.get("logo") or "")
    if logo is None:
        logo = ""
    if logo not in LOGOS:
        raise ValidationError("logo", f"one of the icons {', '.join(repr(x) for x in LOGOS)}")
    visibility = body.get("visibility", old.get("visibility", "everyone"))
    if visibility not in VISIBILITY:
        raise ValidationError("visibility", f"one of {', '.join(VISIBILITY)}")
    if "setup_commands" in body:
        commands = validate_setup_commands(body["setup_commands"])
        if isinstance(body["setup_commands"], str):
            raise ValidationError("setup_commands", "a list of one-line commands")
    else:
        commands = setup_commands(old.get("setup_command"))
    template = body.get("run_template", old.get("run_template"))
    if template is not None and (
        not isinstance(template, str) or len(template) > MAX_RUN_TEMPLATE or "\x00" in template
    ):
        raise ValidationError("run_template", f"text of at most {MAX_RUN_TEMPLATE} characters")
    is_default = body.get("is_default", old.get("is_default", False))
    if not isinstance(is_default, bool):
        raise ValidationError("is_default", "true or false")
    return {
        "name": name,
        "friendly_name": friendly,
        "description": description,
        "logo": logo or None,
        "visibility": visibility,
        "setup_command": "\n".join(commands) or None,
        "run_template": template or None,
        "is_default": is_default,
    }


def default_refusal(entry: dict[str, Any]) -> str | None:
    """Why C{entry} (a L{validate_entry} result) cannot be saved as it is, if it cannot."""
    if entry["is_default"] and entry["visibility"] != "everyone":
        return "the default image must be visible to everyone"
    return None


def visible_to(user: User, image: Image) -> bool:
    """Whether C{user} may see and choose C{image} (a catalogue row)."""
    visibility = image.visibility or "everyone"
    if user.is_admin or visibility == "everyone":
        return True
    return visibility == "teachers" and user.is_teacher


def run_template(image: Image | None, name: str = "") -> str:
    """The run.sh a dynamic site on C{image} starts with (its own, else by name prefix)."""
    if image and image.run_template:
        return image.run_template
    name = image.name if image else name
    prefix = next((p for p in DEFAULT_RUN_TEMPLATES if p and name.startswith(p)), "")
    return DEFAULT_RUN_TEMPLATES[prefix]


def entry_json(image: Image) -> dict[str, Any]:
    """A catalogue row as the API shows it."""
    return {
        "name": image.name,
        "friendly_name": image.friendly_name,
        "description": image.description,
        "logo": image.logo,
        "visibility": image.visibility or "everyone",
        "setup_commands": setup_commands(image.setup_command),
        "run_template": run_template(image),
        "is_default": bool(image.is_default),
    }
