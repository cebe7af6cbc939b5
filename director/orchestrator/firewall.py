"""
The sites firewall: what site containers may reach, enforced with iptables, behind
L{IFirewall}.

For a sites subnet S the orchestrator keeps two chains in the filter table:

- C{DIRECTOR-IN-S}, jumped from C{INPUT} for packets from S (sites to this machine's own
  addresses): replies to connections the host opened (nginx to a site) and the database
  ports sites were granted go on to the host's other rules; everything else is rejected.
- C{DIRECTOR-FW-S}, jumped from C{DOCKER-USER} (Docker's place for user rules, ahead of its
  own; C{FORWARD} when Docker keeps no chains) for packets from S: other site containers (S
  itself, whatever the network's own options) and the blocked networks (link-local by
  default) are rejected; the rest (the internet) is left to Docker's rules.

The chains are rebuilt atomically (C{iptables-restore --noflush}) when they differ from what
is wanted, and only then. Allowed ports already in the chain are kept, so two orchestrators
(or an orchestrator and an earlier run) on one subnet never take each other's away; changes
are serialised between processes with a lock file. L{SitesFirewall} and the rule text are
plain values (no I/O); L{IptablesFirewall} runs the commands in a thread pool;
L{director.testing.fake_firewall.FakeFirewall} passes the same contract
(L{director.testing.firewall_contract}).
"""

from __future__ import annotations

import fcntl
import ipaddress
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from director.common.threads import Runner

#: Destinations sites never reach by default: link-local, where clouds keep instance
#: metadata (169.254.169.254) and credentials.
LINK_LOCAL = "169.254.0.0/16"

_REJECT_TCP = "-p tcp -j REJECT --reject-with tcp-reset"
_REJECT = "-j REJECT --reject-with icmp-port-unreachable"


class FirewallError(Exception):
    """The firewall could not be read or changed; the message is fit for a person."""


def _network(value: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value)
    except ValueError:
        raise FirewallError(f"not an IPv4 network: {value!r}") from None


def chain_names(subnet: str) -> tuple[str, str]:
    """The input and forward chains for sites subnet C{subnet} (at most 28 characters)."""
    net = _network(subnet)
    if net.prefixlen > 24:
        raise FirewallError(f"the sites subnet must be a /24 or larger, not {net}")
    return f"DIRECTOR-IN-{net}", f"DIRECTOR-FW-{net}"


def host_port(host: str, port: int) -> tuple[str, int] | None:
    """C{(host, port)} as an allowance, or None when C{host} is not an IPv4 address."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return None
    if not 1 <= int(port) <= 65535:
        return None
    return str(address), int(port)


@dataclass(frozen=True)
class SitesFirewall:
    """
    What containers on C{subnet} may reach: of this machine's addresses only the TCP ports
    in C{allow} (and replies to connections the host opened); never each other nor the
    networks in C{blocked}.
    """

    subnet: str
    allow: frozenset[tuple[str, int]] = frozenset()
    blocked: tuple[str, ...] = (LINK_LOCAL,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subnet", str(_network(self.subnet)))
        object.__setattr__(self, "blocked", tuple(str(_network(b)) for b in self.blocked))
        chain_names(self.subnet)  # a subnet whose chain names would be too long fails here

    @property
    def chains(self) -> tuple[str, str]:
        """The input and forward chains."""
        return chain_names(self.subnet)

    def input_rules(self) -> list[str]:
        """The input chain as C{iptables -S} lists it."""
        chain = self.chains[0]
        rules = [f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"]
        for host, port in sorted(self.allow, key=lambda a: (ipaddress.IPv4Address(a[0]), a[1])):
            rules.append(f"-A {chain} -d {host}/32 -p tcp -m tcp --dport {port} -j RETURN")
        rules += [f"-A {chain} {_REJECT_TCP}", f"-A {chain} {_REJECT}"]
        return rules

    def forward_rules(self) -> list[str]:
        """The forward chain as C{iptables -S} lists it."""
        chain = self.chains[1]
        rules = []
        for destination in (self.subnet, *self.blocked):
            rules += [
                f"-A {chain} -d {destination} {_REJECT_TCP}",
                f"-A {chain} -d {destination} {_REJECT}",
            ]
        return rules

    def restore_text(self) -> str:
        """Input for C{iptables-restore --noflush}: both chains emptied and refilled at once."""
        lines = ["*filter", *(f":{chain} - [0:0]" for chain in self.chains)]
        lines += self.input_rules() + self.forward_rules() + ["COMMIT", ""]
        return "\n".join(lines)

    def jump(self, chain: str) -> list[str]:
        """The rule (arguments after the parent chain) sending the sites' packets to C{chain}."""
        return ["-s", self.subnet, "-j", chain]

    def jump_line(self, parent: str, chain: str) -> str:
        """That rule in C{parent}, as C{iptables -S} lists it."""
        return f"-A {parent} {' '.join(self.jump(chain))}"


def parse_rules(
    subnet: str, input_lines: list[str] | None, forward_lines: list[str] | None
) -> SitesFirewall | None:
    """
    What the chains listed by C{iptables -S} enforce, or None if there are none. Lines that
    are not Director's own are ignored (so a hand-edited chain is rewritten).
    """
    if input_lines is None and forward_lines is None:
        return None
    input_chain, forward_chain = chain_names(subnet)
    allow = set()
    address = r"(\d+\.\d+\.\d+\.\d+)"
    allowed = re.compile(
        rf"-A {re.escape(input_chain)} -d {address}/32 -p tcp -m tcp --dport (\d+) -j RETURN"
    )
    for line in input_lines or []:
        m = allowed.fullmatch(line.strip())
        if m:
            allow.add((m.group(1), int(m.group(2))))
    blocked = []
    rejected = re.compile(rf"-A {re.escape(forward_chain)} -d (\S+) {re.escape(_REJECT)}")
    own = str(_network(subnet))
    for line in forward_lines or []:
        m = rejected.fullmatch(line.strip())
        if m and m.group(1) != own and m.group(1) not in blocked:
            blocked.append(m.group(1))
    return SitesFirewall(subnet, frozenset(allow), tuple(blocked))


