"""
What the orchestrator knows about a site, and what follows from it: the swarm service
definition (with its containment), the process that runs in it, and the names of things.
No I/O: the manager sends a site description, this module validates it and derives the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from director.contract.errors import ValidationError
from director.contract.sites import DEFAULT_IMAGE, Limits, SiteSpec
from director.contract.sites import IMAGE_NAME as IMAGE_NAME

#: The port a dynamic site's process listens on inside its container (unprivileged).
SITE_PORT = 8080
#: Site processes run as this uid + site id, never as root.
SITE_UID_BASE = 100_000


class SiteError(ValidationError):
    """A site description that cannot be applied; says which field and why."""


@dataclass(frozen=True)
class HostedSite:
    """A site as the manager describes it to the orchestrator (its L{SiteSpec}), and its id."""

    id: int
    name: str
    type: str  # "static" | "dynamic"
    availability: str = "enabled"
    image: str = DEFAULT_IMAGE
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    custom_domains: tuple[str, ...] = ()
    #: Accepted from older managers and ignored: the router redirects to a custom domain.
    primary_url: str | None = None
    #: An administrator's raw nginx directives for the server block (checked with nginx -t).
    nginx_snippet: str | None = None

    @property
    def service_name(self) -> str:
        return f"site_{self.id}"

    @property
    def uid(self) -> int:
        return SITE_UID_BASE + self.id

    @property
    def served(self) -> bool:
        """Whether the site's process should be running (scaled to 0 otherwise)."""
        return self.type == "dynamic" and self.availability == "enabled"

    def host(self, sites_domain: str) -> str:
        return f"{self.name}.{sites_domain}"


def parse_limits(data: object) -> Limits:
    return Limits() if data is None else Limits.from_json(data)


def parse_site(site_id: int, data: object) -> HostedSite:
    """Validate the manager's JSON description (a L{SiteSpec}) of site C{site_id}."""
    spec = SiteSpec.from_json(data, extra=("id", "primary_url"))
    assert isinstance(data, dict)
    if "id" in data and data["id"] != site_id:
        raise SiteError("id", "does not match the URL")
    if not 1 <= site_id <= 10_000_000:
        raise SiteError("id", "expected a positive site id")
    primary = data.get("primary_url")
    if primary is not None and (
        not isinstance(primary, str)
        or not re.fullmatch(r"https?://[a-z0-9.-]{1,253}(:[0-9]{1,5})?", primary)
    ):
        raise SiteError("primary_url", "expected http(s)://host with no path")
    return HostedSite(
        id=site_id,
        name=spec.name,
        type=spec.type,
        availability=spec.availability,
        image=spec.image,
        env=dict(spec.env),
        limits=spec.limits,
        custom_domains=spec.custom_domains,
        primary_url=primary,
        nginx_snippet=spec.nginx_snippet,
    )


#: Seconds a dynamic site's process keeps serving after swarm asks its task to stop, once
#: its task went through the readiness gate (one that never did is stopped at once: a
#: change rolled back). Its replacement already serves by then (start-first, behind the
#: gate), but when the replacement runs on another node (a move), the router still sends
#: requests to this node until its reload onto the other node's nginx is through: those
#: are answered meanwhile.
STOP_LINGER = 2

# The process a dynamic site's container runs: the first executable run.sh, with marker
# lines in the log, and a hint when there is none.
RUN_SCRIPT_TEMPLATE = r"""
umask 022
mkdir -p "$HOME" 2>/dev/null
say() { echo "DIRECTOR: $* at $(date)"; }
say "Starting server"
for f in /site/run.sh /site/private/run.sh /site/public/run.sh; do
  if [ -f "$f" ] && [ -x "$f" ]; then
    cd "$(dirname "$f")"
    "$f" &
    child=$!
    stop() {
      say "Stopping server"
      [ -e /tmp/.director-started ] && sleep %(linger)s
      kill -TERM "$child" 2>/dev/null
      wait "$child"
      say "Stopped server"
      exit 0
    }
    trap stop TERM INT
    wait "$child"
    status=$?
    say "Server exited with status $status"
    exit "$status"
  fi
done
echo "DIRECTOR: No run.sh found. Create an executable run.sh, private/run.sh or public/run.sh"
echo "DIRECTOR: that starts a server on \$PORT, e.g.: exec python3 -m http.server \"\$PORT\""
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""
RUN_SCRIPT = RUN_SCRIPT_TEMPLATE.replace("%(linger)s", str(STOP_LINGER))


#: Where a dynamic site's container sees the orchestrator's go-ahead files (read-only).
GATE_DIR = "/run/director"

#: A new task's readiness gate (its Docker health check; see docs/orchestrator.md). A
#: container with a health check stays "starting" for swarm until the check first passes, and
#: a start-first update stops the old task only then. The check passes once the orchestrator
#: writes GATE_DIR/<the container's host name>: it does so after the new process accepts
#: connections and nginx has moved to it. If nobody does within %(bound)d s (the orchestrator
#: is down), it passes anyway. Later runs of the check only sleep: no exec every interval.
GATE_SCRIPT = r"""
[ -e /tmp/.director-started ] && command -v sleep >/dev/null && exec sleep 86400
read h < /etc/hostname
i=0
while [ ! -e "%(dir)s/$h" ] && [ "$i" -lt %(ticks)d ]; do
  sleep 0.02 || break
  i=$((i+1))
