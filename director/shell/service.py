"""Composition root of the shell server."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.cred.portal import Portal

from director.common.client import ComponentClient, HTTPPoolService
from director.common.config import Config, ShellSection
from director.common.service import ListeningService, component_signer
from director.shell.accounts import MANAGER_TIMEOUT, ShellAccounts
from director.shell.avatar import SessionContext, ShellRealm
from director.shell.bridge import BridgeConnector, OpenBridge
from director.shell.login import LoginGate, ManagerKeyChecker, ManagerPasswordChecker
from director.shell.ssh import DirectorSSHFactory, LoginLimits, load_host_keys
from director.shell.throttle import LoginThrottle


def build_ssh_factory(
    clock: Any,
    section: ShellSection,
    accounts: ShellAccounts,
    open_bridge: OpenBridge,
    host_keys: Any,
) -> DirectorSSHFactory:
    """
    The SSH server for C{section}'s settings, asking C{accounts} about logins and sessions
    and reaching sites with C{open_bridge}. Tests call this with in-memory collaborators.
    """
    context = SessionContext(clock, accounts, open_bridge, section.idle_timeout)
    portal = Portal(
        ShellRealm(context), [ManagerPasswordChecker(accounts), ManagerKeyChecker(accounts)]
    )
    throttle = LoginThrottle(
        clock,
        section.max_failures_per_user,
        section.max_failures_per_address,
        section.failure_window,
        section.max_failures_per_account,
    )
    limits = LoginLimits(
        section.login_grace_time, section.max_auth_tries, section.max_unauthenticated_per_address
    )
    return DirectorSSHFactory(
        LoginGate(portal, throttle, clock, section.failure_delay), host_keys, clock, limits
    )


def build_service(reactor: Any, config: Config) -> MultiService:
    """
    The shell server: SSH on shell.host:port with the persistent host keys; logins and
    session tokens from the manager, shells through the orchestrator's bridge.
    """
    top = MultiService()
    top.setName("shell")
    section = config.shell
    host_keys = load_host_keys(section.host_keys_dir)
    signer = component_signer(reactor, config, "shell")
    pool = HTTPPoolService(reactor)
    pool.setServiceParent(top)
    manager = ComponentClient(
        reactor, signer, "manager", config.manager.url, pool.http, timeout=MANAGER_TIMEOUT
    )
    factory = build_ssh_factory(
        reactor, section, ShellAccounts(manager), BridgeConnector(reactor, signer), host_keys
    )
    ListeningService(
        reactor, "shell SSH", section.host, section.port, factory, "shell.port"
    ).setServiceParent(top)
    return top
