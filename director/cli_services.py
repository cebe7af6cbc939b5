"""
The `director` commands that act on this machine's running parts: `stop`, `nginx run`,
`check`, `images bootstrap` and `firewall`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from director.common.config import Config, load_config


def nginx_instances(config: Config) -> list[tuple[str, Any]]:
    """The nginx instances Director runs with C{config}: (what, L{NginxPaths})."""
    from director.common.nginx import NginxPaths
    from director.orchestrator.runtime import RuntimePaths
    from director.router.layout import RouterLayout

    state = config.director.state_dir
    return [
        ("orchestrator nginx", NginxPaths(RuntimePaths(state).nginx)),
        ("router front nginx", NginxPaths(RouterLayout.from_config(config).nginx_prefix)),
    ]


def stop(args: argparse.Namespace) -> int:
    """
    A deliberate stop of what `make run` started: the daemon by its pid file (SIGTERM: it
    stops its nginx and database servers itself), then whatever a daemon that was killed
    left running, by their own pid files.
    """
    import signal

    from director.common import pidfiles
    from director.common.nginx import stop_instance
    from director.orchestrator.bundled_databases import bundled_settings, running_pid

    config = load_config(args.config)
    pid_file = Path(args.pidfile) if args.pidfile else config.director.state_dir / "director.pid"
    code = 0
    pid = pidfiles.running_pid(pid_file, "twistd")
    if pid is not None:
        print(f"stopping the Director daemon (pid {pid})")
        if not pidfiles.stop_pid_blocking(pid, signal.SIGTERM, args.timeout):
            print(f"director: the daemon did not stop within {args.timeout:.0f}s; killed it")
            code = 1
    for what, paths in nginx_instances(config):
        stopped = stop_instance(paths, timeout=args.timeout)
        if stopped is not None:
            print(f"stopped the {what} (pid {stopped})")
    for server in bundled_settings(config):
        server_pid = running_pid(server)
        if server_pid is not None:
            first = signal.SIGINT if server.kind == "postgres" else signal.SIGTERM
            pidfiles.stop_pid_blocking(server_pid, first, args.timeout)
            print(f"stopped the bundled {server.kind} server (pid {server_pid})")
    return code


def nginx_run(args: argparse.Namespace) -> int:
    """
    Run one of Director's nginx instances in the foreground (for its systemd unit): exec
    nginx on the configuration the daemon wrote. Until the daemon first wrote it, or while
    another nginx runs it (one a daemon started itself), wait for that, then start.
    """

    from director.common import pidfiles

    config = load_config(args.config)
    instances = dict(zip(("orchestrator", "router"), nginx_instances(config), strict=True))
    what, paths = instances[args.instance]
    said = ""
    while True:
        pid = pidfiles.running_pid(paths.pid, str(paths.conf))
        if paths.conf.exists() and pid is None:
            break
        why = (
            f"no {what} configuration yet ({paths.conf}); waiting for the daemon to write it"
            if pid is None
            else f"the {what} already runs (pid {pid}); waiting for it to end"
        )
        if why != said:
            print(f"director: {why}", flush=True)
            said = why
        time.sleep(0.2)
    argv = paths.argv()
    os.execv(argv[0], argv)  # noqa: S606 (nginx on our own paths, no shell)
    return 1  # not reached


def check(args: argparse.Namespace) -> int:
    from twisted.internet.task import react

    from director.checks import run_checks

    config = load_config(args.config)
    results: list[tuple[str, bool, str]] = []

    def main(reactor: Any) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(run_checks(reactor, config, results, args.timeout))

    try:
        react(main)
    except SystemExit as e:
        if e.code:
            raise
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name.ljust(width)}  {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def api_command(args: argparse.Namespace, handler: Any) -> int:
    """Run C{handler(args, api)} with the API client of C{args} (--token, --url, --config)."""
    from director.cli_sites import _api

    return int(handler(args, _api(args)))


def firewall_command(args: argparse.Namespace) -> int:
    """Show or remove this machine's sites firewall (the orchestrator installs it)."""
    from twisted.python.failure import Failure

    from director.common.threads import InlineRunner
    from director.orchestrator.firewall import FirewallError, IptablesFirewall

    subnet = load_config(args.config).orchestrator.sites_subnet
    firewall = IptablesFirewall(InlineRunner())
    results: list[Any] = []
    d = firewall.rules(subnet) if args.firewall_command == "show" else firewall.remove(subnet)
    d.addBoth(results.append)
    if isinstance(results[0], Failure):
        results[0].trap(FirewallError)
        print(f"director: {results[0].value}", file=sys.stderr)
        return 1
    if args.firewall_command == "remove":
        done = "removed the" if results[0] else "there is no"
        print(f"{done} sites firewall for {subnet}")
        return 0
    rules = results[0]
    if rules is None:
        print(f"there is no sites firewall for {subnet} (the orchestrator installs it)")
        return 0
    allowed = ", ".join(f"{host}:{port}" for host, port in sorted(rules.allow)) or "nothing"
    print(f"sites firewall for {subnet}")
    print(f"  sites may reach on this machine: {allowed}")
    print(f"  sites never reach: other sites, {', '.join(rules.blocked) or '-'}")
    return 0
