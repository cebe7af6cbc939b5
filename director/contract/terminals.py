"""
Which shell a terminal runs (L{TERMINAL_SHELLS}): the login shell, or the site's database
client (psql or mysql) connected to its database, as the original Director's `?sql=1`.

A closed set, checked by the manager before it opens anything and again by the
orchestrator. The client's password goes in its environment (PGPASSWORD, MYSQL_PWD), never
on its command line, where `ps` shows it to anyone in the container.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, cast, get_args

from director.contract.errors import ValidationError

TerminalShell = Literal["login", "database"]
TERMINAL_SHELLS: tuple[TerminalShell, ...] = get_args(TerminalShell)
DEFAULT_SHELL: TerminalShell = "login"


class NoDatabase(ValidationError):
    """The database shell of a site without a database (409 C{no_database})."""

    def __init__(self) -> None:
        super().__init__(
            "shell",
            "this site has no database; add one on its Database page first",
            code="no_database",
        )


def parse_shell(value: object) -> TerminalShell:
    """The C{shell} query argument: absent or empty is the login shell."""
    if value is None or value == "":
        return DEFAULT_SHELL
    if value not in TERMINAL_SHELLS:
        raise ValidationError(
            "shell", f"expected one of {', '.join(TERMINAL_SHELLS)}", code="bad_shell"
        )
    return cast(TerminalShell, value)


#: The login shell: bash if the image has it, in /site.
LOGIN_SCRIPT = (
    "umask 022; cd /site; if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi"
)

# Only variable names are on the command line; the shell expands them in the container.
_MISSING = (
    "if ! command -v {client} >/dev/null 2>&1; then echo \"{client} is not in this site's "
    "image: add {package} to the site's extra packages (Settings), or use the SQL console.\"; "
    "exit 127; fi; "
)
_POSTGRES_SCRIPT = (
    "umask 022; cd /site; "
    + _MISSING.format(client="psql", package="postgresql-client")
    + "exec psql"
)
_MYSQL_SCRIPT = (
    "umask 022; cd /site; "
    + _MISSING.format(client="mysql", package="mariadb-client")
    + 'exec mysql --protocol=tcp --host="$DIRECTOR_DATABASE_HOST" '
    '--port="$DIRECTOR_DATABASE_PORT" --user="$DIRECTOR_DATABASE_USERNAME" '
    '--database="$DIRECTOR_DATABASE_NAME"'
)


def shell_command(shell: TerminalShell, env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """
    The argv of C{shell} and the variables it adds to the site's environment C{env} (whose
    C{DIRECTOR_DATABASE_*} name the database); L{NoDatabase} if the site has none.
    """
    if shell == "login":
        return ["sh", "-c", LOGIN_SCRIPT], {}
    kind = env.get("DIRECTOR_DATABASE_TYPE")
    needed = ("HOST", "PORT", "NAME", "USERNAME", "PASSWORD")
    if kind not in ("postgres", "mysql") or any(
        f"DIRECTOR_DATABASE_{part}" not in env for part in needed
    ):
        raise NoDatabase()
    if kind == "postgres":
        return ["sh", "-c", _POSTGRES_SCRIPT], {
            "PGHOST": env["DIRECTOR_DATABASE_HOST"],
            "PGPORT": env["DIRECTOR_DATABASE_PORT"],
            "PGDATABASE": env["DIRECTOR_DATABASE_NAME"],
            "PGUSER": env["DIRECTOR_DATABASE_USERNAME"],
            "PGPASSWORD": env["DIRECTOR_DATABASE_PASSWORD"],
            "PGAPPNAME": "director-terminal",
        }
    return ["sh", "-c", _MYSQL_SCRIPT], {"MYSQL_PWD": env["DIRECTOR_DATABASE_PASSWORD"]}
