"""
C{python -m director.cluster up|down|status}: a swarm of several nodes on this machine, with
an orchestrator on each (what C{make cluster} and C{make cluster-down} run). As root.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from director.cluster.host import HostPorts, banner
from director.cluster.layout import Layout, LayoutError
from director.cluster.nodes import ClusterError, State, down, is_up, up


def _layout(args: argparse.Namespace) -> Layout:
    return Layout(args.prefix, args.nodes, args.octet, Path(args.root), Path(args.run))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m director.cluster", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--prefix", default="dcl", help="names of everything made (default dcl)")
    parser.add_argument("--nodes", type=int, default=2, help="how many nodes (default 2)")
    parser.add_argument(
        "--octet", type=int, default=0, help="the hub network 10.77.<octet>.0/24 (default 0)"
    )
    parser.add_argument("--root", default="/var/lib/director-cluster")
    parser.add_argument("--run", default="/run/director-cluster")
    parser.add_argument(
        "--no-orchestrators", action="store_true", help="only the nodes and the swarm"
    )
    parser.add_argument(
        "--no-host",
        action="store_true",
        help="no managers, routers and shell on the host (only the nodes' orchestrators)",
    )
    args = parser.parse_args(argv)
    try:
        layout = _layout(args)
        if args.command == "up":
            with_host = not (args.no_host or args.no_orchestrators)
            timings = up(
                layout,
                orchestrators=not args.no_orchestrators,
                host=HostPorts() if with_host else None,
            )
            print(f"cluster {layout.prefix!r} is up in {sum(timings.values()):.1f} s")
            _describe(layout)
            if with_host:
                print(banner(layout), end="")
                print(
                    "  cluster status:    director cluster status "
                    f"--cluster-state {layout.state_file}"
                )
        elif args.command == "down":
            if is_up(layout):
                layout = State.load(layout.state_file).layout
            timings = down(layout)
            print(f"cluster {layout.prefix!r} is down ({sum(timings.values()):.1f} s)")
        elif not is_up(layout):
            print(f"cluster {layout.prefix!r} is not up")
            return 1
        else:
            state = State.load(layout.state_file)
            _describe(state.layout)
            print(json.dumps(state.data["processes"], indent=2))
    except (ClusterError, LayoutError) as e:
        print(f"cluster: {e}", file=sys.stderr)
        return 1
    return 0


def _describe(layout: Layout) -> None:
    for n in layout.numbers:
        role = "manager" if n == 1 else "worker"
        print(
            f"node {n} ({layout.hostname(n)}, swarm {role}): engine {layout.docker_url(n)}; "
            f"orchestrator {layout.api_url(n)}, nginx {layout.nginx_address(n)}, "
            f"config {layout.config(n)}"
        )
    print(f"shared keys: {layout.keys_dir}")


if __name__ == "__main__":
    sys.exit(main())
