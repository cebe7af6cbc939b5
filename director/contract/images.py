"""
An image build as the manager asks an orchestrator for it: the catalogue's setup commands
for the parent image. Written once here; the manager checks what administrators type with
it, and the orchestrator checks what the manager sends with it again.
"""

from __future__ import annotations

import re

from director.contract.errors import ValidationError

MAX_SETUP_COMMANDS = 20
MAX_SETUP_COMMAND = 1000
#: One line of printable text (no C0 or C1 control characters or Unicode line separators)
#: that does not end in a space or a backslash (which would join the next Dockerfile line to
#: it): exactly one RUN step of the build, run by /bin/sh in the image. The same pattern is
#: the OpenAPI document's (ECMA and Python read it alike).
SETUP_COMMAND_PATTERN = (
    "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]{0,999}[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\\\ ]$"
)
SETUP_COMMAND = re.compile(SETUP_COMMAND_PATTERN)
SETUP_COMMAND_RULE = (
    f"each setup command is one line of at most {MAX_SETUP_COMMAND} characters, without "
    "control characters, not ending in a space or a backslash; "
    f"at most {MAX_SETUP_COMMANDS} commands"
)


def validate_setup_commands(value: object) -> tuple[str, ...]:
    """The commands of C{value} (a list of strings), or L{ValidationError}."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or len(value) > MAX_SETUP_COMMANDS:
        raise ValidationError("setup_commands", SETUP_COMMAND_RULE)
    commands = []
    for command in value:
        if not isinstance(command, str) or not SETUP_COMMAND.fullmatch(command):
            raise ValidationError(
                "setup_commands", f"{SETUP_COMMAND_RULE}; got {str(command)[:60]!r}"
            )
        commands.append(command)
    return tuple(commands)
