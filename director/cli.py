"""
The `director` command: set-up and operator commands.

`director init` writes a working config, secrets and keys; `director check` asks every
component whether it is up and accepts this machine's credentials; `director banner` prints
where things are.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from director.cli_images import add_parsers as add_image_parsers
from director.common.atomic import atomic_write
from director.common.config import COMPONENTS, Config, ConfigError, load_config, parse_config
from director.common.errors import StartupError
from director.common.keys import generate_component_keys, generate_ssh_host_keys

DEFAULT_CONFIG = "etc/director.toml"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def render_config(config: Config) -> str:
    """TOML text for C{config} (every setting written out, so the file documents itself)."""
    lines = ["# Director configuration, written by `director init`. See etc/director.example.toml."]
    for section in dataclasses.fields(config):
        if section.name == "source":
            continue
        lines.append(f"\n[{section.name}]")
        values = getattr(config, section.name)
        for f in dataclasses.fields(values):
            lines.append(f"{f.name} = {_toml_value(getattr(values, f.name))}")
    return "\n".join(lines) + "\n"


def _parse_settings(settings: list[str]) -> dict[str, dict[str, Any]]:
    raw: dict[str, dict[str, Any]] = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"--set {setting!r}: expected SECTION.KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        raw.setdefault(section, {})[name] = value
    return raw


def init(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    if config_path.exists() and not args.force:
        print(f"{config_path} already exists; keeping it (use --force to rewrite it)")
        config = load_config(config_path)
    else:
        state = Path(args.state_dir).resolve()
        raw: dict[str, dict[str, Any]] = {
            "director": {"state_dir": str(state)},
            "auth": {"keys_dir": str(state / "keys")},
            "shell": {"host_keys_dir": str(state / "keys")},
        }
        for section, values in _parse_settings(args.set or []).items():
            raw.setdefault(section, {}).update(values)
        text = "\n".join(
            f"[{section}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
            for section, values in raw.items()
        )
        # Validate everything before writing anything.
        config = parse_config(text, config_path.resolve().parent)
        config_path.parent.mkdir(parents=True, exist_ok=True)
        # The config may hold secrets (the OIDC client secret, a database URL's password).
        atomic_write(config_path, render_config(config), 0o600, durable=True)
        print(f"wrote {config_path}")
    state = config.director.state_dir
    for sub in ("", "secrets", "sites", "nginx", "certs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "secrets").chmod(0o700)
    session_secret = state / "secrets" / "session.key"
    if not session_secret.exists():
        atomic_write(session_secret, secrets.token_hex(32), 0o600, durable=True)
    generate_component_keys(config.auth.keys_dir, COMPONENTS)
    generate_ssh_host_keys(config.shell.host_keys_dir)
    _init_database(config, args)
    _register_bundled_databases(config)
    print(f"state in {state}; keys in {config.auth.keys_dir}")
    return 0


def _store(config: Config) -> Any:
    """The manager's store with an inline runner: the CLI is not a reactor program."""
    from director.common.threads import InlineRunner
    from director.manager.service import database_url
    from director.manager.store import Store, make_engine, migrate

    engine = make_engine(database_url(config))
    migrate(engine)
    return Store(engine, InlineRunner())


def _result(d: Any) -> Any:
    """The result of an already-fired Deferred (the CLI's store runs inline)."""
    out: list[Any] = []
    d.addBoth(out.append)
    from twisted.python.failure import Failure

    if out and isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def _init_database(config: Config, args: argparse.Namespace) -> None:
    """Migrate the database; on a new one, the catalogue and the first administrator."""
    from director.manager.passwords import hash_password
    from director.orchestrator.images import (
        BASE_IMAGE,
        NODE_IMAGE,
        PHP_IMAGE,
        PYTHON_IMAGE,
        image_present,
    )

    store = _store(config)
    if _result(store.list_images()) == []:
        _result(
            store.put_image(
                PYTHON_IMAGE,
                "Python 3",
                "Debian 12 with Python 3, pip and venv",
                None,
                True,
                logo="python",
            )
        )
        _result(
            store.put_image(
                BASE_IMAGE, "Debian", "Debian 12 (bookworm), minimal", None, False, logo="debian"
            )
        )
        # Node.js and PHP when `director images bootstrap` built them (admins add them later
        # with `director images add` otherwise).
        for tag, name, text, logo in (
            (NODE_IMAGE, "Node.js 18", "Debian 12 with Node.js 18 and npm", "nodejs"),
            (PHP_IMAGE, "PHP 8.2", "Debian 12 with PHP 8.2 (cli, fpm)", "php"),
        ):
            if image_present(tag):
                _result(store.put_image(tag, name, text, None, False, logo=logo))
    if _result(store.list_users()) == []:
        password = secrets.token_urlsafe(12)
        rounds = config.manager.bcrypt_rounds
        _result(store.create_user("admin", "admin", hash_password(password, rounds)))
        _result(store.update_user("admin", accepted_guidelines=True))
        path = config.director.state_dir / "secrets" / "admin-password"
        atomic_write(path, password, 0o600, durable=True)
        print(f"created the administrator: admin / {password} (also in {path})")


