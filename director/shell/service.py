"""Composition root of the shell server."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.cred.portal import Portal

from director.common.config import Config
from director.common.service import ListeningService
from director.shell.login import RefuseAllChecker, ShellRealm
from director.shell.ssh import DirectorSSHFactory, load_host_keys


def build_service(reactor: Any, config: Config) -> MultiService:
    """The shell server: SSH on shell.host:port with the persistent host keys."""
    top = MultiService()
    top.setName("shell")
    portal = Portal(ShellRealm(), [RefuseAllChecker()])
    factory = DirectorSSHFactory(portal, load_host_keys(config.shell.host_keys_dir))
    ListeningService(
        reactor, "shell SSH", config.shell.host, config.shell.port, factory, "shell.port"
    ).setServiceParent(top)
    return top
