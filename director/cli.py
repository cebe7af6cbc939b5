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
import secrets
import sys
import tomllib
from pathlib import Path
from typing import Any

from director.common.config import COMPONENTS, Config, ConfigError, load_config, parse_config
from director.common.errors import StartupError
from director.common.keys import generate_component_keys, generate_ssh_host_keys, write_private

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
        config_path.write_text(render_config(config), encoding="utf-8")
        print(f"wrote {config_path}")
    state = config.director.state_dir
    for sub in ("", "secrets", "sites", "nginx", "certs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "secrets").chmod(0o700)
    session_secret = state / "secrets" / "session.key"
    if not session_secret.exists():
        write_private(session_secret, secrets.token_hex(32).encode("ascii"))
    generate_component_keys(config.auth.keys_dir, COMPONENTS)
    generate_ssh_host_keys(config.shell.host_keys_dir)
    print(f"state in {state}; keys in {config.auth.keys_dir}")
    return 0


def banner(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    shell = config.shell
    ssh_host = "127.0.0.1" if shell.host in ("0.0.0.0", "::") else shell.host  # noqa: S104
    print("Director is starting:")
    print(f"  dashboard and API: {config.manager.url}/   (API under {config.manager.url}/api/v1/)")
    print(f"  SSH:               ssh -p {shell.port} USER@{ssh_host}")
    print(f"  sites:             http://NAME.{config.director.sites_domain}/")
    print(f"  state:             {config.director.state_dir}")
    return 0


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


def images_bootstrap(args: argparse.Namespace) -> int:
    import subprocess

    from director.orchestrator.images import bootstrap

    try:
        built = bootstrap(force=args.force)
    except (subprocess.CalledProcessError, OSError, RuntimeError) as e:
        print(f"director: building the base images failed: {e}", file=sys.stderr)
        return 1
    print("built " + ", ".join(built) if built else "base images already present")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="director", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="write config, secrets, keys and the state directory")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config file to write")
    p.add_argument("--state-dir", default="var", help="where Director keeps its state")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="a setting")
    p.add_argument("--force", action="store_true", help="rewrite an existing config file")
    p.set_defaults(func=init)

    p = sub.add_parser("check", help="health and credentials of every component")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    p.set_defaults(func=check)

    p = sub.add_parser("images", help="site images")
    images = p.add_subparsers(dest="images_command", required=True, metavar="COMMAND")
    p = images.add_parser("bootstrap", help="build the offline base images (debootstrap)")
    p.add_argument("--force", action="store_true", help="rebuild even if present")
    p.set_defaults(func=images_bootstrap)

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
