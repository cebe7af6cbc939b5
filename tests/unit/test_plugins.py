"""The twistd plugins: discoverable, lazy, and never installing the global reactor."""

import subprocess
import sys
import textwrap
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]
TAPNAMES = {
    "director",
    "director-manager",
    "director-orchestrator",
    "director-router",
    "director-shell",
}


class PluginTests(SynchronousTestCase):
    def test_plugins_found_without_installing_a_reactor(self) -> None:
        """
        In a fresh interpreter, loading every plugin (and each tap module) finds all five
        Director plugins and leaves the reactor uninstalled, so `twistd --reactor` works.
        (Klein installs the reactor when imported, so service modules, which use it, are
        imported only inside makeService, after twistd has chosen the reactor.)
        """
        script = textwrap.dedent(
            """
            import importlib, sys
            from twisted.plugin import getPlugins
            from twisted.application.service import IServiceMaker
            names = sorted(p.tapname for p in getPlugins(IServiceMaker))
            for p in getPlugins(IServiceMaker):
                if p.tapname.startswith("director"):
                    p.options  # imports director.<component>.tap
            import director.cli, director.checks
            for c in ("manager", "orchestrator", "router", "shell", "combined"):
                importlib.import_module(f"director.{c}.tap")
            print(",".join(n for n in names if n.startswith("director")))
            print("twisted.internet.reactor" in sys.modules)
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        self.assertEqual(set(out[0].split(",")), TAPNAMES)
        self.assertEqual(out[1], "False")

    def test_plugin_files_are_one_statement(self) -> None:
        """Each plugin module is one ServiceMaker line (plus its import), nothing else."""
        plugins = sorted((ROOT / "twisted" / "plugins").glob("director_*.py"))
        self.assertEqual(len(plugins), 5)
        self.assertFalse((ROOT / "twisted" / "plugins" / "__init__.py").exists())
        for path in plugins:
            code = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and not line.startswith(("from ", "import ", "#", " ", ")"))
            ]
            self.assertEqual(len(code), 1, path)
            self.assertIn("ServiceMaker(", code[0])

    def test_no_module_level_reactor_import(self) -> None:
        """No module under director/ imports the global reactor at module level."""
        offenders = [
            str(path)
            for path in (ROOT / "director").rglob("*.py")
            for line in path.read_text().splitlines()
            if line.startswith(
                ("from twisted.internet import reactor", "import twisted.internet.reactor")
            )
        ]
        self.assertEqual(offenders, [])
