"""
The features not covered by test_cluster_manager.py, on a site of node 2 (the orchestrator
that is not the configured one), through the host's manager and router on the two-node
cluster: an image with an extra Debian package built on node 2 (through the cluster's
mirror proxy) and run there, scheduled tasks (run now, and on schedule) in that image, a
backup into the cluster's one repository and its restore, a custom domain, and a rename.
One stack, one site: each test goes on from where the one before left it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_stack import ClusterStack, cluster_stack, wait

from director.cluster.nodes import ClusterError, docker

#: the site's names before and after the rename; its custom domain
SITE, RENAMED, DOMAIN = "ft2", "ft2b", "feature.example.org"
#: GNU hello: one small package with no dependencies beyond libc
PACKAGE = "hello"


@pytest.fixture(scope="module")
def stack() -> Iterator[ClusterStack]:
    started = time.monotonic()
    with cluster_stack("df") as made:
        yield made
    print(f"test_cluster_features: module took {time.monotonic() - started:.1f} s")


def _site_id(s: ClusterStack, name: str = SITE) -> int:
    site_id: int = s.api("GET", f"/api/v1/sites/{name}")["id"]
    return site_id


def _running_image(s: ClusterStack, n: int, site_id: int) -> str | None:
    """The image of the site's serving container on node C{n} (None: none runs there)."""
    try:
        listed = docker(
            s.layout, n, "ps", "--filter", f"label=director.site={site_id}",
            "--filter", "label=com.docker.swarm.service.name",
            "--format", "{{.Image}}",
        )  # fmt: skip
    except ClusterError:
        return None
    images = listed.split()
    return images[0] if images else None


def _has_image(s: ClusterStack, n: int, tag: str) -> bool:
    try:
        docker(s.layout, n, "image", "inspect", "--format", "{{.Id}}", tag)
        return True
    except ClusterError:
        return False


