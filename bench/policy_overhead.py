"""What a per-principal policy costs: the TPC-H queries (DuckDB-accelerated) and `SELECT 1`, each
run by a key without a principal (no policy) and by principals with policies, on one sidecar,
alternating (fair on a noisy machine). Also checks the rate limit: a principal with
`queries_per_minute: Q` hammering for --rate-seconds gets Q + Q * seconds / 60 answers (the
bucket starts full), within 1%.

Principals: `open_agent` (datasets "*", limits on: the lookup and the gate) and `filtered_agent`
(a row filter on lineitem that keeps every row, and a hashed column nobody reads: the rewrite and
the derived table on the hottest table). A fourth runner, `by_hand`, is the key without a
principal running each query with the filter written into it, as a derived table: the same
query the policy makes. `filtered_agent / by_hand` is what enforcing the policy costs;
`filtered_agent / none` adds what the filter itself costs the engine (DuckDB estimates any
filter to keep a fraction of the rows and may choose another join order: TPC-H Q4 is 3x slower
in DuckDB itself with `AND l_orderkey >= 0` written into its EXISTS).

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

import sqlglot  # noqa: E402
from sqlglot import exp  # noqa: E402

FILTER = "l_orderkey >= 0"

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
            filter: "{FILTER}"
            columns: {{l_comment: hash}}
          - "*"
      - name: rated_agent
        keys: ["{KEYS['rated_agent']}"]
        datasets: ["*"]
        limits: {{queries_per_minute: {qpm}}}
"""


def by_hand(sql: str) -> str:
    """`sql` with each read of lineitem made a derived table that applies FILTER."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for read in list(tree.find_all(exp.Table)):
        if read.name == "lineitem":
            inner = sqlglot.parse_one(f"SELECT * FROM lineitem WHERE {FILTER}", read="duckdb")
            read.replace(exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(read.alias_or_name))))
    return tree.sql("duckdb")


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
        conns = {who: adbc_connect(uri, key) for who, key in {**KEYS, "by_hand": KEYS["none"]}.items()}
        curs = {who: c.cursor() for who, c in conns.items()}
        who_all = ("none", "by_hand", "open_agent", "filtered_agent")
        totals = {w: 0.0 for w in who_all}
        rows = []
        for q, sql in sorted(queries.items()):
            text = {w: by_hand(sql) if w == "by_hand" else sql for w in who_all}
            for w in who_all:
                timed(curs[w], text[w])  # warm-up (plans are cached per principal)
            samples = {w: [] for w in who_all}
            for _ in range(args.runs):
                for w in who_all:
                    samples[w].append(timed(curs[w], text[w]))
            med = {w: statistics.median(samples[w]) for w in who_all}
            for w in who_all:
                totals[w] += med[w]
            rows.append(_row(f"Q{q}", med, 1))
        rows.append(_row("total", totals, 0))
        s1 = {w: [] for w in who_all}
        for _ in range(args.select1):
            for w in who_all:
                s1[w].append(timed(curs[w], "SELECT 1"))
        p50 = {w: statistics.median(s1[w]) for w in who_all}
        rows.append(_row("SELECT 1 p50", p50, 2))

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
            f"are the principal's time over the no-policy key's (target: within 1.05). `by_hand`: the no-policy key "
            f"with the filter `{FILTER}` written into the query as a derived table (what the policy makes); the last "
            f"column is what enforcing the policy costs over that.\n\n"
            + table(["query", "no policy ms", "by_hand x", "open_agent x", "filtered_agent x",
                     "filtered_agent / by_hand"], rows)
            + f"\n\nRate limit: `queries_per_minute: {args.qpm}` for {args.rate_seconds:g} s: {answered} answered, "
              f"{refused} refused; expected {expected:.0f} (a full bucket plus the refill): "
              f"{answered / expected:.4f}x.")
    print(body)
    write_results("policy_overhead", "Policy overhead and rate-limit accuracy", body, [
        (f"TPC-H SF{args.sf:g} total with a row filter / no policy", rows[-2][4] + "x", "<= 1.05x"),
        (f"TPC-H SF{args.sf:g} total with a row filter / the same filter written in the query", rows[-2][5] + "x",
         "<= 1.05x"),
        ("`SELECT 1` p50 with a row filter / no policy", rows[-1][4] + "x", "<= 1.05x"),
        ("rate limit: answered / expected", f"{answered / expected:.4f}x", "1.0x")])


def _row(label: str, times: dict[str, float], digits: int) -> list[str]:
    return [label, f"{times['none'] * 1000:.{digits}f}",
            *(f"{times[w] / times['none']:.3f}" for w in ("by_hand", "open_agent", "filtered_agent")),
            f"{times['filtered_agent'] / times['by_hand']:.3f}"]


if __name__ == "__main__":
    main()
