"""
The command-line options every Director plugin takes, and the one way they become a service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from director.common.config import Config, load_config
from director.common.errors import StartupError
from director.common.service import ExitOnStartupError

DEFAULT_CONFIG = "etc/director.toml"


class Options(usage.Options):
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "Path to director.toml (see etc/director.example.toml)."],
        ["log-format", None, None, "Log as 'text' (default) or 'json' (one JSON object a line)."],
    ]

    def postOptions(self) -> None:
        fmt = self["log-format"]
        if fmt not in (None, "text", "json"):
            raise usage.UsageError("--log-format must be 'text' or 'json'")
        parent = getattr(self, "parent", None)
        if fmt == "json" and parent is not None and not parent.get("logger"):
            # twistd resolves this name after our options are parsed.
            parent["logger"] = "director.common.logging.json_observer"


def make_service(build: Callable[[Any, Config], IService], options: Options) -> IService:
    """
    Load the config and build the service with the running reactor; a config or key
    problem prints one line and exits with status 1.
    """
    import sys

    from twisted.internet import reactor

    try:
        config = load_config(options["config"])
        return ExitOnStartupError(build(reactor, config))
    except StartupError as e:
        sys.stderr.write(f"director: {e}\n")
        raise SystemExit(1) from None
