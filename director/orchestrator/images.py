"""
Site images: the offline base images (`director images bootstrap`) and custom images built
from a parent image plus extra Debian packages.

No registry is reachable, so the base image is made with debootstrap and `docker import`,
and everything else is built locally on top of it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from director.contract.errors import ValidationError
from director.contract.images import validate_setup_commands

BASE_IMAGE = "director/debian:bookworm"
PYTHON_IMAGE = "director/python:3"
NODE_IMAGE = "director/node:18"
PHP_IMAGE = "director/php:8.2"
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,62}$")
CUSTOM_TAG = re.compile(r"^director/site-[0-9]{1,8}:[0-9]{1,12}$")
VERSION_LABEL = "director.image-version"
#: Besides minbase: Python, the servers the shell server runs in a site's container for
#: SFTP/scp (sftp-server), rsync and git (upload-pack/receive-pack), and the database
#: clients the terminal's database shell runs (psql; mariadb-client-core's `mysql`, 27 MB
#: with psql where the whole mariadb-client, with mysqldump and the rest, is 91 MB: a site
#: that wants those adds `mariadb-client` to its extra packages).
BASE_PACKAGES = (
    "python3",
    "ca-certificates",
    "openssh-sftp-server",
    "rsync",
    "git",
    "postgresql-client",
    "mariadb-client-core",
)

SOURCES = """deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
"""

#: What the base image's root file system loses before the import (caches, docs, locales).
TRIMMED = (
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
)

#: What each image built on the base adds (after FROM and the version label).
PYTHON_RECIPE = """RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3-pip python3-venv \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
"""
#: Node.js and PHP from Debian (bookworm: Node.js 18, PHP 8.2), on the same base, so they
#: have the SSH features' tools (sftp-server, rsync, git) and the database clients too.
NODE_RECIPE = """RUN apt-get update \\
 && apt-get install -y --no-install-recommends nodejs npm \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
"""
PHP_RECIPE = """RUN apt-get update \\
 && apt-get install -y --no-install-recommends php-cli php-fpm php-sqlite3 php-pgsql php-mysql \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
"""


def recipe_version(*parts: str) -> str:
    """A digest of everything the base images are made from (their version label)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


#: What the base images contain, as a label on each: `bootstrap` rebuilds images whose label
#: differs. It is a digest of the recipe, so any change to the packages, the sources, the
#: trimming or a derived image's Dockerfile rebuilds them (no number to remember to bump).
IMAGE_VERSION = recipe_version(
    " ".join(BASE_PACKAGES), SOURCES, " ".join(TRIMMED), PYTHON_RECIPE, NODE_RECIPE, PHP_RECIPE
)


def _derived(recipe: str) -> str:
    return f"FROM {BASE_IMAGE}\nLABEL {VERSION_LABEL}={IMAGE_VERSION}\n{recipe}"


PYTHON_DOCKERFILE = _derived(PYTHON_RECIPE)
NODE_DOCKERFILE = _derived(NODE_RECIPE)
PHP_DOCKERFILE = _derived(PHP_RECIPE)

#: The images built on the base, in order: (tag, Dockerfile).
DERIVED_IMAGES = (
    (PYTHON_IMAGE, PYTHON_DOCKERFILE),
    (NODE_IMAGE, NODE_DOCKERFILE),
    (PHP_IMAGE, PHP_DOCKERFILE),
)


class ImageError(ValueError):
    """A custom image request that cannot be built; says what to fix."""


@dataclass(frozen=True)
class ImageRequest:
    """A site's image: a parent from the catalogue plus extra Debian packages."""

    parent: str
    packages: tuple[str, ...]
    #: The catalogue's setup commands for the parent (admin-written, never students'), each
    #: one RUN step, in order, before the packages.
    setup_commands: tuple[str, ...] = ()

    def dockerfile(self) -> str:
        """The Dockerfile for this image. Package names are validated; nothing else is user text."""
        bad = [p for p in self.packages if not PACKAGE.fullmatch(p)]
        if bad:
            raise ImageError(f"not a Debian package name: {bad[0]!r}")
        if len(self.packages) > 100:
            raise ImageError("at most 100 extra packages")
        lines = [f"FROM {self.parent}"]
        lines.extend(f"RUN {command}" for command in check_setup_commands(self.setup_commands))
        if self.packages:
            names = " ".join(sorted(set(self.packages)))
            # Every name is checked against the image's own package index before anything
            # is downloaded, so a misspelt one fails at once and is named (MISSING_MARK).
            lines.append(
                "RUN apt-get update"
                f" && missing='' && for p in {names}; do"
                ' apt-cache show "$p" >/dev/null 2>&1 || missing="$missing $p"; done'
                f' && if [ -n "$missing" ]; then echo "{MISSING_MARK}$missing"; exit 100; fi'
                " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                + names
                + " && apt-get clean && rm -rf /var/lib/apt/lists/*"
            )
        return "\n".join(lines) + "\n"


