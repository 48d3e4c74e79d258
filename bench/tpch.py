"""TPC-H SF1: the 22 queries through Satchel's Flight SQL (tables DuckDB-accelerated) vs the same
queries in-process in DuckDB over the same data loaded into tables.

Data: `CALL dbgen(sf=1)` written as one Parquet file per table under bench/.data/tpch_sf1
(generated once, then reused). Satchel loads each file into its DuckDB accelerator; the
in-process baseline loads the same files into DuckDB tables. Queries are the standard texts
from `tpch_queries()`, unchanged; Satchel is queried with the ADBC Flight SQL driver.

Per query: one warm-up each, then `--runs` rounds alternating baseline and Satchel (fair on a
noisy machine); the median counts. Every Satchel result is checked against the in-process one.
A second Satchel with the plan cache off (SATCHEL_PLAN_CACHE_SIZE=0) shows what the cache saves.

    /tmp/venv/bin/python bench/tpch.py [--sf 1] [--runs 5] [--queries 1,6,9] [--no-no-cache-column]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import decimal
import functools
import math
import statistics
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REPO, adbc_connect, alternate, satchel, table, write_results  # noqa: E402

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
    con.execute("CHECKPOINT")  # compressed, as the accelerator stores what it loads
    return con


def pod_yaml(directory: Path, engine: str = "duckdb") -> str:
    lines = ["version: v1", "kind: Spicepod", "name: tpch_bench", "datasets:"]
    for t in TABLES:
        lines += [f"  - from: file:{directory / t}.parquet", f"    name: {t}", "    acceleration:",
                  f"      engine: {engine}"]
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


def query_numbers(spec: str) -> list[int]:
    """`--queries`: a range `1-22` or a list `1,3,5`."""
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(q) for q in spec.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sf", type=float, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queries", default="1-22")
    parser.add_argument("--no-cache-column", action=argparse.BooleanOptionalAction, default=True,
                        help="also run a second server with the plan cache off (SATCHEL_PLAN_CACHE_SIZE=0)")
    parser.add_argument("--engine", choices=["duckdb", "arrow"], default="duckdb",
                        help="the accelerator (arrow: queries run in the federated engine's DataFusion workers)")
    parser.add_argument("--name", default="tpch", help="results file name (bench/results/<name>.md)")
    args = parser.parse_args()
    numbers = query_numbers(args.queries)
    directory, queries = make_data(args.sf)
    print("loading the in-process baseline", flush=True)
    base = baseline_connection(directory)

    def run_base(sql: str):
        return base.execute(sql).to_arrow_table()

    systems: dict[str, object] = {"base": run_base}
    with contextlib.ExitStack() as stack:
        variants = [("satchel", None)] + ([("no_cache", {"SATCHEL_PLAN_CACHE_SIZE": "0"})] if args.no_cache_column else [])
        for name, env in variants:
            print(f"{name}:", flush=True)
            server = stack.enter_context(satchel(DATA / "pods" / f"tpch_sf{args.sf:g}_{args.engine}_{name}",
                                                 pod_yaml(directory, args.engine), env=env))
            conn = stack.enter_context(adbc_connect(f"grpc://127.0.0.1:{server.flight_port}"))
            cur = stack.enter_context(conn.cursor())

            def run(sql: str, cur=cur):
                cur.execute(sql)
                return cur.fetch_arrow_table()

            systems[name] = run

        medians: dict[str, dict[int, float]] = {name: {} for name in systems}
        correct: dict[int, bool] = {}
        for n in numbers:
            sql = queries[n]
            expected = run_base(sql)  # warm-up, and the reference for the correctness check
            correct[n] = all(same(expected, fn(sql)) for name, fn in systems.items() if name != "base")
            times = alternate({name: functools.partial(fn, sql) for name, fn in systems.items()}, args.runs)
            for name in systems:
                medians[name][n] = statistics.median(times[name])
            line = "  ".join(f"{name} {medians[name][n] * 1000:8.1f} ms" for name in systems)
            print(f"  Q{n:<2} {line}  {medians['satchel'][n] / medians['base'][n]:5.2f}x"
                  f"{'' if correct[n] else '  RESULT DIFFERS'}", flush=True)
    base.close()

    cache = "no_cache" in systems
    headers = ["query", "in-process DuckDB ms", "Satchel ms", "ratio"]
    if cache:
        headers += ["Satchel, plan cache off ms", "ratio (cache off)"]
    headers.append("same result")
    rows = []
    for n in numbers:
        b, s = medians["base"][n], medians["satchel"][n]
        row = [f"Q{n}", f"{b * 1000:.1f}", f"{s * 1000:.1f}", f"{s / b:.2f}x"]
        if cache:
            c = medians["no_cache"][n]
            row += [f"{c * 1000:.1f}", f"{c / b:.2f}x"]
        rows.append(row + ["yes" if correct[n] else "NO"])
    total = {name: sum(m.values()) for name, m in medians.items()}
    geo = {name: math.exp(statistics.mean(math.log(medians[name][n] / medians["base"][n]) for n in numbers))
           for name in systems}
    row = ["total", f"{total['base'] * 1000:.1f}", f"{total['satchel'] * 1000:.1f}",
           f"{total['satchel'] / total['base']:.2f}x"]
    if cache:
        row += [f"{total['no_cache'] * 1000:.1f}", f"{total['no_cache'] / total['base']:.2f}x"]
    rows.append(row + ["yes" if all(correct.values()) else "NO"])
    body = table(headers, rows)
    goal = f"<= {GOAL}x" if args.engine == "duckdb" else "none (the Arrow route's figure, to catch regressions)"
    summary = (f"Satchel / in-process DuckDB: total {total['satchel'] / total['base']:.2f}x, geometric mean of "
               f"per-query ratios {geo['satchel']:.2f}x (goal: {goal}).")
    if cache:
        summary += (f" With the plan cache off (every DoGet re-parses and re-plans, as before the cache): total "
                    f"{total['no_cache'] / total['base']:.2f}x, geometric mean {geo['no_cache']:.2f}x.")
    print()
    print(body)
    print(summary)
    text = (f"TPC-H SF{args.sf:g}, the 22 standard queries (DuckDB's `tpch_queries()` text, unchanged). Baseline: "
            f"in-process DuckDB {duckdb.__version__} over the data loaded into tables (`to_arrow_table`). Satchel: "
            f"the same Parquet files accelerated with `engine: {args.engine}`, queried through Flight SQL with the ADBC driver on one "
            f"cursor (ADBC prepares each text once; every run is GetFlightInfo + DoGet, result fully fetched). "
            f"Median of {args.runs} runs per system, the systems alternating run by run (the machine is shared "
            f"and noisy); ratio = Satchel / baseline (< 1 is faster). Every result was checked equal to the "
            f"baseline's.\n\n{body}\n\n{summary}\n")
    write_results(args.name, f"TPC-H SF{args.sf:g}: Satchel ({args.engine}) vs in-process DuckDB", text, [
        (f"TPC-H SF{args.sf:g} accelerated ({args.engine}), total vs in-process DuckDB",
         f"{total['satchel'] / total['base']:.2f}x", goal),
        (f"TPC-H SF{args.sf:g} accelerated ({args.engine}), geometric mean", f"{geo['satchel']:.2f}x", goal)])


if __name__ == "__main__":
    main()
