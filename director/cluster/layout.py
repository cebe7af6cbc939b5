"""
Where a cluster's parts live and which addresses they have: names and numbers only, no I/O.

A cluster is named by a prefix (its namespaces, links, hostnames and directories all start
with it) and numbered by an octet (its addresses): C{make cluster} and the tests use different
ones, so they never collide. Every address is in 10.0.0.0/8 ranges the host's engine does not
use (it uses 172.16.0.0/12): the hub 10.77.<octet>.0/24 (the host 10.77.<octet>.254, node N
10.77.<octet>.N), and per node slices of 10.88-10.91 for its sites network, its docker0, its
engine's address pool and (node 1) the swarm's overlay pool.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_NODES = 8
MAX_OCTET = 31
API_PORT = 8100
NGINX_PORT = 8180
#: the port of the host's mirror proxy, on the host's hub address (apt-cacher-ng's)
MIRROR_PORT = 3142

_PREFIX = re.compile(r"[a-z][a-z0-9]{0,7}")


class LayoutError(ValueError):
    """A prefix, node count or octet that cannot make a cluster."""


@dataclass(frozen=True)
class Layout:
    prefix: str = "dcl"
    nodes: int = 2
    octet: int = 0
    root: Path = field(default=Path("/var/lib/director-cluster"))
    run: Path = field(default=Path("/run/director-cluster"))

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise LayoutError(
                f"cluster prefix {self.prefix!r}: 1-8 lower-case letters and digits, "
                "starting with a letter (network interface names are short)"
            )
        if not 1 <= self.nodes <= MAX_NODES:
            raise LayoutError(f"a cluster has 1 to {MAX_NODES} nodes, not {self.nodes}")
        if not 0 <= self.octet <= MAX_OCTET:
            raise LayoutError(f"cluster octet: 0 to {MAX_OCTET}, not {self.octet}")

    # -- names ------------------------------------------------------------------------------

    @property
    def numbers(self) -> range:
        return range(1, self.nodes + 1)

    @property
    def hub(self) -> str:
        """The namespace holding the bridge every node (and the host) is plugged into."""
        return f"{self.prefix}-hub"

    def netns(self, n: int) -> str:
        return f"{self.prefix}-n{n}"

    def hostname(self, n: int) -> str:
        """The node's hostname, and so its swarm node name (distinct, or constraints fail)."""
        return f"{self.prefix}-node{n}"

    @property
    def host_link(self) -> str:
        """The host's end of its veth into the hub."""
        return f"{self.prefix}-h"

    @property
    def host_link_peer(self) -> str:
        return f"{self.prefix}-hh"

    def hub_link(self, n: int) -> str:
        """The hub's end of node C{n}'s veth (the node's end is its eth0)."""
        return f"{self.prefix}-{n}h"

    # -- addresses ---------------------------------------------------------------------------

    @property
    def hub_network(self) -> str:
        return f"10.77.{self.octet}.0/24"

    @property
    def host_address(self) -> str:
        return f"10.77.{self.octet}.254"

    def address(self, n: int) -> str:
        return f"10.77.{self.octet}.{n}"

    def _slice(self, n: int) -> int:
        return self.octet * MAX_NODES + n - 1

    def sites_subnet(self, n: int) -> str:
        return f"10.88.{self._slice(n)}.0/24"

    def bridge_ip(self, n: int) -> str:
        """docker0's address on the node (dockerd --bip)."""
        return f"10.89.{self._slice(n)}.1/24"

    def address_pool(self, n: int) -> str:
        """The node engine's pool for local networks (docker_gwbridge), a /24 in /27s."""
        return f"10.90.{self._slice(n)}.0/24"

    @property
    def overlay_pool(self) -> str:
        return f"10.91.{self.octet * MAX_NODES}.0/21"

    def networks(self) -> list[ipaddress.IPv4Network]:
        """Every network the cluster uses (none may overlap a route the host has)."""
        nets = [self.hub_network, self.overlay_pool]
        for n in self.numbers:
            nets += [self.sites_subnet(n), self.bridge_ip(n), self.address_pool(n)]
        return [ipaddress.IPv4Network(net, strict=False) for net in nets]

    def api_url(self, n: int) -> str:
        return f"http://{self.address(n)}:{API_PORT}"

    def nginx_address(self, n: int) -> str:
        return f"{self.address(n)}:{NGINX_PORT}"

    @property
    def mirror_proxy(self) -> str:
        """The proxy the nodes' image builds reach the Debian mirror through (on the host)."""
        return f"http://{self.host_address}:{MIRROR_PORT}"

    # -- files -------------------------------------------------------------------------------

    @property
    def base(self) -> Path:
        """Everything the cluster keeps on disk (removed by C{down})."""
        return self.root / self.prefix

    @property
    def state_file(self) -> Path:
        return self.base / "state.json"

    @property
    def run_dir(self) -> Path:
        return self.run / self.prefix

    @property
    def keys_dir(self) -> Path:
        """The signing keys all the cluster's orchestrators (and their manager) share."""
        return self.base / "keys"

    @property
    def images(self) -> Path:
        return self.base / "images.tar"

    @property
    def backup_repository(self) -> Path:
        """
        The restic repository the manager and every node's orchestrator share (each node
        backs up its own sites): one repository, as on a single machine, so retention and a
        whole-installation restore see every site.
        """
        return self.base / "backups" / "restic"

    @property
    def backup_password_file(self) -> Path:
        return self.base / "backups" / "restic-password"

    def node_dir(self, n: int) -> Path:
        return self.base / f"n{n}"

    def data_root(self, n: int) -> Path:
        return self.node_dir(n) / "docker"

    def exec_root(self, n: int) -> Path:
        return self.run_dir / f"n{n}"

    def socket(self, n: int) -> Path:
        return self.exec_root(n) / "docker.sock"

    def docker_url(self, n: int) -> str:
        return f"unix://{self.socket(n)}"

    def pidfile(self, n: int) -> Path:
        return self.exec_root(n) / "docker.pid"

    def config(self, n: int) -> Path:
        """Node C{n}'s orchestrator's director.toml."""
        return self.node_dir(n) / "director.toml"

    def state_dir(self, n: int) -> Path:
        """Node C{n}'s orchestrator's director.state_dir."""
        return self.node_dir(n) / "var"

    def log(self, n: int, what: str) -> Path:
        return self.node_dir(n) / f"{what}.log"

    def orchestrator_settings(self, n: int) -> dict[str, str]:
        """The config settings (TOML values) of node C{n}'s orchestrator."""
        return {
            "auth.keys_dir": f'"{self.keys_dir}"',
            "shell.host_keys_dir": f'"{self.keys_dir}"',
            "orchestrator.host": f'"{self.address(n)}"',
            "orchestrator.port": str(API_PORT),
            "orchestrator.url": f'"{self.api_url(n)}"',
            "orchestrator.nginx_port": str(NGINX_PORT),
            "orchestrator.sites_subnet": f'"{self.sites_subnet(n)}"',
            "orchestrator.docker_url": f'"{self.docker_url(n)}"',
            "orchestrator.swarm_manager_url": '""' if n == 1 else f'"{self.docker_url(1)}"',
            "orchestrator.node": f'"{self.hostname(n)}"',
            "orchestrator.bundled_databases": "false",
            "orchestrator.build_proxy": f'"{self.mirror_proxy}"',
            "backup.repository": f'"{self.backup_repository}"',
            "backup.password_file": f'"{self.backup_password_file}"',
        }
