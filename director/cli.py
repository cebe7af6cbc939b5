"""
The `director` command: set-up and operator commands.

`director init` writes a working config, secrets and keys; `director check` asks every
component whether it is up and accepts this machine's credentials; `director banner` prints
where things are.

The commands are in L{cli_setup}, L{cli_services}, L{cli_admin} and L{cli_sites}; here, the
parser and C{main}.
"""

from __future__ import annotations

import argparse
import sys

from director.cli_admin import (
    _token_user,
    cluster_status,
    database_host_add,
    orchestrator_command,
    token_create,
    token_list,
    token_revoke,
    user_add,
)
from director.cli_images import add_parsers as add_image_parsers
from director.cli_services import (
    api_command,
    check,
    firewall_command,
    nginx_instances,
    nginx_run,
    stop,
)
from director.cli_setup import (
    DEFAULT_CONFIG,
    _init_database,
    _parse_settings,
    _register_bundled_databases,
    _result,
    _store,
    _toml_value,
    banner,
    dashboard_url,
    init,
    render_config,
)
from director.cli_sites import (
    _api,
    _print_run,
    _size,
    _wait_all_backups,
    _wait_site_backup,
    backup_command,
    restore_command,
    site_command,
    tasks_command,
)
from director.common.errors import StartupError