def _runs(s: ClusterStack, name: str, task_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = s.api("GET", f"/api/v1/sites/{name}/tasks/{task_id}/runs")["runs"]
    return runs


def _run_now(s: ClusterStack, name: str, task_id: int) -> dict[str, Any]:
    started = s.api("POST", f"/api/v1/sites/{name}/tasks/{task_id}/run", ok=(202,))["run"]
    found: dict[str, Any] = {}

    def ended() -> bool:
        found.update(next(r for r in _runs(s, name, task_id) if r["id"] == started["id"]))
        return found["status"] != "running"

    wait(ended, f"run {started['id']} of task {task_id}", 120)
    return found


def test_package_image_built_and_run_on_node2(stack: ClusterStack) -> None:
    """
    A dynamic node-2 site given one extra Debian package: its image is built by node 2's
    orchestrator on node 2's engine (fetching from the Debian mirror through the cluster's
    proxy: the nodes have no route out), and node 2 runs the site in it. Node 1 never sees it.
    """
    s = stack
    site = s.create_site(SITE, "dynamic", b"feature site", "node2")
    assert site["orchestrator"] == "node2", site
    s.wait_served(SITE, b"feature site")
    # a task due every minute, made now: test_scheduled_run_on_node2 looks at its run
    s.api(
        "POST",
        f"/api/v1/sites/{SITE}/tasks",
        {"name": "cron", "schedule": "* * * * *", "command": "echo scheduled-$((6*7))"},
    )
    op = s.wait_operation(
        s.api("PATCH", f"/api/v1/sites/{SITE}", {"packages": [PACKAGE]}), timeout=600
    )
    built = s.api("GET", f"/api/v1/sites/{SITE}")
    tag = f"director/site-{built['id']}:{op['id']}"
    assert built["packages"] == [PACKAGE], (built, op)
    assert _has_image(s, 2, tag) and not _has_image(s, 1, tag)
    # node 2 has no route out: its build fetched the package through the host's proxy
    proxied = (s.layout.base / "mirror.log").read_text()
    assert f"/pool/main/h/{PACKAGE}/{PACKAGE}_" in proxied and ": 200" in proxied, proxied
    wait(lambda: _running_image(s, 2, built["id"]) == tag, f"node 2 running {tag}", 120)
    assert _running_image(s, 1, built["id"]) is None
    s.wait_served(SITE, b"feature site")


def test_task_runs_in_the_node2_image(stack: ClusterStack) -> None:
    """A task of the node-2 site runs there, in its image (the package's program is found)."""
    s = stack
    task = s.api(
        "POST",
        f"/api/v1/sites/{SITE}/tasks",
        {
            "name": "greet",
            "schedule": "@yearly",
            "command": f"{PACKAGE}; echo >&2 to-stderr; exit 4",
        },
    )["task"]
    run = _run_now(s, SITE, task["id"])
    assert (run["status"], run["exit_code"], run["trigger"]) == ("failed", 4, "manual"), run
    assert "Hello, world!" in run["output"] and "err" in run["output"], run
    ok = s.api(
        "POST",
        f"/api/v1/sites/{SITE}/tasks",
        {"schedule": "@yearly", "command": "echo from-task > /site/public/task.txt"},
    )["task"]
    assert _run_now(s, SITE, ok["id"])["status"] == "succeeded"
    assert s.front(SITE, path="/task.txt") == (200, b"from-task\n")


def test_scheduled_run_on_node2(stack: ClusterStack) -> None:
    """The every-minute task made by the first test ran on schedule, and succeeded."""
    s = stack
    listed = s.api("GET", f"/api/v1/sites/{SITE}/tasks")["tasks"]
    cron = next((t for t in listed if t["name"] == "cron"), None)
    assert cron is not None, listed  # (made by the first test: fails, not skips)

    def ran() -> bool:
        runs = _runs(s, SITE, cron["id"])
        return bool(runs) and runs[0]["status"] != "running"

    wait(ran, "a scheduled run", 90, interval=1)
    run = _runs(s, SITE, cron["id"])[0]
    assert (run["status"], run["trigger"]) == ("succeeded", "schedule"), run
    assert run["output"] == "scheduled-42\n", run


def _backups(s: ClusterStack, name: str) -> dict[str, Any]:
    answer: dict[str, Any] = s.api("GET", f"/api/v1/sites/{name}/backups")
    return answer


def test_backup_and_restore_on_node2(stack: ClusterStack) -> None:
    """
    A backup of the node-2 site, made by node 2's orchestrator into the cluster's one
    repository, where the manager backs itself up too and applies the retention policy
    (so node 2's older snapshot of the day goes); the page changed, then the backup
    restored: the old page is served again through the router.
    """
    s = stack
    s.wait_served(SITE, b"feature site")
    run = s.api("POST", f"/api/v1/sites/{SITE}/backups", {}, ok=(202,))["backup"]
    found: dict[str, Any] = {}

    def finished() -> bool:
        found.update(next(r for r in _backups(s, SITE)["runs"] if r["id"] == run["id"]))
        return found["status"] != "running"

    wait(finished, "the node-2 site's backup", 120)
    assert found["status"] == "succeeded", (found, s.log_tail())
    snapshots = _backups(s, SITE)["snapshots"]
    assert [x["short_id"] for x in snapshots] == [found["snapshot"][:8]], snapshots
    # everything backed up: the manager, then each site, then retention over the repository
    s.api("POST", "/api/v1/backups", {}, ok=(202,))
    wait(lambda: not s.api("GET", "/api/v1/backups")["running"], "the whole backup run", 180)
    whole = s.api("GET", "/api/v1/backups")
    assert whole["failing"] == 0 and whole["last_success_at"], (whole, s.log_tail())
    repository = s.config.backup.repository
    assert repository == str(s.layout.backup_repository), repository
    hosts = _snapshot_hosts(s)
    assert {f"site-{_site_id(s)}", "director-manager"} <= hosts, hosts
    # one of a day is kept (keep_daily): the run's, node 2's first one of today is gone
    [kept] = _backups(s, SITE)["snapshots"]
    assert kept["short_id"] != found["snapshot"][:8], kept

    s.api("PUT", f"/api/v1/sites/{SITE}/files/public/index.html", raw=b"changed after backup")
    s.wait_served(SITE, b"changed after backup", timeout=30)
    s.wait_operation(s.api("POST", f"/api/v1/sites/{SITE}/backups/{kept['short_id']}/restore", {}))
    s.wait_served(SITE, b"feature site", timeout=60)
    assert s.api("GET", f"/api/v1/sites/{SITE}/files/public/index.html") == b"feature site"


def _snapshot_hosts(s: ClusterStack) -> set[str]:
    """restic's host field of every snapshot in the cluster's repository."""
    done = subprocess.run(
        ["restic", "-r", s.config.backup.repository, "--password-file",
         s.config.backup.password_file, "--no-lock", "snapshots", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {snap["hostname"] for snap in json.loads(done.stdout)}


def test_custom_domain_on_node2(stack: ClusterStack) -> None:
    """A custom domain added to the node-2 site is served through the router for that Host."""
    s = stack
    s.wait_operation(s.api("POST", f"/api/v1/sites/{SITE}/domains", {"domain": DOMAIN}))
    wait(lambda: s.front_host(DOMAIN) == (200, b"feature site"), f"{DOMAIN} served", 30)
    assert s.api("GET", f"/api/v1/sites/{SITE}")["domains"] == [DOMAIN]


def test_rename_on_node2(stack: ClusterStack) -> None:
    """
    The node-2 site renamed: served under its new name (and its custom domain) through
    the router, no longer under the old one; still on node 2, its files and tasks kept.
    """
    s = stack
    s.wait_served(SITE, b"feature site")  # (made by the tests before: fails, not skips)
    s.wait_operation(s.api("PATCH", f"/api/v1/sites/{SITE}", {"name": RENAMED}))
    s.wait_served(RENAMED, b"feature site", timeout=60)
    wait(lambda: s.front(SITE)[0] not in (0, 200), f"{SITE} no longer served", 30)
    assert s.front(SITE)[1] != b"feature site"
    assert s.front_host(DOMAIN) == (200, b"feature site")
    site = s.api("GET", f"/api/v1/sites/{RENAMED}")
    assert site["orchestrator"] == "node2", site
    s.api("GET", f"/api/v1/sites/{SITE}", ok=(404,))
    tasks = s.api("GET", f"/api/v1/sites/{RENAMED}/tasks")["tasks"]
    greet = next(t for t in tasks if t["name"] == "greet")
    run = _run_now(s, RENAMED, greet["id"])
    assert run["exit_code"] == 4 and "Hello, world!" in run["output"], run
