"""
The `director` commands for accounts and the installation's shape: `user add`, `token
create|list|revoke`, `database-host add`, `orchestrator add|list|drain|remove` and `cluster
status`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from director.cli_setup import (
    _result,
    _store,
)
from director.common.config import load_config
from director.common.errors import StartupError


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
        shown = token.to_json()
        expires = shown["expires_at"] or "never"
        state = " (expired)" if token.expired else ""
        print(
            f"{token.id:<6} {token.name[:30]:<30} created {shown['created_at'][:16]}  "
            f"expires {expires[:16]}{state}  last used {(shown['last_used_at'] or 'never')[:16]}"
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
    """Nodes (from the cluster's state file), orchestrators, managers and routers: health."""
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
    managers, routers = status.front_door(config)

    def main(reactor: Any) -> Any:
        from twisted.internet.defer import Deferred

        async def run() -> None:
            found = await status.health(reactor, config, records, args.timeout, managers, routers)
            answers.update(found)

        return Deferred.fromCoroutine(run())

    try:
        react(main)
    except SystemExit as e:
        if e.code:
            raise
    for line in status.render(nodes, records, answers, managers, routers):
        print(line)
    return 0
