"""
The bundled database servers: their access rules, command lines and administrator set-up
(plain values), what `director init` registers, and the supervisor's adoption and stop with
a memory reactor. Starting real servers is tested in tests/integration/test_bundled_databases.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from director.cli import main as director_main
from director.common.config import load_config
from director.common.threads import InlineRunner
from director.orchestrator.bundled_databases import (
    BundledDatabase,
    BundledDatabaseError,
    ServerSettings,
    bundled_settings,
    mysql_init_sql,
    pg_hba,
    running_pid,
    server_argv,
)


def settings(tmp: Path, kind: str = "postgres") -> ServerSettings:
    return ServerSettings(kind, tmp / kind, 15432, ("127.0.0.1", "172.17.0.1"))


class ValuesTests(SynchronousTestCase):
    def test_containers_never_log_in_as_administrator(self) -> None:
        """Containers may use a password as a site user; the administrator is refused first."""
        lines = pg_hba(settings(Path("/x"))).splitlines()
        reject = lines.index("host all postgres 172.16.0.0/12 reject")
        self.assertLess(reject, lines.index("host all all 172.16.0.0/12 scram-sha-256"))
        self.assertNotIn("host all all 0.0.0.0/0", "\n".join(lines))

    def test_mysql_administrator_from_this_host_only(self) -> None:
        sql = mysql_init_sql(settings(Path("/x"), "mysql"), "Pw-123_x")
        self.assertIn("CREATE USER IF NOT EXISTS 'director'@'127.0.0.1' IDENTIFIED BY", sql)
        self.assertIn("ALTER USER 'director'@'127.0.0.1' IDENTIFIED BY 'Pw-123_x'", sql)
        self.assertNotIn("'%'", sql)
        with self.assertRaises(BundledDatabaseError):
            mysql_init_sql(settings(Path("/x"), "mysql"), "x'; DROP USER root; --")

    def test_command_lines_listen_where_configured(self) -> None:
        pg = server_argv(settings(Path("/x")), Path("/usr/lib/postgresql/15/bin"))
        self.assertIn("listen_addresses=127.0.0.1,172.17.0.1", pg)
        self.assertEqual(pg[pg.index("-p") + 1], "15432")
        if os.access("/usr/sbin/mariadbd", os.X_OK):
            my = server_argv(settings(Path("/x"), "mysql"))
            self.assertIn("--bind-address=127.0.0.1,172.17.0.1", my)
            self.assertIn("--port=15432", my)
            self.assertIn("--init-file=/x/mysql/init.sql", my)

    def test_a_sites_subnet_elsewhere_is_let_in(self) -> None:
        base = Path(self.mktemp())
        inside = initialised(base / "in")
        self.assertEqual(bundled_settings(inside)[0].container_networks, ("172.16.0.0/12",))
        outside = initialised(base / "out", 'orchestrator.sites_subnet="10.77.0.0/16"')
        self.assertEqual(
            bundled_settings(outside)[0].container_networks, ("172.16.0.0/12", "10.77.0.0/16")
        )
        self.assertIn("host all postgres 10.77.0.0/16 reject", pg_hba(bundled_settings(outside)[0]))

    def test_switched_off(self) -> None:
        base = Path(self.mktemp())
        on = initialised(base / "on")
        self.assertEqual([s.kind for s in bundled_settings(on)], ["postgres", "mysql"])
        off = initialised(base / "off", "orchestrator.bundled_databases=false")
        self.assertEqual(bundled_settings(off), [])


def initialised(base: Path, *extra: str) -> Any:
    args = ["init", "--config", str(base / "d.toml"), "--state-dir", str(base / "var")]
    for setting in extra:
        args += ["--set", setting]
    assert director_main(args) == 0
    return load_config(base / "d.toml")


class InitTests(SynchronousTestCase):
    def hosts(self, config: Any) -> list[tuple[Any, ...]]:
        from director.cli import _result, _store

        return [
            (h.kind, h.admin_host, h.admin_port, h.container_host, h.admin_user)
            for h in _result(_store(config).list_database_hosts())
        ]

    def test_init_registers_the_bundled_servers_once(self) -> None:
        base = Path(self.mktemp())
        config = initialised(
            base, "orchestrator.postgres_port=15432", "orchestrator.mysql_port=13306"
        )
        expected = [
            ("postgres", "127.0.0.1", 15432, "172.17.0.1", "postgres"),
            ("mysql", "127.0.0.1", 13306, "172.17.0.1", "director"),
        ]
        self.assertEqual(self.hosts(config), expected)
        secret = base / "var" / "secrets" / "postgres-admin-password"
        self.assertEqual(secret.stat().st_mode & 0o777, 0o600)
        password = secret.read_text()
        initialised(base)  # again: nothing new, the same password
        self.assertEqual(self.hosts(config), expected)
        self.assertEqual(secret.read_text(), password)

    def test_switching_off_unregisters_unused_servers(self) -> None:
        base = Path(self.mktemp())
        config = initialised(base)
        text = (base / "d.toml").read_text()
        (base / "d.toml").write_text(
            text.replace("bundled_databases = true", "bundled_databases = false")
        )
        initialised(base)
        self.assertEqual(self.hosts(config), [])


class SupervisorTests(SynchronousTestCase):
    def test_adopts_a_running_server_and_stops_it(self) -> None:
        """A server left by an earlier run (its pid file) is adopted, not started twice."""
        server = settings(Path(self.mktemp()))
        server.data_dir.mkdir(parents=True)
        # a stand-in server whose command line names the data directory, as postgres's does
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", str(server.data_dir)]
        )
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)  # a no-op once it has ended
        server.pid_file.write_text(f"{process.pid}\n")
        for _ in range(500):  # until its exec has finished (slow on a loaded machine)
            if running_pid(server) == process.pid:
                break
            time.sleep(0.02)
        self.assertEqual(running_pid(server), process.pid)
        reactor = MemoryReactorClock()
        supervisor = BundledDatabase(reactor, server, Path("/nonexistent"), InlineRunner())
        supervisor.startService()
        reactor.running = True
        for hook in reactor.whenRunningHooks:
            hook[0](*hook[1], **hook[2])
        self.assertEqual(supervisor.pid, process.pid)
        # (a memory reactor cannot spawn processes: a start would have failed the check)
        self.assertEqual(self.flushLoggedErrors(), [])
        d = supervisor.stopService()
        process.wait(10)  # SIGINT ended it
        reactor.advance(0.1)
        self.successResultOf(d)
        # PostgreSQL's fast shutdown signal (Python turns it into KeyboardInterrupt, exit 1)
        self.assertIn(process.returncode, (1, -signal.SIGINT))

    def test_stale_pid_file_is_not_a_server(self) -> None:
        server = settings(Path(self.mktemp()))
        server.data_dir.mkdir(parents=True)
        server.pid_file.write_text(f"{os.getpid()}\n")  # this test process: another command
        self.assertIsNone(running_pid(server))