def check_setup_commands(commands: tuple[str, ...]) -> tuple[str, ...]:
    """The commands (trimmed), each one RUN step of one-line shell; else L{ImageError}."""
    try:
        return validate_setup_commands(list(commands))
    except ValidationError as e:
        raise ImageError(e.reason) from None


#: How the package check names the packages the image's index does not have.
MISSING_MARK = "director: no such package:"
_MISSING = re.compile(re.escape(MISSING_MARK) + r"((?: [a-z0-9][a-z0-9+.-]*)+)")
_UNABLE = re.compile(r"E: (?:Unable to locate package |Package '?)([a-z0-9][a-z0-9+.-]*)")


def build_failure(message: str, log: str, memory_mb: int) -> str:
    """What went wrong with a site image build, in words a student can act on."""
    found = _MISSING.findall(log)
    names = sorted(set(found[-1].split())) if found else sorted(set(_UNABLE.findall(log)))
    if names:
        listed = ", ".join(names)
        which = "package" if len(names) == 1 else "packages"
        return (
            f"Debian has no {which} called {listed} (for this image's Debian version); "
            "check the spelling, for example on packages.debian.org. Nothing was changed."
        )
    if "took longer than" in message:
        return (
            f"The image {message.split('building ', 1)[-1]} and was stopped; try fewer "
            "packages at once. Nothing was changed."
        )
    if "code: 137" in message or "returned a non-zero code: 137" in log:
        return (
            f"The build ran out of memory (it may use {memory_mb} MB); try fewer packages at "
            "once. Nothing was changed."
        )
    if "Temporary failure resolving" in log or "Could not resolve" in log:
        return "The build could not reach the Debian mirror; try again later. Nothing was changed."
    return f"The image could not be built ({message}). Nothing was changed."


def _docker_has(tag: str) -> bool:
    """Whether the image exists and was built from the current recipe (its version label)."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        return False
    try:
        labels = json.loads(result.stdout) or {}
    except ValueError:
        return False
    return isinstance(labels, dict) and labels.get(VERSION_LABEL) == IMAGE_VERSION


def image_present(tag: str) -> bool:
    """Whether Docker has C{tag}, built from the current recipe (blocking: for the CLI)."""
    try:
        return _docker_has(tag)
    except OSError:
        return False


def bootstrap(
    force: bool = False, log: object = print, only: tuple[str, ...] | None = None
) -> list[str]:
    """
    Build the base images if missing or older than L{IMAGE_VERSION}: debootstrap -> docker
    import for Debian with L{BASE_PACKAGES}, then docker build for L{DERIVED_IMAGES} (Python
    with pip and venv, Node.js with npm, PHP), or only those named in C{only}.
    Blocking: for the CLI only.
    """
    say = log if callable(log) else print
    built = []
    if force or not _docker_has(BASE_IMAGE):
        work = Path(tempfile.mkdtemp(prefix="director-rootfs-"))
        root = work / "rootfs"
        try:
            say(f"debootstrap bookworm (minbase + {', '.join(BASE_PACKAGES)}) into {root} ...")
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=" + ",".join(BASE_PACKAGES),
                    "bookworm",
                    str(root),
                    "http://deb.debian.org/debian",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            (root / "etc/apt/sources.list").write_text(SOURCES)
            for pattern in TRIMMED:
                for path in root.glob(pattern):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(
                [
                    "docker",
                    "import",
                    "-c",
                    'CMD ["/bin/bash"]',
                    "-c",
                    "ENV LANG=C.UTF-8",
                    "-c",
                    f"LABEL {VERSION_LABEL}={IMAGE_VERSION}",
                    "-",
                    BASE_IMAGE,
                ],
                stdin=tar.stdout,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            if tar.wait() != 0:
                raise RuntimeError("tar of the root file system failed")
            built.append(BASE_IMAGE)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for tag, dockerfile in DERIVED_IMAGES:
        if only is not None and tag not in only:
            continue
        if force or BASE_IMAGE in built or not _docker_has(tag):
            say(f"docker build {tag} ...")
            subprocess.run(
                ["docker", "build", "-q", "-t", tag, "-"],
                input=dockerfile.encode(),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            built.append(tag)
    return built