__all__ = [
    "DEFAULT_CONFIG",
    "_api",
    "_init_database",
    "_parse_settings",
    "_print_run",
    "_register_bundled_databases",
    "_result",
    "_size",
    "_store",
    "_token_user",
    "_toml_value",
    "_wait_all_backups",
    "_wait_site_backup",
    "api_command",
    "backup_command",
    "banner",
    "build_parser",
    "check",
    "cluster_status",
    "dashboard_url",
    "database_host_add",
    "firewall_command",
    "init",
    "main",
    "nginx_instances",
    "nginx_run",
    "orchestrator_command",
    "render_config",
    "restore_command",
    "site_command",
    "stop",
    "tasks_command",
    "token_create",
    "token_list",
    "token_revoke",
    "user_add",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="director", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="write config, secrets, keys and the state directory")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config file to write")
    p.add_argument("--state-dir", default="var", help="where Director keeps its state")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="a setting")
    p.add_argument("--force", action="store_true", help="rewrite an existing config file")
    p.set_defaults(func=init)

    p = sub.add_parser("stop", help="stop the daemon `make run` started, and its nginx")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--pidfile", help="the daemon's pid file (default: <state_dir>/director.pid)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each")
    p.set_defaults(func=stop)

    p = sub.add_parser("nginx", help="Director's nginx instances")
    instances = p.add_subparsers(dest="nginx_command", required=True, metavar="COMMAND")
    p = instances.add_parser("run", help="run one in the foreground (its systemd unit)")
    p.add_argument("instance", choices=("orchestrator", "router"))
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=nginx_run)

    p = sub.add_parser("check", help="health and credentials of every component")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    p.set_defaults(func=check)

    p = sub.add_parser("user", help="users (works on the database directly)")
    users = p.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    p = users.add_parser("add", help="create a user")
    p.add_argument("name")
    role = p.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_true")
    role.add_argument("--teacher", action="store_true")
    role.add_argument("--student", action="store_true")
    p.add_argument("--password-stdin", action="store_true", help="read a password from stdin")
    p.add_argument("--email", help="for notifications")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=user_add)

    p = sub.add_parser("token", help="API tokens")
    tokens = p.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    p = tokens.add_parser("create", help="print a new API token for a user")
    p.add_argument("name")
    p.add_argument("--label", default="cli")
    p.add_argument("--expires-days", type=int, help="the token stops working after this")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=token_create)
    p = tokens.add_parser("list", help="a user's API tokens (never the secrets)")
    p.add_argument("name")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=token_list)
    p = tokens.add_parser("revoke", help="revoke one of a user's API tokens")
    p.add_argument("name")
    p.add_argument("id", type=int, help="the token's id (see `director token list`)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=token_revoke)

    p = sub.add_parser("database-host", help="database servers for site databases")
    hosts = p.add_subparsers(dest="host_command", required=True, metavar="COMMAND")
    p = hosts.add_parser("add", help="add or update a PostgreSQL or MySQL server")
    p.add_argument("--kind", choices=("postgres", "mysql"), required=True)
    p.add_argument("--admin-host", required=True)
    p.add_argument("--admin-port", type=int, required=True)
    p.add_argument("--admin-user", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--container-host", help="the address site containers use")
    p.add_argument("--container-port", type=int)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=database_host_add)

    p = sub.add_parser("orchestrator", help="the orchestrators sites run on (a pool)")
    pool = p.add_subparsers(dest="orchestrator_command", required=True, metavar="COMMAND")
    for name, text in (
        ("add", "register an orchestrator"),
        ("list", "every orchestrator: state, site count, URL, nginx"),
        ("drain", "give an orchestrator no new sites; its sites are moved off"),
        ("remove", "forget an orchestrator (refused while it holds sites)"),
    ):
        op = pool.add_parser(name, help=text)
        if name != "list":
            op.add_argument("name")
        if name == "add":
            op.add_argument("--url", required=True, help="its API base URL")
            op.add_argument("--nginx", required=True, help="HOST:PORT routers forward its sites to")
        op.add_argument("--config", default=DEFAULT_CONFIG)
        op.set_defaults(func=orchestrator_command)

    p = sub.add_parser("cluster", help="a cluster's nodes, orchestrators and routers")
    cluster = p.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    p = cluster.add_parser("status", help="nodes, orchestrators (health, sites), routers")
    p.add_argument(
        "--cluster-state",
        default="/var/lib/director-cluster/dcl/state.json",
        help="the state file of `make cluster` (its nodes; skipped when absent)",
    )
    p.add_argument("--config", help="default: the config `make cluster` wrote beside the state")
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(func=cluster_status)

    p = sub.add_parser("site", help="sites (through the API)")
    site_parsers = p.add_subparsers(dest="site_command", required=True, metavar="COMMAND")
    for name, text in (
        ("list", "your sites"),
        ("show", "one site"),
        ("create", "a new site"),
        ("delete", "delete a site"),
        ("restart", "restart a site's process"),
        ("move", "move a site to another orchestrator (admins)"),
    ):
        sp = site_parsers.add_parser(name, help=text)
        if name != "list":
            sp.add_argument("name")
        else:
            sp.add_argument("--all", action="store_true", help="every site (admins)")
        if name == "create":
            sp.add_argument("--type", choices=("static", "dynamic"), default="static")
            sp.add_argument("--description", default="")
            sp.add_argument(
                "--purpose", default="project", choices=("personal", "project", "activity", "other")
            )
            sp.add_argument("--users", help="comma-separated members")
        if name == "move":
            sp.add_argument("--to", required=True, metavar="ORCH", help="the orchestrator's name")
        sp.add_argument("--no-wait", action="store_true", help="do not wait for the operation")
        sp.add_argument("--token")
        sp.add_argument("--url", help="the manager's URL (default: manager.url)")
        sp.add_argument("--config", default=DEFAULT_CONFIG)
        sp.set_defaults(func=site_command)

    p = sub.add_parser("tasks", help="a site's scheduled tasks (through the API)")
    task_parsers = p.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")
    for name, text in (
        ("list", "the site's tasks"),
        ("add", "add a task: --schedule and --command"),
        ("set", "change a task (or --disable / --enable it)"),
        ("delete", "delete a task and its runs"),
        ("runs", "a task's last runs (--output: with what they printed)"),
        ("run", "run a task now and print its output"),
    ):
        tp = task_parsers.add_parser(name, help=text)
        tp.add_argument("site")
        if name != "list" and name != "add":
            tp.add_argument("id", type=int)
        if name in ("add", "set"):
            tp.add_argument("--schedule", help='cron schedule (UTC), e.g. "*/15 * * * *"')
            tp.add_argument("--command", help="shell command, run in /site as the site")
            tp.add_argument("--name")
            tp.add_argument("--timeout", type=int, help="time limit in seconds")
        if name == "set":
            tp.add_argument("--enable", dest="enabled", action="store_const", const=True)
            tp.add_argument("--disable", dest="enabled", action="store_const", const=False)
        if name == "runs":
            tp.add_argument("--output", action="store_true", help="print each run's output")
        if name == "run":
            tp.add_argument("--no-wait", action="store_true", help="do not wait for the end")
        tp.add_argument("--token")
        tp.add_argument("--url", help="the manager's URL (default: manager.url)")
        tp.add_argument("--config", default=DEFAULT_CONFIG)
        tp.set_defaults(func=tasks_command)
    p = sub.add_parser("backup", help="backups (restic): make one now, list them")
    backup_parsers = p.add_subparsers(dest="backup_command", required=True, metavar="COMMAND")
    for name, text in (
        ("now", "back up every site and the manager now (admins), or --site one site"),
        ("list", "the latest backup runs and failures (admins), or --site a site's backups"),
    ):
        bp = backup_parsers.add_parser(name, help=text)
        bp.add_argument("--site", help="one site (its members may)")
        if name == "now":
            bp.add_argument("--no-wait", action="store_true", help="do not wait for the backup")
        else:
            bp.add_argument("--limit", type=int, default=30, help="runs shown")
        bp.add_argument("--token")
        bp.add_argument("--url", help="the manager's URL (default: manager.url)")
        bp.add_argument("--config", default=DEFAULT_CONFIG)
        bp.set_defaults(func=backup_command)

    p = sub.add_parser(
        "restore",
        help="restore a site from a backup, or (--from) a whole installation",
        description="`director restore SITE BACKUP [--path P] [--files-only|--database-only]` "
        "restores a site through the API; `director restore --from REPO --password-file F "
        "--config NEW.toml --state-dir EMPTY` restores a whole installation before it starts "
        "(docs/operations.md).",
    )
    p.add_argument("site", nargs="?")
    p.add_argument("snapshot", nargs="?", metavar="BACKUP", help="a backup id (or its short id)")
    p.add_argument("--path", help="restore only this path of the site's files")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--files-only", action="store_true", help="leave the database alone")
    only.add_argument("--database-only", action="store_true", help="leave the files alone")
    p.add_argument("--from", dest="from_repository", metavar="REPO", help="a restic repository")
    p.add_argument("--password-file", help="the repository's password (with --from)")
    p.add_argument("--state-dir", default="var", help="the empty state directory (with --from)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the operation")
    p.add_argument("--token")
    p.add_argument("--url", help="the manager's URL (default: manager.url)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=restore_command)

    add_image_parsers(sub, DEFAULT_CONFIG, api_command)

    p = sub.add_parser("firewall", help="the sites firewall on this machine (iptables)")
    walls = p.add_subparsers(dest="firewall_command", required=True, metavar="COMMAND")
    for name, text in (
        ("show", "what sites may and may not reach"),
        ("remove", "remove it (the orchestrator installs it again when it starts)"),
    ):
        wp = walls.add_parser(name, help=text)
        wp.add_argument("--config", default=DEFAULT_CONFIG)
        wp.set_defaults(func=firewall_command)

    p = sub.add_parser("banner", help="print the dashboard, API and SSH addresses")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=banner)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except StartupError as e:
        print(f"director: {e}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
