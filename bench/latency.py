"""Small-query latency over Flight SQL: `SELECT 1` N times through the ADBC driver.

Each query is a full round trip as ADBC makes it (GetFlightInfo, then DoGet of the result),
on one connection opened beforehand. Satchel vs roapi; p50, p90, p99 and mean over N queries
after 20 warm-up queries;
both servers run at once and the queries alternate between them (fair on a noisy machine).

    /tmp/venv/bin/python bench/latency.py [--queries 200]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, adbc_connect, percentile, roapi, satchel, table, write_results  # noqa: E402

SQL = "SELECT 1"
WARMUP = 20


def query_once(cur) -> float:
    started = time.perf_counter()
    cur.execute(SQL)
    result = cur.fetch_arrow_table()
    elapsed = time.perf_counter() - started
    assert result.num_rows == 1 and result.column(0)[0].as_py() == 1
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    small = DATA / "small.parquet"  # both servers get one small table (roapi wants at least one)
    pq.write_table(pa.table({"id": pa.array(range(10), pa.int64())}), small)
    pod = f"""
version: v1
kind: Spicepod
name: latency
datasets:
  - from: file:{small}
    name: small
    acceleration:
      engine: duckdb
"""
    results: dict[str, list[float]] = {"Satchel": [], "roapi 0.12": []}
    with contextlib.ExitStack() as stack:
        print("satchel:", flush=True)
        server = stack.enter_context(satchel(DATA / "pods" / "latency", pod))
        print("roapi:", flush=True)
        roapi_uri = stack.enter_context(roapi({"small": small}, DATA / "roapi-latency.log"))
        cursors = {}
        for name, uri in (("Satchel", f"grpc://127.0.0.1:{server.flight_port}"), ("roapi 0.12", roapi_uri)):
            conn = stack.enter_context(adbc_connect(uri))
            cursors[name] = stack.enter_context(conn.cursor())
        for i in range(WARMUP + args.queries):  # the servers alternate query by query
            for name, cur in cursors.items():
                elapsed = query_once(cur)
                if i >= WARMUP:
                    results[name].append(elapsed)

    base = results["roapi 0.12"]
    rows = []
    for name, values in results.items():
        ms = [v * 1000 for v in values]
        base_ms = [v * 1000 for v in base]
        rows.append([name, f"{percentile(ms, 50):.2f}", f"{percentile(ms, 90):.2f}", f"{percentile(ms, 99):.2f}",
                     f"{statistics.mean(ms):.2f}", f"{percentile(ms, 50) / percentile(base_ms, 50):.2f}x",
                     f"{percentile(ms, 99) / percentile(base_ms, 99):.2f}x"])
    body = table(["server", "p50 ms", "p90 ms", "p99 ms", "mean ms", "p50 vs roapi", "p99 vs roapi"], rows)
    print()
    print(body)
    text = (f"`{SQL}` x {args.queries} through the ADBC Flight SQL driver on one open connection (each query: "
            f"GetFlightInfo + DoGet), after {WARMUP} warm-up queries, alternating between the servers; client and servers on one 2-core machine. "
            f"Ratios are latency over roapi's (< 1 is faster).\n\n{body}\n")
    write_results("latency", "SELECT 1 latency over Flight SQL", text)


if __name__ == "__main__":
    main()