done
: > /tmp/.director-started
exit 0
"""


def site_summary(site: HostedSite, upstream: list[str]) -> dict[str, Any]:
    """
    What the orchestrator's API answers about a site it applied, restarted or lists; one
    function, so the in-memory orchestrator (L{director.testing.fake_orchestrator}) answers
    the same.
    """
    return {
        "id": site.id,
        "name": site.name,
        "type": site.type,
        "availability": site.availability,
        "served": site.availability == "enabled",
        "upstream": upstream,
    }


def gate_healthcheck(bound: float) -> dict[str, Any]:
    """The HealthConfig of a site's container: the gate above, passing after C{bound} s at most."""
    script = GATE_SCRIPT % {"dir": GATE_DIR, "ticks": int(bound / 0.02), "bound": bound}
    return {
        "Test": ["CMD", "sh", "-c", script],
        "Interval": 1_000_000,  # 1 ms: the first run starts at once (later ones sleep a day)
        "Timeout": 2 * 86400 * 1_000_000_000,
        "Retries": 3,
    }


def site_environment(site: HostedSite, timezone: str) -> dict[str, str]:
    """What a site's processes (service and terminals) see in their environment."""
    env = dict(site.env)
    env.update(
        {
            "PORT": str(SITE_PORT),
            "HOST": "0.0.0.0",  # noqa: S104 (inside the container's own network namespace)
            "HOME": "/site/.home",
            "TZ": timezone,
            "LANG": "C.UTF-8",
        }
    )
    return env


#: The account name site processes have inside their containers.
SITE_USER = "site"
IDENTITY_FILES = ("passwd", "group")


