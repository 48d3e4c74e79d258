"""Small-query latency over Flight SQL: `SELECT 1` N times through the ADBC driver, and a
parameterised point lookup on a DuckDB-accelerated 1M-row table against the same lookup in
in-process DuckDB (issue 16 item 1: p50 within 1.5x).

Each query is a full round trip as ADBC makes it (GetFlightInfo, then DoGet of the result),
on one connection opened beforehand. Satchel vs roapi; p50, p90, p99 and mean over N queries
after 20 warm-up queries;
both servers run at once and the queries alternate between them (fair on a noisy machine).

    /tmp/venv/bin/python bench/latency.py [--queries 200]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, adbc_connect, percentile, roapi, satchel, table, write_results  # noqa: E402
from concurrency import SQL as LOAD_SQL, make_data as make_events  # noqa: E402

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
    events = make_events()
    pod = f"""
version: v1
kind: Spicepod
name: latency
datasets:
  - from: file:{small}
    name: small
    acceleration:
      engine: duckdb
  - from: file:{events}
    name: events
    acceleration:
      engine: duckdb
"""
    results: dict[str, list[float]] = {"Satchel": [], "roapi 0.12": []}
    lookups: dict[str, list[float]] = {"Satchel over Flight SQL (ADBC)": [], "in-process DuckDB": []}
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
        point_lookups(cursors["Satchel"], events, args.queries, lookups)

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
    local = percentile(lookups["in-process DuckDB"], 50)
    body = table(["route", "p50 ms", "p99 ms", "p50 vs in-process"],
                 [[name, f"{percentile(v, 50) * 1000:.3f}", f"{percentile(v, 99) * 1000:.3f}",
                   f"{percentile(v, 50) / local:.1f}x"] for name, v in lookups.items()])
    print(body)
    text += (f"\n`{LOAD_SQL['point']}` (a bind parameter, random ids) x {args.queries} on a 1M-row table, "
             f"DuckDB-accelerated in Satchel and loaded into an in-process DuckDB from the same file, "
             f"alternating (goal: p50 within 1.5x of in-process).\n\n{body}\n")
    sat, ro = results["Satchel"], results["roapi 0.12"]
    ours = percentile(lookups["Satchel over Flight SQL (ADBC)"], 50)
    write_results("latency", "SELECT 1 latency over Flight SQL", text, [
        ("`SELECT 1` p50 vs roapi", f"{percentile(sat, 50) / percentile(ro, 50):.2f}x", "<= 1.0x"),
        ("`SELECT 1` p99 vs roapi", f"{percentile(sat, 99) / percentile(ro, 99):.2f}x", "<= 1.0x"),
        ("point lookup p50 vs in-process DuckDB", f"{ours / local:.1f}x", "<= 1.5x")])


def point_lookups(cur, events: Path, queries: int, out: dict[str, list[float]]) -> None:
    """The point lookup with a bind parameter through Satchel and in-process DuckDB, alternating."""
    import duckdb

    local = duckdb.connect()
    local.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{events}')")
    local.execute("CHECKPOINT")  # compressed, as the accelerator stores what it loads
    sql = LOAD_SQL["point"]
    rnd = random.Random(16)
    routes = {"Satchel over Flight SQL (ADBC)": lambda i: (cur.execute(sql, parameters=(i,)), cur.fetch_arrow_table())[1],
              "in-process DuckDB": lambda i: local.execute(sql, [i]).to_arrow_table()}
    for n in range(WARMUP + queries):
        key = rnd.randrange(1_000_000)
        for name, run in routes.items():
            started = time.perf_counter()
            got = run(key)
            elapsed = time.perf_counter() - started
            assert got.num_rows == 1 and got.column("id")[0].as_py() == key, (name, got)
            if n >= WARMUP:
                out[name].append(elapsed)
    local.close()


if __name__ == "__main__":
    main()
