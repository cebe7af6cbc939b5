"""The [shell] settings, and the shell service built from them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from director.cli import main as director_main
from director.common.client import HTTPPoolService
from director.common.config import ConfigError, load_config, parse_config
from director.common.service import ListeningService
from director.shell.service import build_service
from director.shell.ssh import DirectorSSHFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "director.example.toml"


def _walk(service: Any) -> Any:
    yield service
    for child in getattr(service, "services", []):
        yield from _walk(child)


class ShellConfigTests(SynchronousTestCase):
    def test_defaults_match_the_example(self) -> None:
        """The example file documents exactly the defaults."""
        example = load_config(EXAMPLE).shell
        default = parse_config("", EXAMPLE.parent).shell
        # (Paths differ: the example is in etc/ and points at ../var.)
        self.assertEqual(dataclasses.replace(example, host_keys_dir=default.host_keys_dir), default)
        self.assertEqual(
            (default.login_grace_time, default.max_auth_tries, default.idle_timeout),
            (60.0, 6, 3600.0),
        )

    def test_bad_values_name_the_key(self) -> None:
        """Each new setting is checked, and the error names it."""
        for text, message in {
            "max_auth_tries = 0": "shell.max_auth_tries: expected a positive number",
            "max_auth_tries = 2.5": "shell.max_auth_tries: expected an integer",
            "idle_timeout = -1": "shell.idle_timeout: expected a positive number",
            'failure_delay = "2"': "shell.failure_delay: expected a number",
            "max_failures_per_user = true": "shell.max_failures_per_user: expected an integer",
            "failure_windows = 3": "shell.failure_windows: unknown setting",
        }.items():
            with self.assertRaises(ConfigError) as cm:
                parse_config(f"[shell]\n{text}\n", EXAMPLE.parent)
            self.assertIn(message, str(cm.exception))

    def test_service_uses_the_settings(self) -> None:
        """The service listens where configured and its SSH factory applies the limits."""
        base = Path(self.mktemp())
        args = ["init", "--config", str(base / "d.toml"), "--state-dir", str(base / "var")]
        for setting in ('shell.host="127.0.0.1"', "shell.port=2200", "shell.max_auth_tries=3"):
            args += ["--set", setting]
        self.assertEqual(director_main(args), 0)
        service = build_service(MemoryReactorClock(), load_config(base / "d.toml"))
        services = list(_walk(service))
        listening = [s for s in services if isinstance(s, ListeningService)]
        self.assertEqual([(s.host, s.requested_port) for s in listening], [("127.0.0.1", 2200)])
        self.assertEqual(len([s for s in services if isinstance(s, HTTPPoolService)]), 1)
        factory = listening[0].factory
        assert isinstance(factory, DirectorSSHFactory)
        self.assertEqual(factory.limits.max_auth_tries, 3)
        self.assertEqual(sorted(factory.publicKeys), [b"ssh-ed25519", b"ssh-rsa"])