class IFirewall(Interface):
    """The sites firewall. Every method returns a Deferred."""

    def ensure(rules: SitesFirewall) -> Deferred[bool]:
        """
        Make the firewall for C{rules.subnet} enforce C{rules}, keeping ports already allowed
        (allowances are only ever added here); True if anything changed. Idempotent.
        """

    def rules(subnet: str) -> Deferred[SitesFirewall | None]:
        """What the firewall for C{subnet} enforces now, or None if there is none."""

    def remove(subnet: str) -> Deferred[bool]:
        """Remove the firewall for C{subnet} (its chains and the jumps to them); False if none."""


def _chain_lines(lines: Iterable[str], chain: str) -> list[str] | None:
    """The rules of C{chain} in an C{iptables -S} listing, or None if there is no such chain."""
    lines = list(lines)
    if f"-N {chain}" not in lines:
        return None
    return [line for line in lines if line.startswith(f"-A {chain} ")]


@implementer(IFirewall)
class IptablesFirewall:
    """The real firewall: C{iptables}/C{iptables-restore} (as root), run only from C{runner}."""

    def __init__(
        self,
        runner: Runner,
        lock_path: Path = Path("/run/lock/director-firewall.lock"),
        iptables: str = "iptables",
        timeout: float = 30.0,
    ) -> None:
        self._runner = runner
        self._lock_path = lock_path
        self._iptables = iptables
        self._timeout = timeout

    # -- in the pool's thread ----------------------------------------------------------------

    def _must(self, args: list[str], stdin: str | None = None, restore: bool = False) -> str:
        tool = f"{self._iptables}-restore" if restore else self._iptables
        argv = [tool, "-w", "10", *args]
        try:
            result = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=self._timeout
            )
        except FileNotFoundError:
            raise FirewallError(f"{tool} is not installed (Debian package iptables)") from None
        except subprocess.TimeoutExpired:
            raise FirewallError(f"{tool} did not finish within {self._timeout:g} s") from None
        if result.returncode != 0:
            message = result.stderr.strip() or f"exit status {result.returncode}"
            raise FirewallError(f"{' '.join(argv)} failed: {message}")
        return result.stdout

    def _listing(self) -> list[str]:
        """The filter table, as C{iptables -S} lists it."""
        return self._must(["-S"]).splitlines()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write with other processes (another orchestrator, the CLI)."""
        try:
            self._lock_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self._lock_path, "a")
        except OSError as e:
            raise FirewallError(f"cannot open the firewall lock {self._lock_path}: {e}") from None
        with handle:
            deadline = time.monotonic() + self._timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise FirewallError(
                            f"another process held {self._lock_path} for {self._timeout:g} s"
                        ) from None
                    time.sleep(0.05)
            yield

    def _ensure(self, wanted: SitesFirewall) -> bool:
        input_chain, forward_chain = wanted.chains
        with self._locked():
            listing = self._listing()
            current_input = _chain_lines(listing, input_chain)
            current_forward = _chain_lines(listing, forward_chain)
            present = parse_rules(wanted.subnet, current_input, current_forward)
            if present is not None:
                wanted = replace(wanted, allow=wanted.allow | present.allow)
            changed = False
            if current_input != wanted.input_rules() or current_forward != wanted.forward_rules():
                self._must(["--noflush"], wanted.restore_text(), restore=True)
                changed = True
            forward_parent = "DOCKER-USER" if "-N DOCKER-USER" in listing else "FORWARD"
            for parent, chain in (("INPUT", input_chain), (forward_parent, forward_chain)):
                if wanted.jump_line(parent, chain) not in listing:
                    self._must(["-I", parent, "1", *wanted.jump(chain)])
                    changed = True
            return changed

    def _rules(self, subnet: str) -> SitesFirewall | None:
        input_chain, forward_chain = chain_names(subnet)
        listing = self._listing()
        return parse_rules(
            subnet, _chain_lines(listing, input_chain), _chain_lines(listing, forward_chain)
        )

    def _remove(self, subnet: str) -> bool:
        shape = SitesFirewall(subnet, blocked=())
        input_chain, forward_chain = shape.chains
        with self._locked():
            listing = self._listing()
            removed = False
            for parent, chain in (
                ("INPUT", input_chain),
                ("DOCKER-USER", forward_chain),
                ("FORWARD", forward_chain),
            ):
                for _ in range(listing.count(shape.jump_line(parent, chain))):
                    self._must(["-D", parent, *shape.jump(chain)])
                    removed = True
            for chain in (input_chain, forward_chain):
                if f"-N {chain}" in listing:
                    self._must(["-F", chain])
                    self._must(["-X", chain])
                    removed = True
            return removed

    # -- IFirewall ---------------------------------------------------------------------------

    def ensure(self, rules: SitesFirewall) -> Deferred[bool]:
        return self._runner.run(self._ensure, rules)

    def rules(self, subnet: str) -> Deferred[SitesFirewall | None]:
        return self._runner.run(self._rules, subnet)

    def remove(self, subnet: str) -> Deferred[bool]:
        return self._runner.run(self._remove, subnet)
