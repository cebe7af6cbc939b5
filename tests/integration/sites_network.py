"""
A sites network (and firewall) of a test's own: a free /24, so the firewall rules a test's
orchestrator installs touch no other run's containers, and everything removed afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.python.failure import Failure

from director.common.threads import InlineRunner
from director.orchestrator.firewall import IptablesFirewall


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    routes = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "route", "show", "table", "all"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            try:
                used.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                pass
    ids = subprocess.run(
        ["docker", "network", "ls", "-q"], capture_output=True, text=True, check=True
    ).stdout.split()
    # not check=True: a network removed meanwhile makes inspect fail for that one only
    inspected = json.loads(
        subprocess.run(
            ["docker", "network", "inspect", *ids], capture_output=True, text=True, check=False
        ).stdout
        or "[]"
    )
    for network in inspected:
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet", "").count("."):
                used.append(ipaddress.IPv4Network(config["Subnet"], strict=False))
    return used


def free_subnet() -> str:
    """A /24 in 172.28.0.0/16 that no route and no Docker network uses."""
    used = _used_networks()
    candidates = list(ipaddress.IPv4Network("172.28.0.0/16").subnets(new_prefix=24))
    random.shuffle(candidates)
    for candidate in candidates:
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise AssertionError("no free /24 in 172.28.0.0/16")


def network_name() -> str:
    return f"director-test-sites-{os.getpid()}"


def create_legacy_network(name: str, subnet: str) -> None:
    """
    The sites network as orchestrators made it before the firewall: a swarm-scoped bridge
    whose containers may reach each other (the firewall must cover it).
    """
    subprocess.run(
        ["docker", "network", "create", "--config-only", "--subnet", subnet, f"{name}-config"],
        capture_output=True,
        check=True,
    )
    subprocess.run(
        [
            "docker", "network", "create", "--scope", "swarm", "--attachable",
            "--driver", "bridge", "--config-from", f"{name}-config", name,
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip


def _firewall_call(method: str, subnet: str) -> Any:
    results: list[Any] = []
    d = getattr(IptablesFirewall(InlineRunner()), method)(subnet)
    d.addBoth(results.append)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def firewall_installed(subnet: str) -> bool:
    """Whether this machine has a sites firewall for C{subnet}."""
    return bool(_firewall_call("rules", subnet) is not None)


def remove_firewall(subnet: str) -> None:
    _firewall_call("remove", subnet)


def remove_network(name: str, subnet: str, timeout: float = 60) -> None:
    """Remove the firewall for C{subnet} and the network (once swarm let go of it)."""
    remove_firewall(subnet)
    deadline = time.monotonic() + timeout
    for each in (name, f"{name}-config"):
        while True:
            subprocess.run(["docker", "network", "rm", each], capture_output=True, check=False)
            gone = subprocess.run(
                ["docker", "network", "inspect", each], capture_output=True, check=False
            )
            if gone.returncode != 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"docker network {each} stayed")
            time.sleep(0.5)


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], capture_output=True, check=True, timeout=30)


@contextmanager
def link_local() -> Iterator[tuple[str, str, int]]:
    """
    Link-local addresses of the test's own: a network namespace behind a veth pair, with
    a listener on the far side's address (*beyond* this machine, the way a cloud's metadata
    service is: traffic from sites to it is forwarded, not delivered to the host). Yields
    the host side's address (a link-local address of this machine, as a metadata proxy on
    the host would have), the far side's address and the listener's port.
    """
    tag = os.getpid() % 100000
    ns, outside, inside = f"dllns{tag}", f"dllh{tag}", f"dlln{tag}"
    octet = random.randint(200, 249)
    host_side, far_side, port = f"169.254.{octet}.253", f"169.254.{octet}.254", 8000
    _ip("netns", "add", ns)
    listener: subprocess.Popen[str] | None = None
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("addr", "add", f"{host_side}/30", "dev", outside)
        _ip("link", "set", outside, "up")
        for argv in (
            ("addr", "add", f"{far_side}/30", "dev", inside),
            ("link", "set", inside, "up"),
            ("link", "set", "lo", "up"),
            ("route", "add", "default", "via", host_side),
        ):
            _ip("netns", "exec", ns, "ip", *argv)
        listener = subprocess.Popen(
            [
                "ip", "netns", "exec", ns, sys.executable, "-c",
                "import socket, time\n"
                "s = socket.socket()\n"
                f"s.bind(({far_side!r}, {port}))\n"
                "s.listen(16)\n"
                "print('ready', flush=True)\n"
                "time.sleep(600)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        yield host_side, far_side, port
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=10)
        subprocess.run(["ip", "link", "del", outside], capture_output=True, check=False)
        _ip("netns", "del", ns)
