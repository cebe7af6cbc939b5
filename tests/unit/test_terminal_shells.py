"""
The terminal's choice of shell (director.contract.terminals): a closed set, the database
client's command with its password kept off the command line, and the orchestrator's route
refusing what it must before anything starts.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from director.clients import OrchestratorClient
from director.common.threads import InlineRunner
from director.contract import DatabaseHost
from director.contract.errors import ValidationError
from director.contract.terminals import NoDatabase, parse_shell, shell_command
from director.orchestrator.sites import HostedSite
from director.orchestrator.web import OrchestratorAPI
from tests.unit.test_orchestrator_runtime import RuntimeTestCase

PASSWORD = "pa ss'$(touch /tmp/x)\"w0rd"


def database_env(kind: str) -> dict[str, str]:
    host = DatabaseHost(kind, "127.0.0.1", 5432, "admin", "x", "172.17.0.1")  # type: ignore[arg-type]
    return host.site_database("site_7", "site_7", PASSWORD).environment()


class ShellChoiceTests(SynchronousTestCase):
    def test_the_choices(self) -> None:
        self.assertEqual(parse_shell(None), "login")
        self.assertEqual(parse_shell(""), "login")
        self.assertEqual(parse_shell("login"), "login")
        self.assertEqual(parse_shell("database"), "database")
        for bad in ("psql", "Database", "database ", "login;sh", 1, ["database"], "../x"):
            with self.assertRaises(ValidationError) as caught:
                parse_shell(bad)
            self.assertEqual(caught.exception.code, "bad_shell")

    def test_psql_gets_its_login_from_the_environment(self) -> None:
        argv, env = shell_command("database", database_env("postgres"))
        self.assertNotIn(PASSWORD, " ".join(argv))
        self.assertTrue(argv[-1].endswith("exec psql"))
        self.assertEqual(env["PGPASSWORD"], PASSWORD)
        self.assertEqual(
            (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]),
            ("172.17.0.1", "5432", "site_7", "site_7"),
        )

    def test_mysql_gets_its_password_from_the_environment(self) -> None:
        argv, env = shell_command("database", database_env("mysql"))
        self.assertNotIn(PASSWORD, " ".join(argv))
        self.assertIn("exec mysql --protocol=tcp", argv[-1])
        self.assertEqual(env, {"MYSQL_PWD": PASSWORD})

    def test_a_site_without_a_database_has_no_database_shell(self) -> None:
        for env in ({}, {"DIRECTOR_DATABASE_TYPE": "postgres"}, {"DIRECTOR_DATABASE_TYPE": "x"}):
            with self.assertRaises(NoDatabase) as caught:
                shell_command("database", env)
            self.assertEqual(caught.exception.code, "no_database")
        self.assertEqual(shell_command("login", {})[1], {})

    def test_the_clients_path(self) -> None:
        self.assertEqual(OrchestratorClient.terminal_path(3), "/ws/sites/3/terminal")
        self.assertEqual(
            OrchestratorClient.terminal_path(3, "database"), "/ws/sites/3/terminal?shell=database"
        )
        with self.assertRaises(ValidationError):
            OrchestratorClient.terminal_path(3, "bash")  # type: ignore[arg-type]


class TerminalRouteTests(RuntimeTestCase):
    def get(self, path: str) -> tuple[int, Any]:
        api = OrchestratorAPI(self.runtime, InlineRunner(), reactor=self.reactor)
        treq: Any = StubTreq(api.app.resource())
        response = self.successResultOf(treq.get(f"http://o{path}"))
        body = self.successResultOf(response.content())
        try:
            return response.code, json.loads(body)
        except ValueError:
            return response.code, body

    def add(self, site_id: int, env: dict[str, str]) -> None:
        site = HostedSite(id=site_id, name=f"s{site_id}", type="static", env=env)
        d = self.runtime.apply(site)
        self.settle()
        self.successResultOf(d)

    def test_refusals_come_before_the_upgrade(self) -> None:
        """A bad choice is 400, a database shell without a database 409; nothing runs."""
        self.add(5, {})
        self.add(6, database_env("postgres"))
        for path, code, error in (
            ("/ws/sites/5/terminal?shell=bash", 400, "bad_shell"),
            ("/ws/sites/5/terminal?shell=database", 409, "no_database"),
            ("/ws/sites/9/terminal?shell=database", 404, "unknown_site"),
        ):
            status, answer = self.get(path)
            self.assertEqual((status, answer["error"]), (code, error), path)
        self.assertEqual(self.docker.execs, {})
        # What passes the checks goes on to the websocket upgrade (426 without one).
        for path in ("/ws/sites/5/terminal", "/ws/sites/6/terminal?shell=database"):
            self.assertEqual(self.get(path)[0], 426, path)


class DocumentTests(SynchronousTestCase):
    def test_the_openapi_document_names_the_choices(self) -> None:
        from director.manager.openapi import document

        terminal = document()["x-websockets"]["/ws/sites/{name}/terminal"]
        shell = next(p for p in terminal["parameters"] if p["name"] == "shell")
        self.assertEqual(shell["schema"]["enum"], ["login", "database"])
        self.assertEqual(set(terminal["responses"]), {"101", "400", "409"})


class TerminalProtocolTests(SynchronousTestCase):
    def protocol(self, shell: str, env: dict[str, str]) -> Any:
        from types import SimpleNamespace

        from director.orchestrator.streams import TerminalProtocol

        site = HostedSite(id=6, name="s6", type="static", env=env)
        protocol = TerminalProtocol()
        runtime = SimpleNamespace(get=lambda site_id: site)
        protocol.factory = SimpleNamespace(shell=shell, runtime=runtime, site_id=6)
        return protocol, site

    def test_the_exec_gets_the_clients_login_in_its_environment(self) -> None:
        protocol, site = self.protocol("database", database_env("mysql"))
        self.assertEqual(protocol.exec_env(site), {"MYSQL_PWD": PASSWORD})
        protocol, site = self.protocol("login", database_env("mysql"))
        self.assertEqual(protocol.exec_env(site), {})

    def test_a_database_gone_since_the_route_checked_is_an_error(self) -> None:
        """Nothing is started: the failure goes to the socket as {"error"} and a close."""
        from twisted.internet.defer import Deferred

        protocol, _ = self.protocol("database", {})
        failure = self.failureResultOf(Deferred.fromCoroutine(protocol._start()))
        self.assertIsInstance(failure.value, NoDatabase)
