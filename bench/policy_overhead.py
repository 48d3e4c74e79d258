"""What a per-principal policy costs: the TPC-H queries (DuckDB-accelerated) and `SELECT 1`, each
run by a key without a principal (no policy) and by principals with policies, on one sidecar,
alternating (fair on a noisy machine). Also checks the rate limit: a principal with
`queries_per_minute: Q` hammering for --rate-seconds gets Q + Q * seconds / 60 answers (the
bucket starts full), within 1%.

Principals: `open_agent` (datasets "*", limits on: the lookup and the gate) and `filtered_agent`
(a row filter on lineitem that keeps every row, and a hashed column nobody reads: the rewrite and
the derived table on the hottest table).

    /tmp/venv/bin/python bench/policy_overhead.py [--sf 0.1] [--runs 5] [--rate-seconds 60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, adbc_connect, satchel, table, write_results  # noqa: E402
from tpch import make_data, pod_yaml  # noqa: E402

KEYS = {"none": "k-admin", "open_agent": "k-open", "filtered_agent": "k-filtered", "rated_agent": "k-rated"}


def policy_yaml(qpm: int) -> str:
    return f"""runtime:
  auth:
    api_key:
      enabled: true
      keys: ["{KEYS['none']}"]
    principals:
      - name: open_agent
        keys: ["{KEYS['open_agent']}"]
        datasets: ["*"]
        limits: {{max_concurrent_queries: 8, queries_per_minute: 1000000}}
      - name: filtered_agent
        keys: ["{KEYS['filtered_agent']}"]
        datasets:
          - name: lineitem
            filter: "l_orderkey >= 0"
            columns: {{l_comment: hash}}
          - "*"
      - name: rated_agent
        keys: ["{KEYS['rated_agent']}"]
        datasets: ["*"]
        limits: {{queries_per_minute: {qpm}}}
"""


def timed(cur, sql: str) -> float:
    started = time.perf_counter()
    cur.execute(sql)
    cur.fetch_arrow_table()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sf", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--select1", type=int, default=300)
    parser.add_argument("--rate-seconds", type=float, default=60)
    parser.add_argument("--qpm", type=int, default=600)
    args = parser.parse_args()

    directory, queries = make_data(args.sf)
    pod_dir = DATA / "policy_bench"
    with satchel(pod_dir, pod_yaml(directory) + policy_yaml(args.qpm)) as server:
        uri = f"grpc://127.0.0.1:{server.flight_port}"
        conns = {who: adbc_connect(uri, key) for who, key in KEYS.items()}
        curs = {who: c.cursor() for who, c in conns.items()}
        who_all = ("none", "open_agent", "filtered_agent")
        totals = {w: 0.0 for w in who_all}
        rows = []
        for q, sql in sorted(queries.items()):
            for w in who_all:
                timed(curs[w], sql)  # warm-up (plans are cached per principal)
            samples = {w: [] for w in who_all}
            for _ in range(args.runs):
                for w in who_all:
                    samples[w].append(timed(curs[w], sql))
            med = {w: statistics.median(samples[w]) for w in who_all}
            for w in who_all:
                totals[w] += med[w]
            rows.append([f"Q{q}", f"{med['none'] * 1000:.1f}", f"{med['open_agent'] / med['none']:.3f}",
                         f"{med['filtered_agent'] / med['none']:.3f}"])
        rows.append(["total", f"{totals['none'] * 1000:.0f}", f"{totals['open_agent'] / totals['none']:.3f}",
                     f"{totals['filtered_agent'] / totals['none']:.3f}"])
        s1 = {w: [] for w in who_all}
        for _ in range(args.select1):
            for w in who_all:
                s1[w].append(timed(curs[w], "SELECT 1"))
        p50 = {w: statistics.median(s1[w]) for w in who_all}
        rows.append(["SELECT 1 p50", f"{p50['none'] * 1000:.2f}", f"{p50['open_agent'] / p50['none']:.3f}",
                     f"{p50['filtered_agent'] / p50['none']:.3f}"])

        answered = refused = 0
        deadline = time.monotonic() + args.rate_seconds
        while time.monotonic() < deadline:
            try:
                timed(curs["rated_agent"], "SELECT 1")
                answered += 1
            except Exception:  # noqa: BLE001 - 429 overloaded is the point
                refused += 1
                time.sleep(0.005)
        expected = args.qpm + args.qpm * args.rate_seconds / 60
        for c in conns.values():
            c.close()

    body = (f"TPC-H SF{args.sf:g}, DuckDB-accelerated, median of {args.runs} alternating runs per query; ratios "
            f"are the principal's time over the no-policy key's (target: within 1.05).\n\n"
            + table(["query", "no policy ms", "open_agent x", "filtered_agent x"], rows)
            + f"\n\nRate limit: `queries_per_minute: {args.qpm}` for {args.rate_seconds:g} s: {answered} answered, "
              f"{refused} refused; expected {expected:.0f} (a full bucket plus the refill): "
              f"{answered / expected:.4f}x.")
    print(body)
    write_results("policy_overhead", "Policy overhead and rate-limit accuracy", body, [
        (f"TPC-H SF{args.sf:g} total with a row filter / no policy", rows[-2][3] + "x", "<= 1.05x"),
        ("`SELECT 1` p50 with a row filter / no policy", rows[-1][3] + "x", "<= 1.05x"),
        ("rate limit: answered / expected", f"{answered / expected:.4f}x", "1.0x")])


if __name__ == "__main__":
    main()
