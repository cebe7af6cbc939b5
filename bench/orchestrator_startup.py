"""
Time from the API call to the first 200 from the orchestrator's nginx (targets: static
median <= 0.5 s, dynamic median <= 2.5 s with the swarm start).

    .venv/bin/python bench/orchestrator_startup.py [--static 10] [--dynamic 5]

Starts its own orchestrator (twistd, child process). Static: the clock starts at
`PUT /v1/sites/<id>` and the page is already on disk (a site being created from existing
files), then, separately, a brand-new site whose index.html is uploaded with a second API
call after the PUT (both calls inside the timing). Dynamic: run.sh (python3 -m http.server,
as in the tests) and the page are uploaded first; the clock starts at the PUT that makes
the site dynamic (swarm service created, task started, nginx pointed at it) and stops at
the first 200 through nginx. Polls every 5 ms.
"""

from __future__ import annotations

import argparse
import time

from orchestrator_common import RUN_SH, BenchOrchestrator, median

PYTHON_IMAGE = "director/python:3"


def first_200(o: BenchOrchestrator, name: str, started: float, timeout: float = 60) -> float:
    while time.monotonic() - started < timeout:
        status, _ = o.get(name, timeout=1)
        if status == 200:
            return time.monotonic() - started
        time.sleep(0.005)
    raise RuntimeError(f"{name} not served within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--static", type=int, default=10)
    parser.add_argument("--dynamic", type=int, default=5)
    args = parser.parse_args()
    with BenchOrchestrator() as o:
        existing, fresh, dynamic, put_only = [], [], [], []
        for i in range(args.static):
            site_id = 250 + i
            page = o.site_dir(site_id) / "public"
            page.mkdir(parents=True)
            (page / "index.html").write_text(f"static {site_id}")
            started = time.monotonic()
            o.call("PUT", f"/v1/sites/{site_id}", {"name": f"st{site_id}", "type": "static"})
            existing.append(first_200(o, f"st{site_id}", started))
        for i in range(args.static):
            site_id = 260 + i
            started = time.monotonic()
            o.call("PUT", f"/v1/sites/{site_id}", {"name": f"st{site_id}", "type": "static"})
            o.call("PUT", f"/v1/sites/{site_id}/files/public/index.html", data=b"new site")
            fresh.append(first_200(o, f"st{site_id}", started))
        for i in range(args.dynamic):
            site_id = 270 + i
            name = f"dy{site_id}"
            o.call("PUT", f"/v1/sites/{site_id}", {"name": name, "type": "static"})
            o.call("PUT", f"/v1/sites/{site_id}/files/run.sh", data=RUN_SH, params={"mode": "755"})
            o.call("PUT", f"/v1/sites/{site_id}/files/public/index.html", data=b"dynamic")
            started = time.monotonic()
            o.call(
                "PUT",
                f"/v1/sites/{site_id}",
                {"name": name, "type": "dynamic", "image": PYTHON_IMAGE},
            )
            put_only.append(time.monotonic() - started)
            dynamic.append(first_200(o, name, started))

    def show(label: str, values: list[float]) -> None:
        print(
            f"{label:<46} median {median(values) * 1000:7.1f} ms   "
            f"min {min(values) * 1000:7.1f}   max {max(values) * 1000:7.1f}   (n={len(values)})"
        )

    print("time from the API call to the first 200 through the orchestrator's nginx")
    show("static, files already on disk (PUT site)", existing)
    show("static, new site (PUT site + PUT index.html)", fresh)
    show("dynamic (PUT returns)", put_only)
    show("dynamic, python3 -m http.server (first 200)", dynamic)


if __name__ == "__main__":
    main()
