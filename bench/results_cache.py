"""Results-cache hit latency: the same aggregate over HTTP `/v1/sql`, answered from the cache
(HIT) and computed again (`Cache-Control: no-cache`: BYPASS), alternating, on the default pod.

    /tmp/venv/bin/python bench/results_cache.py [--queries 200]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REPO, percentile, satchel, table, write_results  # noqa: E402

SQL = ("SELECT c.region, count(*) AS orders, sum(o.amount) AS revenue FROM orders o "
       "JOIN customers c ON c.customer_id = o.customer_id GROUP BY c.region ORDER BY revenue DESC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    pod_dir = DATA / "results_cache_pod"
    shutil.rmtree(pod_dir, ignore_errors=True)
    shutil.copytree(REPO / "data", pod_dir / "data")
    pod = (REPO / "spicepod.yaml").read_text() + "runtime:\n  results_cache:\n    enabled: true\n    item_ttl: 10m\n"
    with satchel(pod_dir, pod) as server, httpx.Client(base_url=server.http_url, timeout=60) as client:
        times: dict[str, list[float]] = {"HIT": [], "BYPASS": []}
        client.post("/v1/sql", content=SQL)
        for _ in range(args.queries):
            for status, headers in (("HIT", {}), ("BYPASS", {"Cache-Control": "no-cache"})):
                started = time.perf_counter()
                r = client.post("/v1/sql", content=SQL, headers=headers)
                times[status].append(time.perf_counter() - started)
                assert r.headers["Results-Cache-Status"] == status, r.headers
    rows = [[s, f"{percentile(t, 50) * 1000:.2f}", f"{percentile(t, 99) * 1000:.2f}"] for s, t in times.items()]
    ratio = percentile(times["BYPASS"], 50) / percentile(times["HIT"], 50)
    body = (f"{args.queries} alternating requests each, HTTP /v1/sql, JSON.\n\n"
            + table(["answered by", "p50 ms", "p99 ms"], rows) + f"\n\nA hit is {ratio:.1f}x faster at p50.")
    print(body)
    write_results("results_cache", "Results cache: hit vs computed", body, [
        ("results cache hit p50 speed vs computed", f"{ratio:.1f}x", "> 1x")])


if __name__ == "__main__":
    main()
