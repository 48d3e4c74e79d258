"""Small-query latency over Flight SQL and HTTP: `SELECT 1` N times through the ADBC driver and
through each server's HTTP API (JSON), and a parameterised point lookup on a DuckDB-accelerated 1M-row table against the same lookup in
in-process DuckDB (issue 16 item 1: p50 within 1.5x), without an index and with a unique index
on the key (`acceleration.indexes`; the in-process table gets the same index), and the indexed
lookup with the value written into the SQL text, as agents write it (a new text each time),
over Flight SQL and over HTTP (`POST /v1/sql`, JSON rows); then that lookup on the table
Arrow-accelerated (the default engine, so the federated engine's DataFusion runs it).

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

import httpx
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


def http_once(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    response = client.post(url, content=SQL)
    rows = response.json()
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and list(rows[0].values()) == [1], response.text
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
  - from: file:{events}
    name: events_indexed
    acceleration:
      engine: duckdb
      indexes:
        id: unique
  - from: file:{events}
    name: events_arrow
    acceleration:
      engine: arrow
"""
    results: dict[str, list[float]] = {"Satchel": [], "roapi 0.12": []}
    over_http: dict[str, list[float]] = {"Satchel `POST /v1/sql`": [], "roapi 0.12 `POST /api/sql`": []}
    lookups = {name: {route: [] for route in (*LOOKUP_ROUTES, *(["Satchel over HTTP (JSON)"] if LOOKUPS[name][1] else []))}
               for name in LOOKUPS}
    with contextlib.ExitStack() as stack:
        print("satchel:", flush=True)
        server = stack.enter_context(satchel(DATA / "pods" / "latency", pod))
        print("roapi:", flush=True)
        peer = stack.enter_context(roapi({"small": small}, DATA / "roapi-latency.log"))
        cursors = {}
        for name, uri in (("Satchel", f"grpc://127.0.0.1:{server.flight_port}"), ("roapi 0.12", peer.flight)):
            conn = stack.enter_context(adbc_connect(uri))
            cursors[name] = stack.enter_context(conn.cursor())
        for i in range(WARMUP + args.queries):  # the servers alternate query by query
            for name, cur in cursors.items():
                elapsed = query_once(cur)
                if i >= WARMUP:
                    results[name].append(elapsed)
        http = stack.enter_context(httpx.Client())
        urls = dict(zip(over_http, (f"http://127.0.0.1:{server.http_port}/v1/sql", f"{peer.http}/api/sql")))
        for i in range(WARMUP + args.queries):
            for name, url in urls.items():
                elapsed = http_once(http, url)
                if i >= WARMUP:
                    over_http[name].append(elapsed)
        for name, out in lookups.items():
            point_lookups(cursors["Satchel"], (http, urls["Satchel `POST /v1/sql`"]), events, args.queries,
                          LOOKUPS[name][0], LOOKUPS[name][1], out)

    base = results["roapi 0.12"]
    body = latency_table(results, "roapi 0.12", "roapi")
    print()
    print(body)
    text = (f"`{SQL}` x {args.queries} through the ADBC Flight SQL driver on one open connection (each query: "
            f"GetFlightInfo + DoGet), after {WARMUP} warm-up queries, alternating between the servers; client and servers on one 2-core machine. "
            f"Ratios are latency over roapi's (< 1 is faster).\n\n{body}\n")
    figures = [("`SELECT 1` p50 vs roapi", f"{percentile(results['Satchel'], 50) / percentile(base, 50):.2f}x", "<= 1.0x"),
               ("`SELECT 1` p99 vs roapi", f"{percentile(results['Satchel'], 99) / percentile(base, 99):.2f}x", "<= 1.0x")]
    body = latency_table(over_http, "roapi 0.12 `POST /api/sql`", "roapi")
    print(body)
    text += (f"\n`{SQL}` x {args.queries} over each server's HTTP API (JSON rows; one keep-alive httpx client, "
             f"the response parsed), after {WARMUP} warm-up queries, alternating.\n\n{body}\n")
    ours_http, base_http = over_http["Satchel `POST /v1/sql`"], over_http["roapi 0.12 `POST /api/sql`"]
    figures += [("`SELECT 1` over HTTP p50 vs roapi's HTTP API",
                 f"{percentile(ours_http, 50) / percentile(base_http, 50):.2f}x", "<= 1.0x"),
                ("`SELECT 1` over HTTP p99 vs roapi's HTTP API",
                 f"{percentile(ours_http, 99) / percentile(base_http, 99):.2f}x", "<= 1.0x")]
    ours = {}
    for name, variant in lookups.items():
        local = percentile(variant["in-process DuckDB"], 50)
        ours[name] = percentile(variant["Satchel over Flight SQL (ADBC)"], 50)
        body = table(["route", "p50 ms", "p99 ms", "p50 vs in-process"],
                     [[route, f"{percentile(v, 50) * 1000:.3f}", f"{percentile(v, 99) * 1000:.3f}",
                       f"{percentile(v, 50) / local:.1f}x"] for route, v in variant.items()])
        print(body)
        table_name, literal, label = LOOKUPS[name]
        how = "the value written into the SQL text" if literal else "a bind parameter"
        text += (f"\n`{LOAD_SQL['point'].replace('events', table_name)}` ({label}; {how}, random ids) "
                 f"x {args.queries} on a 1M-row table, {'Arrow' if table_name == 'events_arrow' else 'DuckDB'}-accelerated "
                 f"in Satchel and loaded into an in-process "
                 f"DuckDB from the same file, alternating (goal: p50 within 1.5x of in-process).\n\n{body}\n")
        figures.append((f"point lookup p50 vs in-process DuckDB, {label}", f"{ours[name] / local:.1f}x", "<= 1.5x"))
        if "Satchel over HTTP (JSON)" in variant:
            figures.append((f"point lookup over HTTP p50 vs in-process DuckDB, {label}",
                            f"{percentile(variant['Satchel over HTTP (JSON)'], 50) / local:.1f}x", "<= 1.5x"))
    figures.append(("point lookup p50 through Satchel, unique index vs none", f"{ours['indexed'] / ours['plain']:.2f}x",
                    "< 1x"))
    # What any server would reach through the same client: at least one round trip (roapi answering
    # `SELECT 1`, the fastest server measured) plus the lookup itself (in-process DuckDB's time).
    text += "\nThe floor of the lookup ratio through each client: (roapi's `SELECT 1` p50 + the in-process lookup's p50) / the in-process lookup's p50, with the unique index.\n"
    for route, trip, name in (("Flight SQL (ADBC)", percentile(base, 50), "indexed"),
                              ("HTTP", percentile(base_http, 50), "literal")):
        local = percentile(lookups[name]["in-process DuckDB"], 50)
        floor = (trip + local) / local
        text += f"\n- {route}: ({trip * 1000:.2f} + {local * 1000:.2f}) / {local * 1000:.2f} = {floor:.1f}x"
        figures.append((f"point lookup floor over {route} vs in-process DuckDB (roapi's `SELECT 1` round trip + the lookup)",
                        f"{floor:.1f}x", "- (the 1.5x goal is below it for any server)" if floor > 1.5 else "-"))
    text += "\n"
    write_results("latency", "Small-query latency over Flight SQL and HTTP", text, figures)


