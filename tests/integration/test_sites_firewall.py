"""
The real sites firewall (iptables, as root) passes the same contract as the fake, puts back
what someone removed, and a sites network made now has Docker's inter-container traffic
turned off. Each test uses a subnet no route or Docker network uses, and removes its rules.
(What sites can and cannot reach through it: tests/integration/test_orchestrator.py.)
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from sites_network import free_subnet, network_name, remove_network

from director.cli import main as director_main
from director.common.threads import BlockingPool, InlineRunner
from director.orchestrator.docker_gateway import DockerGateway
from director.orchestrator.firewall import IptablesFirewall, SitesFirewall
from director.testing.firewall_contract import CHECKS


@pytest.fixture
def firewall() -> Iterator[IptablesFirewall]:
    from twisted.internet import reactor

    pool = BlockingPool(reactor, "firewall-test", 1, timeout=60)
    pool.startService()
    yield IptablesFirewall(pool)
    pool.stopService()


@pytest.fixture
def subnet() -> Iterator[str]:
    subnet = free_subnet()
    yield subnet
    remove_network(network_name(), subnet)  # the rules, whatever a failed check left


def iptables_s(subnet: str) -> list[str]:
    """The filter table's lines that name C{subnet} (others change as Docker works)."""
    listing = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True)
    return [line for line in listing.stdout.splitlines() if subnet in line]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest_twisted.ensureDeferred
async def test_contract(firewall: IptablesFirewall, subnet: str, check: Any) -> None:
    await check(firewall, subnet)


@pytest_twisted.ensureDeferred
async def test_rules_in_place_and_restored(firewall: IptablesFirewall, subnet: str) -> None:
    """
    The chains are jumped from INPUT and DOCKER-USER for the subnet's packets; a jump or a
    rule someone removed is put back by the next ensure; remove leaves no trace.
    """
    before = iptables_s(subnet)
    rules = SitesFirewall(subnet, frozenset({("172.17.0.1", 5432)}))
    input_chain, forward_chain = rules.chains
    assert await firewall.ensure(rules) is True
    listing = iptables_s(subnet)
    assert f"-A INPUT -s {subnet} -j {input_chain}" in listing
    assert f"-A DOCKER-USER -s {subnet} -j {forward_chain}" in listing
    assert [line for line in listing if line.startswith(f"-A {input_chain} ")] == (
        rules.input_rules()
    )
    assert [line for line in listing if line.startswith(f"-A {forward_chain} ")] == (
        rules.forward_rules()
    )
    subprocess.run(["iptables", "-D", "INPUT", "-s", subnet, "-j", input_chain], check=True)
    subprocess.run(["iptables", "-D", forward_chain, "1"], check=True)
    assert await firewall.ensure(rules) is True
    assert iptables_s(subnet) == listing
    assert await firewall.ensure(rules) is False
    assert await firewall.remove(subnet) is True
    assert iptables_s(subnet) == before == []


@pytest_twisted.ensureDeferred
async def test_new_sites_network_turns_off_inter_container_traffic(
    docker_swarm: Any, subnet: str
) -> None:
    """A sites network made now has enable_icc=false on the bridge it takes its options from."""
    from twisted.internet import reactor

    pool = BlockingPool(reactor, "docker-test", 1, timeout=60)
    pool.startService()
    name = network_name()
    try:
        await DockerGateway(pool).ensure_network(name, subnet)
        inspected = json.loads(
            subprocess.run(
                ["docker", "network", "inspect", f"{name}-config"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )[0]
        assert inspected["Options"]["com.docker.network.bridge.enable_icc"] == "false"
        assert inspected["IPAM"]["Config"][0]["Subnet"] == subnet
    finally:
        pool.stopService()
        remove_network(name, subnet)


def test_cli_show_and_remove(
    subnet: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`director firewall show` says what sites may reach; `remove` takes it away, once."""
    config = tmp_path / "director.toml"
    config.write_text(f'[orchestrator]\nsites_subnet = "{subnet}"\n')
    d = IptablesFirewall(InlineRunner()).ensure(
        SitesFirewall(subnet, frozenset({("172.17.0.1", 5432)}))
    )
    assert d.result is True
    assert director_main(["firewall", "show", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "may reach on this machine: 172.17.0.1:5432" in out
    assert "never reach: other sites, 169.254.0.0/16" in out
    assert director_main(["firewall", "remove", "--config", str(config)]) == 0
    assert "removed the sites firewall" in capsys.readouterr().out
    assert director_main(["firewall", "remove", "--config", str(config)]) == 0
    assert "there is no sites firewall" in capsys.readouterr().out
    assert iptables_s(subnet) == []
