"""
Setting a machine up from the `director` command: `director init` (config, secrets, keys,
database, first admin, the bundled database servers) and `director banner` (where things
are), and the config file's rendering.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from director.common.atomic import atomic_write
from director.common.config import COMPONENTS, Config, ConfigError, load_config, parse_config
from director.common.keys import generate_component_keys, generate_ssh_host_keys
from director.common.threads import fired

DEFAULT_CONFIG = "etc/director.toml"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):  # a table of strings (director.url_formats), inline
        return "{" + ", ".join(f"{k} = {json.dumps(str(v))}" for k, v in value.items()) + "}"
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


#: the result of an already-fired Deferred (the CLI's store runs inline)
_result = fired


def _init_database(config: Config, args: argparse.Namespace) -> None:
    """
    Migrate the database; on a new one, the catalogue and the first administrator; the
    built images the catalogue was never offered.
    """
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
    # Node.js and PHP once `director images bootstrap` built them, on a new catalogue or an
    # existing one, but once only: an entry an administrator deleted stays deleted.
    listed = {image.name for image in _result(store.list_images())}
    for tag, name, text, logo in (
        (NODE_IMAGE, "Node.js 18", "Debian 12 with Node.js 18 and npm", "nodejs"),
        (PHP_IMAGE, "PHP 8.2", "Debian 12 with PHP 8.2 (cli, fpm)", "php"),
    ):
        if (tag in listed or image_present(tag)) and _result(
            store.offer_image(tag, name, text, logo=logo)
        ):
            print(f"added {tag} to the image catalogue")
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


def dashboard_url(config: Config) -> str:
    """
    The dashboard's address through the routers: https:// once the dashboard host has a
    certificate (given in the config, or already issued into the shared store), else http://.
    """
    from director.manager.dashboard.security import dashboard_origins
    from director.router.layout import RouterLayout

    section = config.router
    secure, plain = dashboard_origins(
        config.manager.dashboard_host, section.http_port, section.https_port
    )
    layout = RouterLayout.from_config(config)
    issued = layout.bundle(config.manager.dashboard_host)
    try:
        has_certificate = bool(section.dashboard_certificate) or issued.exists()
    except OSError:  # the shared store is the router's (0700): not ours to read
        has_certificate = False
    return (secure if has_certificate else plain).serialize() + "/"


def banner(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    shell = config.shell
    ssh_host = "127.0.0.1" if shell.host in ("0.0.0.0", "::") else shell.host  # noqa: S104
    print("Director is starting:")
    url = dashboard_url(config)
    print(f"  dashboard and API: {url}   (API under {url}api/v1/)")
    print(f"  manager directly:  {config.manager.url}/   (this machine only)")
    print(f"  SSH:               ssh -p {shell.port} USER@{ssh_host}")
    print(f"  sites:             http://NAME.{config.director.sites_domain}/")
    print(f"  state:             {config.director.state_dir}")
    password = config.director.state_dir / "secrets" / "admin-password"
    if password.exists():
        print(f"  admin login:       admin / {password.read_text().strip()}   (from {password})")
    return 0
