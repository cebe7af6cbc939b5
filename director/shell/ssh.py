"""
The SSH server's transport and factory: persistent host keys, modern algorithms only.

Conch's defaults still offer CBC ciphers, 3DES, HMAC-MD5/SHA-1, SHA-1 and NIST-curve key
exchange and DSA keys; the transport here narrows each list to what audits pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.conch.ssh import connection, factory, keys, userauth
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.cred.portal import Portal

from director.common.errors import StartupError
from director.common.keys import SSH_HOST_KEYS


class DirectorSSHTransport(SSHServerTransport):
    supportedCiphers = [b"aes256-ctr", b"aes192-ctr", b"aes128-ctr"]
    supportedMACs = [b"hmac-sha2-512", b"hmac-sha2-256"]
    supportedKeyExchanges = [
        b"mlkem768x25519-sha256",
        b"curve25519-sha256",
        b"curve25519-sha256@libssh.org",
    ]
    supportedPublicKeys = [b"ssh-ed25519", b"rsa-sha2-512", b"rsa-sha2-256"]


def load_host_keys(keys_dir: Path) -> dict[bytes, keys.Key]:
    """The shell's host keys by SSH key type; missing or unreadable keys stop start-up."""
    loaded: dict[bytes, keys.Key] = {}
    for name in SSH_HOST_KEYS:
        path = keys_dir / name
        try:
            key = keys.Key.fromFile(str(path))
        except FileNotFoundError:
            raise StartupError(
                f"{path}: SSH host key is missing (run `director init` to create it)"
            ) from None
        except (OSError, keys.BadKeyError) as e:
            raise StartupError(f"{path}: cannot read the SSH host key: {e}") from None
        loaded[key.sshType()] = key
    return loaded


class DirectorSSHFactory(factory.SSHFactory):
    protocol = DirectorSSHTransport
    services = {
        b"ssh-userauth": userauth.SSHUserAuthServer,
        b"ssh-connection": connection.SSHConnection,
    }

    def __init__(self, portal: Portal, host_keys: dict[bytes, keys.Key]) -> None:
        self.portal = portal
        self.privateKeys = host_keys
        self.publicKeys = {kind: key.public() for kind, key in host_keys.items()}
        self.primes = None  # no moduli file: fixed groups and curve25519 only

    def buildProtocol(self, addr: Any) -> SSHServerTransport:
        transport = super().buildProtocol(addr)
        # Conch offers every signature algorithm a key supports (ssh-rsa is SHA-1): narrow it.
        transport.supportedPublicKeys = [
            alg
            for alg in DirectorSSHTransport.supportedPublicKeys
            if alg in transport.supportedPublicKeys
        ]
        return transport