def latency_table(results: dict[str, list[float]], baseline: str, short: str) -> str:
    """p50 / p90 / p99 / mean of each system's latencies (seconds), and p50 and p99 over `baseline`'s."""
    base = [v * 1000 for v in results[baseline]]
    rows = []
    for name, values in results.items():
        ms = [v * 1000 for v in values]
        rows.append([name, f"{percentile(ms, 50):.2f}", f"{percentile(ms, 90):.2f}", f"{percentile(ms, 99):.2f}",
                     f"{statistics.mean(ms):.2f}", f"{percentile(ms, 50) / percentile(base, 50):.2f}x",
                     f"{percentile(ms, 99) / percentile(base, 99):.2f}x"])
    return table(["server", "p50 ms", "p90 ms", "p99 ms", "mean ms", f"p50 vs {short}", f"p99 vs {short}"], rows)


LOOKUP_ROUTES = ("Satchel over Flight SQL (ADBC)", "in-process DuckDB")
# lookup -> (table, value in the SQL text rather than bound, what it is)
LOOKUPS = {"plain": ("events", False, "no index"),
           "indexed": ("events_indexed", False, "unique index on id"),
           "literal": ("events_indexed", True, "unique index on id, the value in the SQL text"),
           "arrow": ("events_arrow", True, "Arrow-accelerated (the default engine: DataFusion), the value in the SQL text")}


def point_lookups(cur, http: tuple[httpx.Client, str], events: Path, queries: int, name: str, literal: bool,
                  out: dict[str, list[float]]) -> None:
    """The point lookup on table `name` through Satchel and in-process DuckDB, alternating: with
    a bind parameter, or (`literal`) with the value written into the SQL text, as agents do
    (then over HTTP too: its API takes SQL text only)."""
    import duckdb

    local = duckdb.connect()
    local.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{events}')")
    if name == "events_indexed":
        local.execute(f"CREATE UNIQUE INDEX {name}_id ON {name} (id)")
    local.execute("CHECKPOINT")  # compressed, as the accelerator stores what it loads
    sql = LOAD_SQL["point"].replace("events", name)
    rnd = random.Random(16)
    if literal:
        text = lambda i: sql.replace("?", str(i))  # noqa: E731
        client, url = http
        routes = {"Satchel over Flight SQL (ADBC)": lambda i: (cur.execute(text(i)), cur.fetch_arrow_table())[1],
                  "in-process DuckDB": lambda i: local.execute(text(i)).to_arrow_table(),
                  "Satchel over HTTP (JSON)": lambda i: pa.Table.from_pylist(client.post(url, content=text(i)).json())}
    else:
        routes = {"Satchel over Flight SQL (ADBC)": lambda i: (cur.execute(sql, parameters=(i,)), cur.fetch_arrow_table())[1],
                  "in-process DuckDB": lambda i: local.execute(sql, [i]).to_arrow_table()}
    for n in range(WARMUP + queries):
        key = rnd.randrange(1_000_000)
        for route, run in routes.items():
            started = time.perf_counter()
            got = run(key)
            elapsed = time.perf_counter() - started
            assert got.num_rows == 1 and got.column("id")[0].as_py() == key, (route, got)
            if n >= WARMUP:
                out[route].append(elapsed)
    local.close()


if __name__ == "__main__":
    main()
