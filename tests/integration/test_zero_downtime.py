"""
Upgrading Director drops no visitor's request: with both nginx under services of their own
(`director nginx run`, what the director-nginx@ units run) and the daemons supervised
(DIRECTOR_NGINX=supervised, as their units run them), each component in turn (manager,
orchestrator, router, shell) is stopped with SIGTERM, a deliberate stop, and started again,
then all four in one process (`twistd -n director`), killed with SIGKILL and started again,
while visitors load a static and a dynamic site through the router, on new connections and
on a keep-alive one. No request fails; the same nginx serve throughout; the control plane
works afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from request_loop import RequestLoop
from services import free_port
from sites_network import free_subnet, network_name, remove_network
from test_daemon import BIN, Daemon, nginx_pids, start_daemon, stop_nginx, wait_listening
from test_nginx_outlives_daemon import API, front, wait_for

from director.common.config import load_config

SITES = "sites.localhost"
COMPONENTS = ("orchestrator", "router", "manager", "shell")
RUN_SH = b'#!/bin/sh\nexec python3 -m http.server "$PORT" --directory /site/public\n'


class Upgrade:
    """A config of free ports and its own sites network; the processes a test started."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.network, self.subnet = network_name(), free_subnet()
        ports = {c: free_port() for c in ("manager", "orchestrator", "router")}
        settings = [
            *(f"{c}.port={p}" for c, p in ports.items()),
            *(f'{c}.url="http://127.0.0.1:{p}"' for c, p in ports.items()),
            f"orchestrator.nginx_port={free_port()}",
            f"router.http_port={free_port()}",
            f"router.https_port={free_port()}",
            'shell.host="127.0.0.1"',
            f"shell.port={free_port()}",
            "manager.bcrypt_rounds=4",
            "manager.write_burst=100000.0",
            "orchestrator.bundled_databases=false",
            f'orchestrator.sites_network="{self.network}"',
            f'orchestrator.sites_subnet="{self.subnet}"',
        ]
        self.config_path = base / "director.toml"
        args = [str(BIN / "director"), "init", "--config", str(self.config_path)]
        args += ["--state-dir", str(base / "var")]
        for setting in settings:
            args += ["--set", setting]
        subprocess.run(args, check=True, capture_output=True)
        (base / "var").chmod(0o755)
        self.config = load_config(self.config_path)
        self.token = subprocess.run(
            [str(BIN / "director"), "token", "create", "admin", "--config", str(self.config_path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.units: dict[str, subprocess.Popen[bytes]] = {}
        self.daemons: dict[str, Daemon] = {}
        self.env = {**os.environ, "DIRECTOR_NGINX": "supervised"}

    def start_units(self) -> None:
        """Both nginx as their units run them: `director nginx run` waits for the config."""
        for instance in ("orchestrator", "router"):
            out = (self.base / f"nginx-{instance}.out").open("ab")
            config = str(self.config_path)
            self.units[instance] = subprocess.Popen(
                [str(BIN / "director"), "nginx", "run", instance, "--config", config],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            out.close()

    def start(self, component: str) -> Daemon:
        plugin = "director" if component == "all" else f"director-{component}"
        daemon = start_daemon(self.config_path, plugin=plugin, env=self.env)
        self.daemons[component] = daemon
        names = COMPONENTS if component == "all" else (component,)
        wait_listening(daemon, [getattr(self.config, c).port for c in names], 60)
        return daemon

    def stop(self, component: str, sig: int = signal.SIGTERM) -> Daemon:
        daemon = self.daemons.pop(component)
        daemon.process.send_signal(sig)
        daemon.process.wait(60)
        return daemon

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.base.glob("*.log"))
        )

    def close(self) -> None:
        for component in list(self.daemons):
            self.stop(component)
        for unit in self.units.values():
            if unit.poll() is None:
                unit.send_signal(signal.SIGQUIT)  # its own service stops it
                unit.wait(30)
        stop_nginx(self.config)  # any nginx left running (there should be none)
        applied = self.base / "var" / "orchestrator" / "applied"
        for path in applied.glob("*.json"):
            subprocess.run(["docker", "service", "rm", f"site_{path.stem}"], capture_output=True)
        remove_network(self.network, self.subnet)


@pytest.fixture
def upgrade(docker_swarm: Any) -> Iterator[Upgrade]:
    base = Path(tempfile.mkdtemp(prefix="director-zd-", dir="/tmp"))
    base.chmod(0o755)
    u = Upgrade(base)
    try:
        yield u
    finally:
        u.close()
        shutil.rmtree(base, ignore_errors=True)


def test_restarting_each_component_and_all_in_one_drops_no_request(upgrade: Upgrade) -> None:
    u = upgrade
    u.start_units()
    for component in COMPONENTS:
        u.start(component)
    c = u.config
    api = API(u.daemons["manager"], u.token)
    api.finish(api.call("POST", "/api/v1/sites", {"name": "zd-static", "type": "static"}))
    api.call("PUT", "/api/v1/sites/zd-static/files/public/index.html", raw=b"static page")
    api.finish(api.call("POST", "/api/v1/sites", {"name": "zd-dyn", "type": "static"}))
    api.call("PUT", "/api/v1/sites/zd-dyn/files/run.sh?mode=755", raw=RUN_SH)
    api.call("PUT", "/api/v1/sites/zd-dyn/files/public/index.html", raw=b"dynamic page")
    api.finish(api.call("PATCH", "/api/v1/sites/zd-dyn", {"type": "dynamic"}))
    port = c.router.http_port
    static, dynamic = f"zd-static.{SITES}", f"zd-dyn.{SITES}"
    wait_for(lambda: front(port, static) == (200, b"static page"), "the static site", 30)
    wait_for(lambda: front(port, dynamic) == (200, b"dynamic page"), "the dynamic site", 60)
    # the units' nginx, adopted by the daemons (none started one of its own)
    nginx = nginx_pids(c)
    assert nginx == {
        "orchestrator nginx": u.units["orchestrator"].pid,
        "router front nginx": u.units["router"].pid,
    }, (nginx, u.log_tail())

    loops = [
        RequestLoop(port, static, b"static page").start(),
        RequestLoop(port, dynamic, b"dynamic page").start(),
    ]
    counts: dict[str, list[int]] = {}

    def mark(step: str) -> None:
        time.sleep(1.0)  # visitors keep coming on the restarted component
        counts[step] = [loop.ok for loop in loops]
        assert all(loop.failures == [] for loop in loops), (
            step,
            [loop.failures[:5] for loop in loops],
            u.log_tail(),
        )

    try:
        time.sleep(0.5)
        for component in COMPONENTS:
            stopped = u.stop(component)
            if component in ("orchestrator", "router"):
                assert "serving: its own service stops it" in stopped.log_text()
            stopped.log.rename(stopped.log.with_suffix(".before.log"))
            d = u.start(component)
            if component in ("orchestrator", "router"):
                wait_for(lambda d=d: "adopted" in d.log_text(), f"{component} adopting nginx")
            mark(component)
        for component in COMPONENTS:
            u.stop(component).log.rename(u.base / f"director-{component}.first.log")
        d = u.start("all")
        wait_for(lambda: d.log_text().count("adopted") >= 2, "the daemon adopting both nginx")
        mark("all in one")
        u.stop("all", signal.SIGKILL)
        d = u.start("all")
        wait_for(lambda: d.log_text().count("adopted") >= 2, "the daemon adopting both nginx")
        mark("all in one, after SIGKILL")
        # the control plane works: a restart of the dynamic site, still without a gap
        api = API(d, u.token)
        api.finish(api.call("POST", "/api/v1/sites/zd-dyn/restart"))
        mark("a site restart")
    finally:
        for loop in loops:
            loop.stop()
    assert nginx_pids(c) == nginx  # the same nginx served throughout
    for loop in loops:
        assert loop.failures == [], loop.failures[:10]
    print(f"requests answered (static, dynamic) after each step: {counts}")
    steps = list(counts.values())
    for before, after in zip([[0, 0], *steps], steps, strict=False):
        assert after[0] > before[0] + 20 and after[1] > before[1] + 20, counts