def identity_files(site: HostedSite) -> dict[str, str]:
    """
    /etc/passwd and /etc/group for a site's containers. The site's processes run as a uid
    the image knows nothing about, so without an entry shells print "I have no name!",
    `whoami` fails and programs that look up the home directory fall back to odd places.
    The entries depend only on the uid, so the files never change for a site (a bind
    mount keeps the inode it was given, so rewriting them would not reach running
    containers anyway).
    """
    uid = site.uid
    passwd = (
        "root:x:0:0:root:/root:/bin/sh\n"
        f"{SITE_USER}:x:{uid}:{uid}:Director site:/site/.home:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\n{SITE_USER}:x:{uid}:\nnogroup:x:65534:\n"
    return {"passwd": passwd, "group": group}


def container_spec(
    site: HostedSite,
    site_dir: Path,
    timezone: str,
    command: list[str],
    identity_dir: Path | None = None,
) -> dict[str, Any]:
    """
    The swarm ContainerSpec (Docker API 1.41) for a site: unprivileged user, no
    capabilities, read-only root, tmpfs /tmp and /run, the site directory at /site, and
    (from C{identity_dir}, see L{identity_files}) read-only /etc/passwd and /etc/group
    that name the site's user. (no-new-privileges is set daemon-wide: dockerd
    --no-new-privileges; API 1.41 has no per-service field for it.)
    """
    env = site_environment(site, timezone)
    identity = (
        [
            {
                "Type": "bind",
                "Source": str(identity_dir / name),
                "Target": f"/etc/{name}",
                "ReadOnly": True,
            }
            for name in IDENTITY_FILES
        ]
        if identity_dir is not None
        else []
    )
    return {
        "Image": site.image,
        "Command": command,
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "Dir": "/site/public",
        "User": f"{site.uid}:{site.uid}",
        "Init": True,
        "ReadOnly": True,
        "CapabilityDrop": ["ALL"],
        # the linger, then 3 s for the process to end (after which it is killed)
        "StopGracePeriod": (STOP_LINGER + 3) * 1_000_000_000,
        "Labels": {"director.site": str(site.id)},
        "Mounts": [
            {"Type": "bind", "Source": str(site_dir), "Target": "/site", "ReadOnly": False},
            {
                "Type": "tmpfs",
                "Target": "/tmp",  # noqa: S108
                "TmpfsOptions": {"SizeBytes": 64 * 1024 * 1024, "Mode": 0o1777},
            },
            {
                "Type": "tmpfs",
                "Target": "/run",
                "TmpfsOptions": {"SizeBytes": 8 * 1024 * 1024, "Mode": 0o1777},
            },
            *identity,
        ],
    }


def spec_digest(template: dict[str, Any]) -> str:
    """A short digest of a task template: tasks carry it, so we can tell current from old."""
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def service_spec(
    site: HostedSite,
    site_dir: Path,
    network: str,
    timezone: str,
    identity_dir: Path | None = None,
    gate_dir: Path | None = None,
    gate_bound: float = 120.0,
) -> dict[str, Any]:
    """
    The whole swarm service definition for a dynamic site. With C{gate_dir} (the
    orchestrator's go-ahead files for the site), new tasks wait at the readiness gate.
    """
    spec = _service_spec(site, site_dir, network, timezone, identity_dir)
    if gate_dir is not None:
        container = spec["TaskTemplate"]["ContainerSpec"]
        container["Mounts"].append(
            {"Type": "bind", "Source": str(gate_dir), "Target": GATE_DIR, "ReadOnly": True}
        )
        container["Healthcheck"] = gate_healthcheck(gate_bound)
    template = spec["TaskTemplate"]
    template["ContainerSpec"]["Labels"]["director.spec"] = spec_digest(template)
    return spec


def _service_spec(
    site: HostedSite, site_dir: Path, network: str, timezone: str, identity_dir: Path | None
) -> dict[str, Any]:
    limits = site.limits
    return {
        "Name": site.service_name,
        "Labels": {"director.site": str(site.id), "director.name": site.name},
        "TaskTemplate": {
            "ContainerSpec": container_spec(
                site, site_dir, timezone, ["sh", "-c", RUN_SCRIPT], identity_dir
            ),
            "Resources": {
                "Limits": {
                    "NanoCPUs": int(limits.cpus * 1e9),
                    "MemoryBytes": limits.memory_mb * 1024 * 1024,
                    "Pids": limits.pids,
                }
            },
            "RestartPolicy": {"Condition": "any", "Delay": 2_000_000_000, "MaxAttempts": 0},
            "Networks": [{"Target": network}],
            "LogDriver": {"Name": "json-file", "Options": {"max-size": "1m", "max-file": "2"}},
        },
        "Mode": {"Replicated": {"Replicas": 1 if site.served else 0}},
        "UpdateConfig": {"Parallelism": 1, "Order": "start-first", "FailureAction": "pause"},
        "EndpointSpec": {"Mode": "dnsrr"},
    }


def terminal_container_spec(
    site: HostedSite, site_dir: Path, network: str, timezone: str, identity_dir: Path | None = None
) -> dict[str, Any]:
    """
    The plain container a site's terminals run in (for static and dynamic sites alike): the
    site's image, mounts, user and limits, doing nothing until a terminal execs into it.
    """
    env = site_environment(site, timezone)
    limits = site.limits
    binds: dict[str, dict[str, str]] = {str(site_dir): {"bind": "/site", "mode": "rw"}}
    if identity_dir is not None:
        for name in IDENTITY_FILES:
            binds[str(identity_dir / name)] = {"bind": f"/etc/{name}", "mode": "ro"}
    return {
        "Name": f"site_{site.id}_terminal",
        "Image": site.image,
        "Command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"],
        "User": f"{site.uid}:{site.uid}",
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "WorkingDir": "/site",
        "Labels": {"director.terminal": str(site.id)},
        "Network": network,
        "HostConfig": {
            "init": True,
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": limits.memory_mb * 1024 * 1024,
            "memswap_limit": limits.memory_mb * 1024 * 1024,
            "nano_cpus": int(limits.cpus * 1e9),
            "pids_limit": limits.pids,
            "binds": binds,
            "tmpfs": {"/tmp": "size=64m,mode=1777", "/run": "size=8m,mode=1777"},  # noqa: S108
            "restart_policy": {"Name": "unless-stopped"},
            "log_config": {"type": "json-file", "config": {"max-size": "100k"}},
        },
    }
