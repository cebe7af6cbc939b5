"""Building each component's service: listeners, credentials, and start-up errors."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from director.cli import main as director_main
from director.combined.service import build_service as build_all
from director.common.config import load_config
from director.common.errors import StartupError
from director.common.nginx import NginxProcess
from director.common.service import ExitOnStartupError, ListeningService
from director.manager.service import build_service as build_manager
from director.orchestrator.service import build_service as build_orchestrator
from director.shell.service import build_service as build_shell
from director.testing import manager_database
from director.testing.fake_docker import FakeDockerGateway

pytestmark = pytest.mark.manager_store


def _walk(service: Any) -> Iterator[Any]:
    yield service
    for child in getattr(service, "services", []):
        yield from _walk(child)


def initialised(test: SynchronousTestCase, *settings: str, base: Path | None = None):
    """A config and state written by the real `director init`."""
    base = base or Path(test.mktemp())
    args = ["init", "--config", str(base / "director.toml"), "--state-dir", str(base / "var")]
    args += manager_database.init_settings(manager_database.database_url(base, migrated=False))
    for s in settings:
        args += ["--set", s]
    test.assertEqual(director_main(args), 0)
    return load_config(base / "director.toml")


class BuildServiceTests(SynchronousTestCase):
    def test_all_components_listen_on_configured_addresses(self) -> None:
        """`director` has every component's listener on the configured host and port."""
        base = Path(tempfile.mkdtemp(prefix="director-unit-", dir="/tmp"))
        self.addCleanup(shutil.rmtree, base, True)
        base.chmod(0o755)
        config = initialised(self, "manager.port=18000", 'shell.host="127.0.0.1"', base=base)
        service = build_all(MemoryReactorClock(), config)
        listening = sorted(
            (s.requested_port, s.host) for s in _walk(service) if isinstance(s, ListeningService)
        )
        self.assertEqual(
            listening,
            [(2322, "127.0.0.1"), (8100, "127.0.0.1"), (8200, "127.0.0.1"), (18000, "127.0.0.1")],
        )
        nginx = [s for s in _walk(service) if isinstance(s, NginxProcess)]
        self.assertEqual(len(nginx), 1)
        self.assertIn("127.0.0.1:8180 default_server", nginx[0].paths.conf.read_text())

    def test_state_directory_must_be_reachable_by_nginx(self) -> None:
        """A state directory nginx workers cannot enter stops start-up with the fix to apply."""
        config = initialised(self)
        with self.assertRaises(StartupError) as cm:
            build_orchestrator(MemoryReactorClock(), config, docker=FakeDockerGateway())
        self.assertIn("chmod o+x", str(cm.exception))

    def test_missing_keys_stop_startup_with_advice(self) -> None:
        """Without keys the component refuses to start and says to run `director init`."""
        config = initialised(self)
        for path in config.auth.keys_dir.iterdir():
            path.unlink()
        with self.assertRaises(StartupError) as cm:
            build_manager(MemoryReactorClock(), config)
        self.assertIn("director init", str(cm.exception))
        with self.assertRaises(StartupError) as cm:
            build_shell(MemoryReactorClock(), config)
        self.assertIn("ssh_host_ed25519_key", str(cm.exception))

    def test_unreadable_or_corrupt_key(self) -> None:
        """A corrupt or unreadable host key names the file."""
        config = initialised(self)
        key = config.shell.host_keys_dir / "ssh_host_rsa_key"
        key.write_text("garbage")
        with self.assertRaises(StartupError) as cm:
            build_shell(MemoryReactorClock(), config)
        self.assertIn(str(key), str(cm.exception))
        key.unlink()
        key.mkdir()
        with self.assertRaises(StartupError) as cm:
            build_shell(MemoryReactorClock(), config)
        self.assertIn("cannot read", str(cm.exception))

    def test_init_keeps_existing_keys(self) -> None:
        """Re-running `director init` never replaces keys or the config."""
        config = initialised(self)
        before = (config.auth.keys_dir / "manager.key").read_bytes()
        assert config.source is not None
        self.assertEqual(
            director_main(["init", "--config", str(config.source), "--set", "manager.port=1"]), 0
        )
        self.assertEqual((config.auth.keys_dir / "manager.key").read_bytes(), before)
        self.assertEqual(load_config(config.source).manager.port, 8000)

    def test_init_refuses_bad_settings_and_writes_nothing(self) -> None:
        """A bad --set value is reported and no file is written."""
        base = Path(self.mktemp())
        code = director_main(
            ["init", "--config", str(base / "d.toml"), "--set", "manager.port=99999"]
        )
        self.assertEqual(code, 1)
        self.assertFalse(base.exists())


class _RefusingEndpoint:
    def listen(self, factory):
        from twisted.internet.defer import fail

        return fail(CannotListenError("127.0.0.1", 8000, OSError(98, "Address already in use")))


class ListeningServiceTests(SynchronousTestCase):
    def test_port_in_use_is_one_line(self) -> None:
        """A port that cannot be bound becomes a StartupError naming the config key."""
        service = ListeningService(
            MemoryReactorClock(), "manager web", "127.0.0.1", 8000, None, "manager.port"
        )
        service.endpoint = _RefusingEndpoint()
        with self.assertRaises(StartupError) as cm:
            service.privilegedStartService()
        message = str(cm.exception)
        self.assertIn("127.0.0.1:8000", message)
        self.assertIn("Address already in use", message)
        self.assertIn("manager.port", message)

    def test_top_service_exits_with_status_1(self) -> None:
        """Under twistd the StartupError becomes exit status 1, not a traceback."""
        service = ListeningService(
            MemoryReactorClock(), "manager web", "127.0.0.1", 8000, None, "manager.port"
        )
        service.endpoint = _RefusingEndpoint()
        top = ExitOnStartupError(service)
        with self.assertRaises(SystemExit) as cm:
            top.privilegedStartService()
        self.assertEqual(cm.exception.code, 1)
