"""
TLS for a tcp:// Docker engine (C{orchestrator.docker_tls_ca}, C{docker_tls_cert},
C{docker_tls_key}): the docker SDK's C{TLSConfig}, which verifies the engine against the CA
and presents the orchestrator's client certificate (dockerd C{--tlsverify}). The config
check (all three or none, each a file) is done when the config is loaded.
"""

from __future__ import annotations

from typing import Any


def docker_tls(section: Any) -> Any:
    """C{docker.tls.TLSConfig} for the orchestrator C{section}'s files; None when not set."""
    if not section.docker_tls_ca:
        return None
    from docker.tls import TLSConfig

    return TLSConfig(
        client_cert=(section.docker_tls_cert, section.docker_tls_key),
        ca_cert=section.docker_tls_ca,
        verify=True,
    )
