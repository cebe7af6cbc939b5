"""
`director restore --from REPO`: a whole installation from its backup repository onto an empty
state directory (a fresh machine). Run before Director starts; not a reactor program.

1. The newest snapshot of the manager (restic host field C{director-manager}) gives the
   manager's database (users, sites, database records, tokens), its keys, its secrets (the
   session key, the bundled servers' passwords) and its config, which is written anew with
   this machine's state directory and the repository it came from.
2. The newest snapshot of every site is written to C{backups/restore-pending.json}: when the
   manager starts, it makes one C{restore_backup} operation per site (configure the site,
   put its files back, load its database, start it, route it), so the sites are served again
   through the same code path as any restore, with progress in the dashboard.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from director.common.errors import StartupError
from director.common.restic import ensure_password_file

MANAGER_GROUP = "director-manager"
PENDING = Path("backups") / "restore-pending.json"


def _restic(env: dict[str, str], *args: str, timeout: float = 3600) -> bytes:
    try:
        done = subprocess.run(
            ["restic", *args], env=env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise StartupError(f"restic {args[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise StartupError(f"restic {args[0]}: {message[-1] if message else done.returncode}")
    return done.stdout


def latest_per_group(snapshots: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest snapshot of each restic host field (a site, or the manager)."""
    latest: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        group = snapshot.get("hostname", "")
        if group not in latest or snapshot["time"] > latest[group]["time"]:
            latest[group] = snapshot
    return latest


def site_snapshots(snapshots: list[dict[str, Any]]) -> dict[int, str]:
    """Site id -> the id of its newest snapshot."""
    found: dict[int, str] = {}
    for group, snapshot in latest_per_group(snapshots).items():
        number = group.removeprefix("site-")
        if group.startswith("site-") and number.isdigit():
            found[int(number)] = snapshot["id"]
    return found


def _rewrite_paths(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str) and old and (value == old or value.startswith(old + "/")):
        return new + value[len(old) :]
    return value


def restored_config(
    text: str,
    state_dir: Path,
    repository: str,
    password_file: Path,
    separate_host_keys: bool = False,
) -> str:
    """The old installation's config with this machine's paths and the repository restored."""
    from director.cli import _toml_value

    raw = tomllib.loads(text)
    old = str(raw.get("director", {}).get("state_dir", ""))
    sections: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if isinstance(values, dict):
            sections[section] = {
                k: _rewrite_paths(v, old, str(state_dir)) for k, v in values.items()
            }
    sections.setdefault("director", {})["state_dir"] = str(state_dir)
    # the keys are restored under the state directory, wherever they were before
    sections.setdefault("auth", {})["keys_dir"] = str(state_dir / "keys")
    host_keys = state_dir / ("host-keys" if separate_host_keys else "keys")
    sections.setdefault("shell", {})["host_keys_dir"] = str(host_keys)
    backup = sections.setdefault("backup", {})
    backup["repository"] = repository
    default_password = state_dir / "secrets" / "restic-password"
    backup["password_file"] = "" if password_file == default_password else str(password_file)
    return "# Director configuration, restored by `director restore --from`.\n" + "\n".join(
        f"[{section}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
        for section, values in sections.items()
    )


def restore_installation(
    repository: str, password_file: Path, config_path: Path, state_dir: Path, out: Any
) -> int:
    state_dir = state_dir.resolve()
    if state_dir.exists() and any(state_dir.iterdir()):
        raise StartupError(f"{state_dir} is not empty: restore onto an empty state directory")
    if config_path.exists():
        raise StartupError(f"{config_path} exists: give --config a new file")
    if not password_file.is_file():
        raise StartupError(f"{password_file}: no such password file (the repository's password)")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "RESTIC_REPOSITORY": repository,
        "RESTIC_PASSWORD_FILE": str(password_file),
    }
    for key in os.environ:
        if key.startswith(("AWS_", "RESTIC_REST_", "B2_", "AZURE_", "GOOGLE_")):
            env[key] = os.environ[key]
    snapshots = json.loads(_restic(env, "snapshots", "--json", timeout=600) or b"[]") or []
    manager = latest_per_group(snapshots).get(MANAGER_GROUP)
    if manager is None:
        raise StartupError(f"{repository} holds no backup of a Director manager")
    print(f"manager backup {manager['short_id']} of {manager['time']}", file=out)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)
    scratch = Path(tempfile.mkdtemp(prefix="director-restore-", dir=state_dir))
    try:
        _restic(env, "restore", manager["id"], "--target", str(scratch))
        staged = scratch / "backups" / "dumps" / "manager"
        for sub in ("sites", "nginx", "certs", "backups"):
            (state_dir / sub).mkdir(parents=True, exist_ok=True)
        if (staged / "secrets").is_dir():
            shutil.copytree(staged / "secrets", state_dir / "secrets", symlinks=True)
        (state_dir / "secrets").mkdir(mode=0o700, exist_ok=True)
        (state_dir / "secrets").chmod(0o700)
        if (staged / "keys").is_dir():
            shutil.copytree(staged / "keys", state_dir / "keys", symlinks=True)
            (state_dir / "keys").chmod(0o700)
        if (staged / "host-keys").is_dir():
            shutil.copytree(staged / "host-keys", state_dir / "host-keys", symlinks=True)
        if (staged / "director.db").is_file():
            shutil.copy2(staged / "director.db", state_dir / "director.db")
        elif (staged / "director.sql").is_file():
            shutil.copy2(staged / "director.sql", state_dir / "backups" / "manager-database.sql")
            print(
                "the manager's database was PostgreSQL: load "
                f"{state_dir / 'backups' / 'manager-database.sql'} into the database of "
                "manager.database_url (psql -f) before starting Director",
                file=out,
            )
        if (staged / "director.toml").is_file():
            text = (staged / "director.toml").read_text()
        else:
            text = ""
        # the password given is the repository's from now on (kept with the secrets)
        kept = state_dir / "secrets" / "restic-password"
        if not kept.exists():
            shutil.copy2(password_file, kept)
            kept.chmod(0o600)
        ensure_password_file(kept)
        config_text = restored_config(
            text, state_dir, repository, kept, (staged / "host-keys").is_dir()
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(config_text)
    sites = site_snapshots(snapshots)
    pending = state_dir / PENDING
    pending.write_text(json.dumps({"sites": {str(k): v for k, v in sorted(sites.items())}}))
    print(f"wrote {config_path}; state in {state_dir}", file=out)
    print(
        f"{len(sites)} site(s) will be restored from their newest backups when Director "
        "starts (each is an operation: see the dashboard or `director backup list`)",
        file=out,
    )
    return 0
