"""
Director's configuration: one TOML file parsed into immutable, typed sections.

Every value has a default, so an empty file is a valid single-machine config. A bad file or
value raises L{ConfigError} whose message names the key and what was expected; the daemon
prints that one line and stops. The sections are in L{director.common.config_sections}, the
checks of their values in L{director.common.config_checks}.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from director.common.config_checks import ConfigError, router_urls, url_formats
from director.common.config_sections import (
    AuthSection,
    BackupSection,
    DirectorSection,
    ManagerSection,
    OrchestratorSection,
    RouterSection,
    ShellSection,
)
from director.contract.urls import UrlFormats

__all__ = [
    "COMPONENTS",
    "AuthSection",
    "BackupSection",
    "Config",
    "ConfigError",
    "DirectorSection",
    "ManagerSection",
    "OrchestratorSection",
    "RouterSection",
    "ShellSection",
    "load_config",
    "parse_config",
    "router_urls",
]

COMPONENTS = ("manager", "orchestrator", "router", "shell")


@dataclass(frozen=True)
class Config:
    """The whole configuration; C{source} is the file it came from, if any."""

    # The sections are frozen dataclasses: one shared default instance each is safe.
    director: DirectorSection = DirectorSection()  # noqa: RUF009 (frozen)
    auth: AuthSection = AuthSection()  # noqa: RUF009 (frozen)
    manager: ManagerSection = ManagerSection()  # noqa: RUF009 (frozen)
    orchestrator: OrchestratorSection = OrchestratorSection()  # noqa: RUF009 (frozen)
    router: RouterSection = RouterSection()  # noqa: RUF009 (frozen)
    shell: ShellSection = ShellSection()  # noqa: RUF009 (frozen)
    backup: BackupSection = BackupSection()  # noqa: RUF009 (frozen)
    source: Path | None = None

    def url_formats(self) -> UrlFormats:
        """Each purpose's site URL format (director.url_formats), checked."""
        return url_formats(
            self.director.sites_domain, self.director.url_formats, self.manager.dashboard_host
        )

    def replace(self, **sections: Any) -> Config:
        """A copy with whole sections replaced (used by tests and C{director init})."""
        return dataclasses.replace(self, **sections)


def _convert(key: str, tp: str, value: object, base: Path) -> Any:
    if tp == "Path":
        if not isinstance(value, str) or not value or "\0" in value:
            raise ConfigError(f"{key}: expected a path (a string), got {value!r}")
        path = Path(value)
        return path if path.is_absolute() else base / path
    if tp == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp == "str" and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _section(name: str, cls: type, raw: object, base: Path) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{name}]: expected a table of settings, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{name}.{unknown[0]}: unknown setting; [{name}] accepts {', '.join(fields)}"
        )
    values: dict[str, Any] = {}
    for fname, f in fields.items():
        key = f"{name}.{fname}"
        if fname in raw:
            value = _convert(key, str(f.type), raw[fname], base)
        else:
            value = f.default
            if value is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            if isinstance(value, Path) and not value.is_absolute():
                value = base / value
        check = f.metadata.get("check")
        if check is not None:
            check(key, value)
        values[fname] = value
    return cls(**values)


#: Settings that make sense only together: both set or both empty.
_PAIRS = (
    ("router", "sites_certificate", "sites_certificate_key"),
    ("router", "dashboard_certificate", "dashboard_certificate_key"),
)


def _check_pairs(parsed: Mapping[str, Any]) -> None:
    for section, first, second in _PAIRS:
        values = getattr(parsed[section], first), getattr(parsed[section], second)
        if bool(values[0]) != bool(values[1]):
            raise ConfigError(
                f"{section}.{first} and {section}.{second}: set both (a certificate and its "
                f"key) or neither"
            )


def parse_config(text: str, base: Path, source: Path | None = None) -> Config:
    """
    Parse TOML text. Relative paths are taken relative to C{base} (the config file's
    directory when loaded from a file).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}not valid TOML: {e}") from None
    sections = {f.name: f for f in dataclasses.fields(Config) if f.name != "source"}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"[{unknown[0]}]: unknown section; known: {', '.join(sections)}")
    parsed = {
        name: _section(name, f.default.__class__, raw.get(name, {}), base)
        for name, f in sections.items()
    }
    _check_pairs(parsed)
    config = Config(**parsed, source=source)
    config.url_formats()
    return config


def load_config(path: str | Path) -> Config:
    """Read and parse a config file; a missing or unreadable file is a L{ConfigError}."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file (create one with `director init --config {path}`)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from None
    return parse_config(text, path.resolve().parent, source=path)