def _register_bundled_databases(config: Config) -> None:
    """
    With C{orchestrator.bundled_databases}, the administrators' passwords of the PostgreSQL
    and MariaDB that Director runs, and both registered as database hosts (so a new site's
    first database just works). Turned off, they are unregistered unless databases use them.
    """
    from director.orchestrator.bundled_databases import ADMIN_USERS, KINDS, ensure_password

    section = config.orchestrator
    ports = {"postgres": section.postgres_port, "mysql": section.mysql_port}
    store = _store(config)
    for kind in KINDS:
        if not section.bundled_databases:
            if _result(store.remove_unused_database_host(kind, "127.0.0.1", ports[kind])):
                print(f"unregistered the bundled {kind} server")
            continue
        password = ensure_password(config.director.state_dir, kind)
        _result(
            store.put_database_host(
                kind,
                "127.0.0.1",
                ports[kind],
                ADMIN_USERS[kind],
                password,
                section.databases_bridge_host,
                ports[kind],
            )
        )
    if section.bundled_databases:
        print(
            f"site databases: PostgreSQL on port {ports['postgres']}, MariaDB on port "
            f"{ports['mysql']}, run by Director under {config.director.state_dir / 'databases'}"
        )


def banner(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    shell = config.shell
    ssh_host = "127.0.0.1" if shell.host in ("0.0.0.0", "::") else shell.host  # noqa: S104
    print("Director is starting:")
    print(f"  dashboard and API: {config.manager.url}/   (API under {config.manager.url}/api/v1/)")
    print(f"  SSH:               ssh -p {shell.port} USER@{ssh_host}")
    print(f"  sites:             http://NAME.{config.director.sites_domain}/")
    print(f"  state:             {config.director.state_dir}")
    password = config.director.state_dir / "secrets" / "admin-password"
    if password.exists():
        print(f"  admin login:       admin / {password.read_text().strip()}   (from {password})")
    return 0


def nginx_instances(config: Config) -> list[tuple[str, Any]]:
    """The nginx instances Director runs with C{config}: (what, L{NginxPaths})."""
    from director.common.nginx import NginxPaths
    from director.orchestrator.runtime import RuntimePaths
    from director.router.layout import RouterLayout

    state = config.director.state_dir
    return [
        ("orchestrator nginx", NginxPaths(RuntimePaths(state).nginx)),
        ("router front nginx", NginxPaths(RouterLayout.from_config(config).nginx_prefix)),
    ]


def stop(args: argparse.Namespace) -> int:
    """
    A deliberate stop of what `make run` started: the daemon by its pid file (SIGTERM: it
    stops its nginx and database servers itself), then whatever a daemon that was killed
    left running, by their own pid files.
    """
    import signal

    from director.common import pidfiles
    from director.common.nginx import stop_instance
    from director.orchestrator.bundled_databases import bundled_settings, running_pid

    config = load_config(args.config)
    pid_file = Path(args.pidfile) if args.pidfile else config.director.state_dir / "director.pid"
    code = 0
    pid = pidfiles.running_pid(pid_file, "twistd")
    if pid is not None:
        print(f"stopping the Director daemon (pid {pid})")
        if not pidfiles.stop_pid_blocking(pid, signal.SIGTERM, args.timeout):
            print(f"director: the daemon did not stop within {args.timeout:.0f}s; killed it")
            code = 1
    for what, paths in nginx_instances(config):
        stopped = stop_instance(paths, timeout=args.timeout)
        if stopped is not None:
            print(f"stopped the {what} (pid {stopped})")
    for server in bundled_settings(config):
        server_pid = running_pid(server)
        if server_pid is not None:
            first = signal.SIGINT if server.kind == "postgres" else signal.SIGTERM
            pidfiles.stop_pid_blocking(server_pid, first, args.timeout)
            print(f"stopped the bundled {server.kind} server (pid {server_pid})")
    return code


def nginx_run(args: argparse.Namespace) -> int:
    """
    Run one of Director's nginx instances in the foreground (for its systemd unit): exec
    nginx on the configuration the daemon wrote. Until the daemon first wrote it, or while
    another nginx runs it (one a daemon started itself), wait for that, then start.
    """
    import time

    from director.common import pidfiles

    config = load_config(args.config)
    instances = dict(zip(("orchestrator", "router"), nginx_instances(config), strict=True))
    what, paths = instances[args.instance]
    said = ""
    while True:
        pid = pidfiles.running_pid(paths.pid, str(paths.conf))
        if paths.conf.exists() and pid is None:
            break
        why = (
            f"no {what} configuration yet ({paths.conf}); waiting for the daemon to write it"
            if pid is None
            else f"the {what} already runs (pid {pid}); waiting for it to end"
        )
        if why != said:
            print(f"director: {why}", flush=True)
            said = why
        time.sleep(0.2)
    argv = paths.argv()
    os.execv(argv[0], argv)  # noqa: S606 (nginx on our own paths, no shell)
    return 1  # not reached


def check(args: argparse.Namespace) -> int:
    from twisted.internet.task import react

    from director.checks import run_checks

    config = load_config(args.config)
    results: list[tuple[str, bool, str]] = []

    def main(reactor: Any) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(run_checks(reactor, config, results, args.timeout))

    try:
        react(main)
    except SystemExit as e:
        if e.code:
            raise
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name.ljust(width)}  {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def api_command(args: argparse.Namespace, handler: Any) -> int:
    """Run C{handler(args, api)} with the API client of C{args} (--token, --url, --config)."""
    return int(handler(args, _api(args)))


def firewall_command(args: argparse.Namespace) -> int:
    """Show or remove this machine's sites firewall (the orchestrator installs it)."""
    from twisted.python.failure import Failure

    from director.common.threads import InlineRunner
    from director.orchestrator.firewall import FirewallError, IptablesFirewall

    subnet = load_config(args.config).orchestrator.sites_subnet
    firewall = IptablesFirewall(InlineRunner())
    results: list[Any] = []
    d = firewall.rules(subnet) if args.firewall_command == "show" else firewall.remove(subnet)
    d.addBoth(results.append)
    if isinstance(results[0], Failure):
        results[0].trap(FirewallError)
        print(f"director: {results[0].value}", file=sys.stderr)
        return 1
    if args.firewall_command == "remove":
        done = "removed the" if results[0] else "there is no"
        print(f"{done} sites firewall for {subnet}")
        return 0
    rules = results[0]
    if rules is None:
        print(f"there is no sites firewall for {subnet} (the orchestrator installs it)")
        return 0
    allowed = ", ".join(f"{host}:{port}" for host, port in sorted(rules.allow)) or "nothing"
    print(f"sites firewall for {subnet}")
    print(f"  sites may reach on this machine: {allowed}")
    print(f"  sites never reach: other sites, {', '.join(rules.blocked) or '-'}")
    return 0


def user_add(args: argparse.Namespace) -> int:
    from director.manager.models import validate_username
    from director.manager.passwords import hash_password, validate_password

    config = load_config(args.config)
    store = _store(config)
    role = "admin" if args.admin else "teacher" if args.teacher else "student"
    password_hash = None
    if args.password_stdin:
        password_hash = hash_password(
            validate_password(sys.stdin.readline().rstrip("\n")), config.manager.bcrypt_rounds
        )
    user = _result(
        store.create_user(validate_username(args.name), role, password_hash, email=args.email or "")
    )
    _result(store.update_user(user.username, accepted_guidelines=role == "admin"))
    print(f"created {role} {user.username}")
    return 0


def _token_user(args: argparse.Namespace) -> tuple[Any, Any]:
    config = load_config(args.config)
    store = _store(config)
    user = _result(store.get_user(args.name))
    if user is None:
        raise StartupError(f"no user {args.name}")
    return store, user


def token_create(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    if args.expires_days is not None and not 1 <= args.expires_days <= 3650:
        raise StartupError("--expires-days: a whole number of days from 1 to 3650")
    store, user = _token_user(args)
    expires = (
        datetime.now(UTC) + timedelta(days=args.expires_days)
        if args.expires_days is not None
        else None
    )
    print(_result(store.create_token(user.id, args.label, expires)))
    return 0


def token_list(args: argparse.Namespace) -> int:
    store, user = _token_user(args)
    for token in _result(store.list_tokens(user.id)):
        expires = token["expires_at"] or "never"
        state = " (expired)" if token["expired"] else ""
        print(
            f"{token['id']:<6} {token['name'][:30]:<30} created {token['created_at'][:16]}  "
            f"expires {expires[:16]}{state}  last used {(token['last_used_at'] or 'never')[:16]}"
        )
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    store, user = _token_user(args)
    if not _result(store.delete_token(user.id, args.id)):
        raise StartupError(f"{args.name} has no token {args.id} (see `director token list`)")
    print(f"revoked token {args.id} of {user.username}")
    return 0


def database_host_add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = _store(config)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else args.password
    host_id = _result(
        store.put_database_host(
            args.kind,
            args.admin_host,
            args.admin_port,
            args.admin_user,
            password,
            args.container_host,
            args.container_port,
        )
    )
    print(f"database host {host_id}: {args.kind} at {args.admin_host}:{args.admin_port}")
    return 0


def orchestrator_command(args: argparse.Namespace) -> int:
    """The orchestrator pool's records, on the database directly (a running manager reloads
    them within its pool's interval)."""
    from director.common.threads import InlineRunner
    from director.manager.placement_store import InvalidOrchestrator, PlacementStore
    from director.manager.store import Conflict, NotFound

    records = PlacementStore(_store(load_config(args.config)).engine, InlineRunner())
    try:
        if args.orchestrator_command == "add":
            record = _result(records.add(args.name, args.url, args.nginx))
            print(f"orchestrator {record.name}: {record.url}, sites through {record.nginx}")
        elif args.orchestrator_command == "list":
            for r in _result(records.list()):
                left = " left" if r.state == "draining" else ""
                print(f"{r.name}\t{r.state}\t{r.sites} site(s){left}\t{r.url}\t{r.nginx}")
        elif args.orchestrator_command == "drain":
            record = _result(records.set_state(args.name, "draining"))
            print(
                f"orchestrator {record.name} is draining: it gets no new sites, and the "
                f"manager moves its {record.sites} site(s) to other orchestrators (one "
                "operation each; `director orchestrator list` shows how many are left)"
            )
        elif args.orchestrator_command == "remove":
            record = _result(records.remove(args.name))
            print(f"removed orchestrator {record.name}")
    except (Conflict, NotFound, InvalidOrchestrator) as e:
        raise StartupError(e.message if isinstance(e, Conflict) else str(e)) from None
    return 0


def cluster_status(args: argparse.Namespace) -> int:
    """Nodes (from the cluster's state file), orchestrators with their health, routers."""
    from twisted.internet.task import react

    from director.cluster import status
    from director.common.threads import InlineRunner
    from director.manager.placement_store import PlacementStore

    state_file = Path(args.cluster_state)
    config_path = Path(args.config) if args.config else state_file.parent / "host" / "director.toml"
    if not config_path.exists():
        raise StartupError(f"no config at {config_path} (give --config, or bring a cluster up)")
    config = load_config(config_path)
    nodes = status.nodes_from_state(state_file) if state_file.exists() else None
    records = _result(PlacementStore(_store(config).engine, InlineRunner()).list())
    answers: dict[str, str] = {}

    def main(reactor: Any) -> Any:
        from twisted.internet.defer import Deferred

        async def run() -> None:
            answers.update(await status.health(reactor, config, records, args.timeout))

        return Deferred.fromCoroutine(run())

    try:
        react(main)
    except SystemExit as e:
        if e.code:
            raise
    for line in status.render(nodes, records, answers, config.router.url):
        print(line)
    return 0


def _api(args: argparse.Namespace) -> Any:
    from director.apiclient import APIClient

    config = load_config(args.config)
    token = args.token or os.environ.get("DIRECTOR_TOKEN")
    if not token:
        raise StartupError(
            "give an API token with --token or DIRECTOR_TOKEN "
            "(create one with `director token create USER`)"
        )
    return APIClient(args.url or config.manager.url, token)


def site_command(args: argparse.Namespace) -> int:
    from director.apiclient import APICallFailed, show_operation

    api = _api(args)
    try:
        if args.site_command == "list":
            sites = api.get("/api/v1/sites" + ("?all=1" if args.all else ""))["sites"]
            for site in sites:
                print(
                    f"{site['name']:<32} {site['type']:<8} {site['availability']:<11} "
                    f"{','.join(site['members'])}"
                )
            return 0
        if args.site_command == "show":
            print(json.dumps(api.get(f"/api/v1/sites/{args.name}"), indent=2))
            return 0
        if args.site_command == "create":
            body = {
                "name": args.name,
                "type": args.type,
                "description": args.description,
                "purpose": args.purpose,
            }
            if args.users:
                body["users"] = args.users.split(",")
            answer = api.post("/api/v1/sites", body)
        elif args.site_command == "delete":
            answer = api.delete(f"/api/v1/sites/{args.name}")
        elif args.site_command == "move":
            answer = api.post(f"/api/v1/sites/{args.name}/move", {"orchestrator": args.to})
        else:
            answer = api.post(f"/api/v1/sites/{args.name}/restart", {})
        op = answer["operation"]
        if args.no_wait:
            print(f"operation {op['id']}: {op['status']}")
            return 0
        final = show_operation(api, op["id"])
        return 0 if final["status"] == "succeeded" else 1
    except APICallFailed as e:
        print(f"director: {e}", file=sys.stderr)
        return 1


def _print_run(run: dict[str, Any], output: bool) -> None:
    code = "" if run["exit_code"] is None else f" exit {run['exit_code']}"
    print(f"run {run['id']}: {run['status']}{code} ({run['trigger']}) {run['started_at']}")
    if run["message"]:
        print(f"  {run['message']}")
    if output and run["output"]:
        print(run["output"].rstrip("\n"))


def tasks_command(args: argparse.Namespace) -> int:
    from director.apiclient import APICallFailed

    api = _api(args)
    base = f"/api/v1/sites/{args.site}/tasks"
    try:
        if args.tasks_command == "list":
            for task in api.get(base)["tasks"]:
                last = task["last_run"]["status"] if task["last_run"] else "never run"
                state = "" if task["enabled"] else " (paused)"
                print(
                    f"{task['id']:>5}  {task['schedule']:<20} {task['timeout']:>5}s  "
                    f"{last:<11} {task['name'] or task['command'][:40]}{state}"
                )
            return 0
        if args.tasks_command in ("add", "set"):
            body: dict[str, Any] = {}
            for key in ("schedule", "command", "name", "timeout"):
                if getattr(args, key) is not None:
                    body[key] = getattr(args, key)
            if args.tasks_command == "set":
                if args.enabled is not None:
                    body["enabled"] = args.enabled
                task = api.call("PATCH", f"{base}/{args.id}", body)["task"]
            else:
                task = api.post(base, body)["task"]
            print(json.dumps(task, indent=2))
            return 0
        if args.tasks_command == "delete":
            api.delete(f"{base}/{args.id}")
            print(f"task {args.id} deleted")
            return 0
        if args.tasks_command == "runs":
            for run in api.get(f"{base}/{args.id}/runs")["runs"]:
                _print_run(run, args.output)
            return 0
        run = api.post(f"{base}/{args.id}/run", {})["run"]
        while not args.no_wait and run["status"] == "running":
            time.sleep(1)
            runs = api.get(f"{base}/{args.id}/runs")["runs"]
            run = next((r for r in runs if r["id"] == run["id"]), run)
        _print_run(run, True)
        return 0 if run["status"] in ("succeeded", "running") else 1
    except APICallFailed as e:
        print(f"director: {e}", file=sys.stderr)
        return 1


def backup_command(args: argparse.Namespace) -> int:
    from director.apiclient import APICallFailed

    api = _api(args)
    try:
        if args.backup_command == "now":
            if args.site:
                run = api.post(f"/api/v1/sites/{args.site}/backups", {})["backup"]
                print(f"backing up {args.site} (backup {run['id']})")
                if args.no_wait:
                    return 0
                return _wait_site_backup(api, args.site, run["id"])
            api.post("/api/v1/backups", {})
            print("backing up the manager and every site")
            if args.no_wait:
                return 0
            return _wait_all_backups(api)
        if args.site:
            answer = api.get(f"/api/v1/sites/{args.site}/backups")
            for snapshot in answer["snapshots"]:
                size = snapshot["bytes"]
                print(
                    f"{snapshot['short_id']}  {snapshot['time'][:19].replace('T', ' ')}  "
                    f"{_size(size) if size is not None else '?':>9}  "
                    f"{'database: ' + snapshot['database'] if snapshot['database'] else ''}"
                )
            if not answer["snapshots"]:
                print("no backups yet")
            return 0
        status = api.get("/api/v1/backups")
        print(
            f"last successful backup of everything: {status['last_success_at'] or 'never'}"
            + (
                f" ({status['last_success_duration']:.1f} s)"
                if status["last_success_duration"] is not None
                else ""
            )
        )
        print(f"failing: {status['failing']}; running now: {'yes' if status['running'] else 'no'}")
        for run in status["runs"][: args.limit]:
            what = run["site"] or run["kind"]
            extra = f"  {run['error']}" if run.get("error") else ""
            print(f"{run['started_at'][:19]}  {what:<32} {run['status']:<10}{extra}")
        return 0
    except APICallFailed as e:
        print(f"director: {e}", file=sys.stderr)
        return 1


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _wait_site_backup(api: Any, site: str, run_id: int, timeout: float = 6 * 3600) -> int:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.get(f"/api/v1/sites/{site}/backups")["runs"]
        run = next((r for r in runs if r["id"] == run_id), None)
        if run is not None and run["status"] != "running":
            print(f"backup {run['status']}" + (f": {run['error']}" if run.get("error") else ""))
            return 0 if run["status"] == "succeeded" else 1
        time.sleep(0.5)
    print("director: still running; see `director backup list`", file=sys.stderr)
    return 1


def _wait_all_backups(api: Any, timeout: float = 24 * 3600) -> int:
    import time

    deadline = time.monotonic() + timeout
    time.sleep(0.5)
    while time.monotonic() < deadline:
        status = api.get("/api/v1/backups")
        if not status["running"]:
            latest = next((r for r in status["runs"] if r["kind"] == "installation"), None)
            if latest is None:
                return 1
            print(
                f"backup {latest['status']}"
                + (f": {latest['error']}" if latest.get("error") else "")
            )
            return 0 if latest["status"] == "succeeded" else 1
        time.sleep(1)
    print("director: still running; see `director backup list`", file=sys.stderr)
    return 1


def restore_command(args: argparse.Namespace) -> int:
    if args.from_repository:
        from director.restore import restore_installation

        if args.site or args.snapshot:
            raise StartupError("--from restores a whole installation: give no site or backup")
        password = Path(args.password_file) if args.password_file else None
        if password is None:
            raise StartupError("--from needs --password-file (the repository's password)")
        return restore_installation(
            args.from_repository,
            password,
            Path(args.config),
            Path(args.state_dir),
            sys.stdout,
        )
    from director.apiclient import APICallFailed, show_operation

    if not args.site or not args.snapshot:
        raise StartupError("give SITE and BACKUP (see `director backup list --site SITE`)")
    body: dict[str, Any] = {}
    if args.path:
        body["path"] = args.path
    if args.files_only:
        body["database"] = False
    if args.database_only:
        body["files"] = False
    api = _api(args)
    try:
        answer = api.post(f"/api/v1/sites/{args.site}/backups/{args.snapshot}/restore", body)
        op = answer["operation"]
        if args.no_wait:
            print(f"operation {op['id']}: {op['status']}")
            return 0
        final = show_operation(api, op["id"], timeout=6 * 3600)
        return 0 if final["status"] == "succeeded" else 1
    except APICallFailed as e:
        print(f"director: {e}", file=sys.stderr)
        return 1


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
