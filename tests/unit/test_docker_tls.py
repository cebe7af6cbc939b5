"""
TLS to a tcp:// Docker engine: the config's three keys (all or none, files that exist, a
tcp:// URL to use them) and the clients the gateway makes with them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from director.common.config import ConfigError, parse_config
from director.common.threads import InlineRunner
from director.orchestrator.docker_gateway import DockerGateway
from director.orchestrator.docker_tls import docker_tls


class DockerTLSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.files = {}
        for name in ("ca", "cert", "key"):
            path = self.dir / f"{name}.pem"
            path.write_text("-----BEGIN PLACEHOLDER-----\n")
            self.files[name] = str(path)

    def config(self, **keys: str) -> str:
        lines = ["[orchestrator]"] + [f'{k} = "{v}"' for k, v in keys.items()]
        return "\n".join(lines) + "\n"

    def error(self, text: str) -> str:
        with self.assertRaises(ConfigError) as cm:
            parse_config(text, self.dir)
        return str(cm.exception)

    def all_three(self, **extra: str) -> str:
        return self.config(
            docker_url="tcp://10.0.0.2:2376",
            docker_tls_ca=self.files["ca"],
            docker_tls_cert=self.files["cert"],
            docker_tls_key=self.files["key"],
            **extra,
        )

    def test_none_is_plain(self) -> None:
        section = parse_config(self.config(docker_url="tcp://10.0.0.2:2375"), self.dir).orchestrator
        self.assertIsNone(docker_tls(section))

    def test_all_three_or_none(self) -> None:
        message = self.error(
            self.config(
                docker_url="tcp://10.0.0.2:2376",
                docker_tls_ca=self.files["ca"],
                docker_tls_key=self.files["key"],
            )
        )
        self.assertIn(
            "orchestrator.docker_tls_cert: needed with orchestrator.docker_tls_ca", message
        )

    def test_files_must_exist(self) -> None:
        missing = str(self.dir / "nope.pem")
        text = self.all_three().replace(self.files["key"], missing)
        self.assertEqual(self.error(text), f"orchestrator.docker_tls_key: {missing} is not a file")

    def test_paths_are_absolute(self) -> None:
        text = self.all_three().replace(self.files["ca"], "ca.pem")
        self.assertIn("orchestrator.docker_tls_ca: expected an absolute path", self.error(text))

    def test_only_for_a_tcp_engine(self) -> None:
        text = self.all_three().replace("tcp://10.0.0.2:2376", "unix:///run/docker.sock")
        self.assertIn("neither orchestrator.docker_url nor", self.error(text))

    def test_clients_speak_tls_with_the_files(self) -> None:
        section = parse_config(
            self.all_three(swarm_manager_url="tcp://10.0.0.1:2376"), self.dir
        ).orchestrator
        tls = docker_tls(section)
        gateway = DockerGateway(
            InlineRunner(),
            docker_url=section.docker_url,
            manager_url=section.swarm_manager_url,
            tls=tls,
        )
        for client in (gateway._c(), gateway._m()):
            self.assertTrue(client.base_url.startswith("https://"), client.base_url)
            self.assertEqual(client.cert, (self.files["cert"], self.files["key"]))
            self.assertEqual(client.verify, self.files["ca"])
        self.assertEqual(gateway._c().base_url, "https://10.0.0.2:2376")
        self.assertEqual(gateway._m().base_url, "https://10.0.0.1:2376")
        # the health probe's own clients too
        probe_client = gateway._probe._make_local()
        self.assertEqual(probe_client.base_url, "https://10.0.0.2:2376")
        self.assertEqual(probe_client.cert, (self.files["cert"], self.files["key"]))
