"""TPC-H SF1: the 22 queries through Satchel's Flight SQL (tables DuckDB-accelerated) vs the same
queries in-process in DuckDB over the same data loaded into tables.

Data: `CALL dbgen(sf=1)` written as one Parquet file per table under bench/.data/tpch_sf1
(generated once, then reused). Satchel loads each file into its DuckDB accelerator; the
in-process baseline loads the same files into DuckDB tables. Queries are the standard texts
from `tpch_queries()`, unchanged; Satchel is queried with the ADBC Flight SQL driver.

Per query: one warm-up each, then `--runs` rounds alternating baseline and Satchel (fair on a
noisy machine); the median counts. Every Satchel result is checked against the in-process one.

    /tmp/venv/bin/python bench/tpch.py [--sf 1] [--runs 3] [--queries 1,6,9]
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import math
import statistics
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REPO, adbc_connect, satchel, table, write_results  # noqa: E402

TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")
GOAL = 1.3


def tpch_connection() -> duckdb.DuckDBPyConnection:
    import duckdb_extension_tpch

    path = (Path(duckdb_extension_tpch.__file__).parent / "extensions" / f"v{duckdb.__version__}"
            / "tpch.duckdb_extension")
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{path}'")
    return con


def make_data(sf: float) -> tuple[Path, dict[int, str]]:
    directory = DATA / f"tpch_sf{sf:g}"
    con = tpch_connection()
    queries = dict(con.execute("SELECT query_nr, query FROM tpch_queries()").fetchall())
    if not all((directory / f"{t}.parquet").exists() for t in TABLES):
        directory.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        print(f"  generating TPC-H SF{sf:g} -> {directory.relative_to(REPO)}", flush=True)
        con.execute(f"CALL dbgen(sf={sf})")
        for t in TABLES:
            tmp = directory / f"{t}.parquet.tmp"
            con.execute(f"COPY {t} TO '{tmp}' (FORMAT parquet)")
            tmp.rename(directory / f"{t}.parquet")
        print(f"  generated in {time.monotonic() - started:.0f}s", flush=True)
    con.close()
    return directory, queries


def baseline_connection(directory: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for t in TABLES:
        con.execute(f"CREATE TABLE {t} AS SELECT * FROM read_parquet('{directory / t}.parquet')")
    return con


def pod_yaml(directory: Path) -> str:
    lines = ["version: v1", "kind: Spicepod", "name: tpch_bench", "datasets:"]
    for t in TABLES:
        lines += [f"  - from: file:{directory / t}.parquet", f"    name: {t}", "    acceleration:",
                  "      engine: duckdb"]
    return "\n".join(lines) + "\n"


def norm(v: object) -> object:
    if isinstance(v, (decimal.Decimal, int)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def same(a, b) -> bool:
    ra = [[norm(v) for v in row.values()] for row in a.to_pylist()]
    rb = [[norm(v) for v in row.values()] for row in b.to_pylist()]
    return len(ra) == len(rb) and all(
        all(math.isclose(x, y, rel_tol=1e-9) if isinstance(x, float) and isinstance(y, float) else x == y
            for x, y in zip(p, q)) for p, q in zip(ra, rb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sf", type=float, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", default="1-22")
    parser.add_argument("--name", default="tpch", help="results file name (bench/results/<name>.md)")
    args = parser.parse_args()
    if "-" in args.queries:
        lo, hi = args.queries.split("-")
        numbers = list(range(int(lo), int(hi) + 1))
    else:
        numbers = [int(q) for q in args.queries.split(",")]
    directory, queries = make_data(args.sf)
    print("loading the in-process baseline", flush=True)
    base = baseline_connection(directory)
    print("satchel:", flush=True)
    with satchel(DATA / "pods" / f"tpch_sf{args.sf:g}", pod_yaml(directory)) as server, \
            adbc_connect(f"grpc://127.0.0.1:{server.flight_port}") as conn:
        cur = conn.cursor()

        def run_satchel(sql: str):
            cur.execute(sql)
            return cur.fetch_arrow_table()

        def run_base(sql: str):
            return base.execute(sql).fetch_arrow_table()

        rows = []
        totals = {"base": 0.0, "satchel": 0.0}
        for n in numbers:
            sql = queries[n]
            expected, got = run_base(sql), run_satchel(sql)  # warm-up, and the correctness check
            ok = same(expected, got)
            times: dict[str, list[float]] = {"base": [], "satchel": []}
            for _ in range(args.runs):
                for name, fn in (("base", run_base), ("satchel", run_satchel)):
                    started = time.perf_counter()
                    fn(sql)
                    times[name].append(time.perf_counter() - started)
            b, s = statistics.median(times["base"]), statistics.median(times["satchel"])
            totals["base"] += b
            totals["satchel"] += s
            rows.append([f"Q{n}", f"{b * 1000:.1f}", f"{s * 1000:.1f}", f"{s / b:.2f}x", "yes" if ok else "NO"])
            print(f"  Q{n:<2} duckdb {b * 1000:8.1f} ms  satchel {s * 1000:8.1f} ms  {s / b:5.2f}x"
                  f"{'' if ok else '  RESULT DIFFERS'}", flush=True)
        cur.close()
    ratio = totals["satchel"] / totals["base"]
    rows.append(["total", f"{totals['base'] * 1000:.1f}", f"{totals['satchel'] * 1000:.1f}", f"{ratio:.2f}x",
                 "yes" if all(r[4] == "yes" for r in rows) else "NO"])
    geo = math.exp(statistics.mean(math.log(float(r[3][:-1])) for r in rows[:-1]))
    body = table(["query", "in-process DuckDB ms", "Satchel Flight SQL ms", "ratio", "same result"], rows)
    summary = (f"Total ratio {ratio:.2f}x (goal <= {GOAL}x), geometric mean of per-query ratios {geo:.2f}x.")
    print()
    print(body)
    print(summary)
    text = (f"TPC-H SF{args.sf:g}, the 22 standard queries (DuckDB's `tpch_queries()` text, unchanged). Baseline: "
            f"in-process DuckDB {duckdb.__version__} over the data loaded into tables. Satchel: the same Parquet "
            f"files DuckDB-accelerated, queried through Flight SQL with the ADBC driver (result fully fetched). "
            f"Median of {args.runs} alternating runs after a warm-up; ratio = Satchel / baseline (< 1 is faster).\n\n"
            f"{body}\n\n{summary}\n")
    write_results(args.name, f"TPC-H SF{args.sf:g}: Satchel vs in-process DuckDB", text)
    base.close()


if __name__ == "__main__":
    main()
