"""
Keys on disk: each component's signing key pair and the SSH host keys.

Layout of C{keys_dir}: C{<component>.key} (Ed25519 private key, PEM, mode 0600) on the
machines that run that component, C{<component>.pub} (public key, PEM) for every component,
C{ssh_host_ed25519_key} and C{ssh_host_rsa_key} (OpenSSH format, 0600) for the shell.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from director.common.atomic import atomic_write
from director.common.config import COMPONENTS
from director.common.errors import StartupError

SSH_HOST_KEYS = ("ssh_host_ed25519_key", "ssh_host_rsa_key")


class KeyFileError(StartupError):
    """A key cannot be used; the message says which file and what to do."""


def generate_component_keys(keys_dir: Path, components: tuple[str, ...] = COMPONENTS) -> None:
    """Create signing key pairs for C{components} that have none yet (never overwrite)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    for name in components:
        private_path = keys_dir / f"{name}.key"
        if private_path.exists():
            continue
        key = ed25519.Ed25519PrivateKey.generate()
        atomic_write(
            private_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
            durable=True,
        )
        (keys_dir / f"{name}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def generate_ssh_host_keys(keys_dir: Path) -> None:
    """Create the shell's persistent host keys that are missing."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name in SSH_HOST_KEYS:
        path = keys_dir / name
        if path.exists():
            continue
        key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        if "ed25519" in name:
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        atomic_write(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
            0o600,
            durable=True,
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: {what} is missing (run `director init` to create it)"
        ) from None
    except OSError as e:
        raise KeyFileError(
            f"{path}: cannot read {what}: {e.strerror} (check its permissions)"
        ) from None


def load_private_key(keys_dir: Path, component: str) -> ed25519.Ed25519PrivateKey:
    """The signing key C{component} uses to prove who it is."""
    path = keys_dir / f"{component}.key"
    data = _read(path, f"the {component} private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(
            f"{path}: not a PEM private key (restore it or re-run `director init`)"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key")
    return key


def load_public_keys(keys_dir: Path) -> dict[str, ed25519.Ed25519PublicKey]:
    """The public keys of every component that has a C{.pub} file in C{keys_dir}."""
    keys: dict[str, ed25519.Ed25519PublicKey] = {}
    for name in COMPONENTS:
        path = keys_dir / f"{name}.pub"
        if not path.exists():
            continue
        try:
            key = serialization.load_pem_public_key(_read(path, f"the {name} public key"))
        except ValueError:
            raise KeyFileError(f"{path}: not a PEM public key") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise KeyFileError(f"{path}: expected an Ed25519 public key")
        keys[name] = key
    return keys
