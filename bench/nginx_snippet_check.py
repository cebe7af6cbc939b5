"""
How long an administrator waits for an nginx snippet to be checked (`nginx -t` of one site's
server block alone, L{StagedNginx.check_alone}, what POST /v1/sites/<id>/nginx-check runs),
with 1,000 and 5,000 other sites configured, against a full `nginx -t` of every file.

    .venv/bin/python bench/nginx_snippet_check.py [--sites 1000,5000] [--rounds 5]

The orchestrator's own nginx machinery in this process on the real reactor (no nginx is
started: a check needs none); one file per site, as orchestrator_nginx_scale.py makes them
(both from nginx_common.py).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from nginx_common import for_each_count, main, site, sites_nginx

from director.common.nginx import NginxError

SNIPPET = 'add_header X-Bench yes always;\nlocation = /x { return 200 "x"; }\n'


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def measure(reactor: Any, count: int, rounds: int, base: Path) -> dict[str, float]:
    public = base / "site"
    (public / "public").mkdir(parents=True, exist_ok=True)
    bench = sites_nginx(reactor, base, count, public, workers=2)
    checked = dataclasses.replace(site(count // 2), nginx_snippet=SNIPPET)
    bad = dataclasses.replace(checked, nginx_snippet="bogus_directive on;\n")
    alone, refused, whole = [], [], []
    try:
        for _ in range(rounds):
            started = time.monotonic()
            await bench.nginx.check_alone(bench.site_config(checked, public))
            alone.append(time.monotonic() - started)
            started = time.monotonic()
            try:
                await bench.nginx.check_alone(bench.site_config(bad, public))
                raise RuntimeError("nginx took a bogus directive")
            except NginxError:
                refused.append(time.monotonic() - started)
            started = time.monotonic()
            await bench.full.check()
            whole.append(time.monotonic() - started)
    finally:
        bench.pool.stopService()
    return {"alone": median(alone), "refused": median(refused), "full": median(whole)}


async def run(reactor: Any, counts: list[int], rounds: int) -> None:
    results = await for_each_count(
        counts,
        "director-bench-snippet-",
        lambda n, base: measure(reactor, n, rounds, base),
    )
    print(f"an nginx snippet's check, medians of {rounds}")
    print(f"{'sites':>6} {'check alone':>12} {'refused':>9} {'full nginx -t':>14}")
    for n, r in results.items():
        print(
            f"{n:>6} {r['alone'] * 1000:>10.0f}ms {r['refused'] * 1000:>7.0f}ms "
            f"{r['full'] * 1000:>12.0f}ms"
        )


if __name__ == "__main__":
    main(__doc__, run)
