"""Configuration parsing: defaults, types, and errors that name the key."""

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from director.common.config import Config, ConfigError, load_config, parse_config

BASE = Path("/srv/director/etc")


class ConfigTests(SynchronousTestCase):
    def error(self, text: str) -> str:
        with self.assertRaises(ConfigError) as cm:
            parse_config(text, BASE)
        return str(cm.exception)

    def test_empty_file_gives_the_documented_defaults(self) -> None:
        """An empty file is a working single-machine config on the design's ports."""
        config = parse_config("", BASE)
        self.assertEqual(config.manager.port, 8000)
        self.assertEqual(config.orchestrator.port, 8100)
        self.assertEqual(config.orchestrator.nginx_port, 8180)
        self.assertEqual(config.router.port, 8200)
        self.assertEqual((config.router.http_port, config.router.https_port), (80, 443))
        self.assertEqual(config.shell.port, 2322)
        self.assertEqual(config.director.sites_domain, "sites.localhost")
        self.assertEqual(config.director.state_dir, BASE / "var")

    def test_values_and_relative_paths(self) -> None:
        """Values are typed, and relative paths are relative to the config file's directory."""
        config = parse_config(
            '[manager]\nport = 9000\n[auth]\nkeys_dir = "k"\nmax_clock_skew = 5\n'
            '[director]\nstate_dir = "/var/lib/director"\n',
            BASE,
        )
        self.assertEqual(config.manager.port, 9000)
        self.assertEqual(config.auth.keys_dir, BASE / "k")
        self.assertEqual(config.auth.max_clock_skew, 5.0)
        self.assertEqual(config.director.state_dir, Path("/var/lib/director"))

    def test_immutable(self) -> None:
        config = parse_config("", BASE)
        with self.assertRaises(AttributeError):
            config.manager.port = 1  # type: ignore[misc]
        self.assertIsInstance(config.replace(), Config)

    def test_errors_name_key_and_expectation(self) -> None:
        """Each bad value is reported with its key and what was expected."""
        cases = {
            '[manager]\nport = "eighty"': "manager.port: expected an integer",
            "[manager]\nport = 70000": "manager.port: expected a port number from 1 to 65535",
            "[manager]\nport = true": "manager.port: expected an integer",
            '[router]\nurl = "ftp://x"': "router.url: expected an http:// or https:// URL",
            '[director]\nsites_domain = "Bad Domain"': "director.sites_domain: expected",
            "[auth]\nmax_clock_skew = -1": "auth.max_clock_skew: expected a positive number",
            "[auth]\nkeys_dir = 3": "auth.keys_dir: expected a path",
            '[shell]\nhost = "a b"': "shell.host: expected an IP address or host name",
            "[manager]\nprot = 1": "manager.prot: unknown setting",
            '[orchestrator]\nname = "Main Node"': "orchestrator.name: expected a lowercase name",
            '[orchestrator]\npublic_nginx = "a:1, b:2"': "orchestrator.public_nginx: expected one",
            '[orchestrator]\npublic_nginx = "a"': "orchestrator.public_nginx: expected host:port",
            "[managr]\nport = 1": "[managr]: unknown section",
            "manager = 3": "[manager]: expected a table",
            "[manager\nport = 1": "not valid TOML",
            '[orchestrator]\nbundled_databases = "no"': "orchestrator.bundled_databases: "
            "expected true or false",
            '[orchestrator]\ndatabases_bridge_host = "docker0"': "orchestrator."
            "databases_bridge_host: expected an IP address",
            "[orchestrator]\npostgres_port = 0": "orchestrator.postgres_port: expected a port",
        }
        for text, message in cases.items():
            self.assertIn(message, self.error(text), text)

    def test_missing_file(self) -> None:
        """A missing config file says how to create one."""
        with self.assertRaises(ConfigError) as cm:
            load_config(Path(self.mktemp()) / "director.toml")
        self.assertIn("director init", str(cm.exception))

    def test_load_from_file(self) -> None:
        path = Path(self.mktemp())
        path.mkdir()
        (path / "d.toml").write_text("[shell]\nport = 2200\n")
        config = load_config(path / "d.toml")
        self.assertEqual(config.shell.port, 2200)
        self.assertEqual(config.source, path / "d.toml")
        self.assertEqual(config.shell.host_keys_dir, path.resolve() / "var/keys")


class ExampleConfigTests(SynchronousTestCase):
    def test_example_documents_every_setting_with_its_default(self) -> None:
        """etc/director.example.toml names every setting, each with the code's default."""
        import dataclasses
        import tomllib

        root = Path(__file__).resolve().parents[2]
        raw = tomllib.loads((root / "etc" / "director.example.toml").read_text())
        example = load_config(root / "etc" / "director.example.toml")
        defaults = Config()
        for section in dataclasses.fields(Config):
            if section.name == "source":
                continue
            names = {f.name for f in dataclasses.fields(getattr(defaults, section.name))}
            self.assertEqual(set(raw[section.name]), names, section.name)
            for name in names:
                value = getattr(getattr(example, section.name), name)
                if not isinstance(value, Path):
                    self.assertEqual(value, getattr(getattr(defaults, section.name), name))

    def test_orchestrator_engines_and_node(self) -> None:
        """An orchestrator on a swarm node names its engine, the manager's and its node."""
        config = parse_config(
            "[orchestrator]\n"
            'docker_url = "unix:///run/n2/docker.sock"\n'
            'swarm_manager_url = "tcp://10.0.0.1:2376"\n'
            'node = "web-2.school"\n',
            BASE,
        )
        self.assertEqual(config.orchestrator.docker_url, "unix:///run/n2/docker.sock")
        self.assertEqual(config.orchestrator.swarm_manager_url, "tcp://10.0.0.1:2376")
        self.assertEqual(config.orchestrator.node, "web-2.school")
        default = parse_config("", BASE).orchestrator
        self.assertEqual((default.docker_url, default.swarm_manager_url, default.node), ("",) * 3)
        for text, expected in {
            'docker_url = "http://10.0.0.1"': "orchestrator.docker_url: expected unix:///",
            'swarm_manager_url = "unix://relative"': "orchestrator.swarm_manager_url: expected",
            'node = "-x"': "orchestrator.node: expected a swarm node's hostname",
            'node = "a b"': "orchestrator.node: expected",
        }.items():
            with self.assertRaises(ConfigError) as cm:
                parse_config(f"[orchestrator]\n{text}\n", BASE)
            self.assertIn(expected, str(cm.exception))
