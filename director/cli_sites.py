"""
The `director` commands that go through the manager's API: `site`, `tasks`, `backup` and
`restore`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from director.common.config import load_config
from director.common.errors import StartupError


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
