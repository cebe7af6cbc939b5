"""
The blocking docker SDK calls the gateway runs in its pool, and the swarm placement they
give a site's service: the sites network, finding a service, a terminal container, hanging
up an exec, and the engine's client.
"""

from __future__ import annotations

import json
import time
from typing import Any

from director.orchestrator.docker_interface import ServiceInfo

#: and so nginx, still reaches them). A swarm-scoped bridge takes them from its config-only
#: network; the sites firewall enforces the same for a network made without them.
SITES_BRIDGE_OPTIONS = {"com.docker.network.bridge.enable_icc": "false"}


#: The service label naming the swarm node (and so the orchestrator) a site service belongs
#: to: orchestrators sharing one swarm each see and change only their own services.
OWNER_LABEL = "director.node"


def _blocking_network(
    client: Any, name: str, subnet: str | None, manager: Any | None = None
) -> None:
    """
    The swarm-scoped bridge is made once, through the swarm manager; the config-only
    network it takes its addresses from is per node, so every node's orchestrator makes its
    own (with its own subnet) even when the swarm-scoped network already exists.
    """
    manager = client if manager is None else manager
    existing = [net for net in manager.networks(names=[name]) if net["Name"] == name]
    exists = bool(existing)
    if exists and manager is client and not (existing[0].get("ConfigFrom") or {}).get("Network"):
        return  # made without a config-only network (one machine): nothing is per node
    # Otherwise (even on the swarm manager's own node: another node's orchestrator, starting
    # at the same time, may have made the swarm-scoped bridge first) this node's config-only
    # network must exist, or every task here is rejected ("configuration network ... does
    # not exist").
    config_from = None
    if subnet is not None:
        # A swarm-scoped bridge takes its addresses from a config-only network on each node.
        config_from = f"{name}-config"
        if not any(net["Name"] == config_from for net in client.networks(names=[config_from])):
            response = client._post_json(
                client._url("/networks/create"),
                data={
                    "Name": config_from,
                    "ConfigOnly": True,
                    "IPAM": {"Driver": "default", "Config": [{"Subnet": subnet}]},
                    "Options": SITES_BRIDGE_OPTIONS,
                },
            )
            client._result(response, json=True)
    if exists:
        return
    data: dict[str, Any] = {
        "Name": name,
        "Driver": "bridge",
        "Scope": "swarm",
        "Attachable": True,
        "CheckDuplicate": True,
    }
    if config_from is not None:
        data["ConfigFrom"] = {"Network": config_from}
    import docker.errors

    try:
        manager._result(manager._post_json(manager._url("/networks/create"), data=data), json=True)
    except docker.errors.APIError:
        # another node's orchestrator, starting at the same time, made it first
        if not any(net["Name"] == name for net in manager.networks(names=[name])):
            raise


def _find(client: Any, name: str) -> dict[str, Any] | None:
    """The service called exactly C{name} (the API's name filter matches prefixes)."""
    for service in client.services(filters={"name": name}):
        if service["Spec"]["Name"] == name:
            return dict(service)
    return None


def _remove_task_containers(client: Any, service: str) -> None:
    """
    Every container of C{service}'s tasks on this engine. The service now runs on another
    node (a site moved there), so each one here is left over: stopped, or an old task still
    lingering (its stop grace) after the routers switched; swarm would keep them.
    """
    label = f"com.docker.swarm.service.name={service}"
    for container in client.containers(all=True, filters={"label": label}):
        client.remove_container(container["Id"], force=True)


def _service_info(raw: dict[str, Any]) -> ServiceInfo:
    spec = raw["Spec"]
    replicas = spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0)
    image = spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@", 1)[0]
    return ServiceInfo(spec["Name"], raw["ID"], replicas, image, raw["Version"]["Index"], spec)


def _with_placement(spec: dict[str, Any], node: str) -> dict[str, Any]:
    """C{spec} owned by, and constrained to, swarm node C{node}."""
    template = dict(spec["TaskTemplate"])
    placement = dict(template.get("Placement") or {})
    constraint = f"node.hostname=={node}"
    placement["Constraints"] = [
        *(c for c in placement.get("Constraints", ()) if not c.startswith("node.hostname")),
        constraint,
    ]
    template["Placement"] = placement
    labels = dict(spec.get("Labels") or {}, **{OWNER_LABEL: node})
    return dict(spec, TaskTemplate=template, Labels=labels)


def _owned(owner: str | None, node: str) -> bool:
    """
    Whether a service whose L{OWNER_LABEL} is C{owner} is node C{node}'s: labelled so, or
    unlabelled (made before services were labelled, by the only orchestrator there was).
    """
    return owner is None or owner == node


def _blocking_exec_kill(client: Any, exec_id: str, grace: float) -> bool:
    """Hang up an exec's process (SIGHUP, SIGTERM; SIGKILL after C{grace} s)."""
    import os
    import signal

    info = client.exec_inspect(exec_id)
    for _ in range(40):  # just started: dockerd may not report its pid yet
        if not info.get("Running") or (info.get("Pid") or 0) > 1:
            break
        time.sleep(0.05)
        info = client.exec_inspect(exec_id)
    pid = info.get("Pid") or 0
    if not info.get("Running") or pid <= 1:
        return False

    def send(sig: int) -> None:
        # The exec's process is on this host (the orchestrator runs beside dockerd);
        # a TTY shell leads its own process group, which holds what it started.
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGHUP)
    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not client.exec_inspect(exec_id).get("Running"):
            return True
        time.sleep(0.05)
    send(signal.SIGKILL)
    return True


def _spec_label(spec: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _blocking_ensure_container(client: Any, spec: dict[str, Any]) -> str:
    import docker.errors

    name = spec["Name"]
    digest = _spec_label(spec)
    try:
        current = client.inspect_container(name)
    except docker.errors.NotFound:
        current = None
    if current is not None:
        labels = current["Config"].get("Labels") or {}
        if labels.get("director.spec") == digest:
            if not current["State"]["Running"]:
                client.start(current["Id"])
            return str(current["Id"])
        client.remove_container(current["Id"], force=True)
    host_config = client.create_host_config(**spec["HostConfig"])
    networking = (
        client.create_networking_config({spec["Network"]: client.create_endpoint_config()})
        if spec.get("Network")
        else None
    )
    created = client.create_container(
        spec["Image"],
        command=spec["Command"],
        name=name,
        user=spec.get("User"),
        environment=spec.get("Env"),
        working_dir=spec.get("WorkingDir"),
        labels=dict(spec.get("Labels", {}), **{"director.spec": digest}),
        host_config=host_config,
        networking_config=networking,
        stdin_open=False,
        tty=False,
    )
    client.start(created["Id"])
    return str(created["Id"])


def _default_client(timeout: float = 60, base_url: str = "", tls: Any = None) -> Any:
    """
    A client of the engine at C{base_url} (unix:///..., tcp://...; "": the default socket);
    C{tls} (a docker.tls.TLSConfig) for a tcp:// one.
    """
    import docker

    if base_url:
        options = {"tls": tls} if tls is not None and base_url.startswith("tcp://") else {}
        return docker.APIClient(base_url=base_url, version="1.41", timeout=timeout, **options)
    return docker.APIClient(version="1.41", timeout=timeout)
