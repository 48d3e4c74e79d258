"""TPC-H federated to PostgreSQL (issue 16 item 5): the 22 queries through Satchel's Flight SQL
over live (not accelerated) `postgres:` datasets vs the same queries sent to PostgreSQL directly.

Data: `CALL dbgen(sf=...)` from the `duckdb-extension-tpch` wheel, loaded into a throwaway
PostgreSQL 15 (tests/integration/postgres_server.py) with the TPC-H types (numeric(15,2) money,
date, text), primary keys and the two secondary indexes of tests/integration/test_postgres_tpch.py,
then ANALYZEd. Satchel serves each table as a federated dataset of the same name, so the query
texts (DuckDB's `tpch_queries()`) run unchanged on both sides.

Both sides use an ADBC client (Flight SQL driver for Satchel, PostgreSQL driver for the direct
route) and read the whole result as Arrow. Per query: one warm-up each, then `--runs` rounds
alternating the systems run by run; the median counts. Every Satchel answer is checked equal to
PostgreSQL's (numbers within 1e-9 relative; PostgreSQL's numeric arrives as text or decimal).

    /tmp/venv/bin/python bench/tpch_federated.py [--sf 0.1] [--runs 3] [--queries 1-22]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, adbc_connect, alternate, satchel, table, write_results  # noqa: E402
from tpch import TABLES, query_numbers, tpch_connection  # noqa: E402

GOAL = 1.1


def load_postgres(pg, sf: float) -> dict[int, str]:
    """TPC-H at `sf` into `public` of the server; returns the query texts."""
    from tests.integration.postgres_server import load_tpch

    con = tpch_connection()
    try:
        con.execute(f"CALL dbgen(sf={sf})")
        load_tpch(pg, con, TABLES, "public")
        return dict(con.execute("SELECT query_nr, query FROM tpch_queries()").fetchall())
    finally:
        con.close()


def pod_yaml(pg) -> str:
    lines = ["version: v1", "kind: Spicepod", "name: tpch_federated", "datasets:"]
    for name in TABLES:
        lines += [f"  - from: postgres:public.{name}", f"    name: {name}", "    params:", pg.params_yaml(6)]
    return "\n".join(lines) + "\n"


def _comparable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Numbers as float64 (PostgreSQL's numeric may arrive as text), dates as text."""
    t = column.type
    if pa.types.is_decimal(t) or pa.types.is_integer(t) or pa.types.is_floating(t):
        return pc.cast(column, pa.float64())
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return pc.cast(column, pa.string())
    return column


def same(got: pa.Table, want: pa.Table) -> bool:
    """Equal rows in order, numbers within 1e-9 relative (column names may differ in case only)."""
    if got.num_rows != want.num_rows or got.num_columns != want.num_columns:
        return False
    for a, b in zip(got.columns, want.columns):
        a, b = _comparable(a), _comparable(b)
        if pa.types.is_floating(a.type) != pa.types.is_floating(b.type):  # numeric text vs number
            a, b = pc.cast(a, pa.float64()), pc.cast(b, pa.float64())
        if pa.types.is_floating(a.type):
            x, y = a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False)
            if not np.allclose(x, y, rtol=1e-9, atol=0, equal_nan=True):
                return False
        elif not a.equals(b):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sf", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", default="1-22")
    parser.add_argument("--name", default="tpch_federated", help="results file name (bench/results/<name>.md)")
    args = parser.parse_args()
    numbers = query_numbers(args.queries)

    import adbc_driver_postgresql.dbapi as pgdb

    from tests.integration.postgres_server import start_server

    pg = start_server()
    work = Path(tempfile.mkdtemp(prefix="satchel-bench-tpch-fed-"))
    try:
        print(f"loading TPC-H SF{args.sf:g} into PostgreSQL", flush=True)
        queries = load_postgres(pg, args.sf)
        # log_statement=all costs both routes the same; keep the server as the tests run it
        direct = pgdb.connect(f"postgresql://{pg.user}:{pg.password}@{pg.host}:{pg.port}/{pg.db}?sslmode=disable",
                              autocommit=True)
        with satchel(work / "pod", pod_yaml(pg)) as server, \
                adbc_connect(f"grpc://127.0.0.1:{server.flight_port}") as fconn, \
                fconn.cursor() as fcur, direct.cursor() as pcur:

            def run_pg(sql: str) -> pa.Table:
                pcur.execute(sql)
                return pcur.fetch_arrow_table()

            def run_satchel(sql: str) -> pa.Table:
                fcur.execute(sql)
                return fcur.fetch_arrow_table()

            systems = {"postgres": run_pg, "satchel": run_satchel}
            medians: dict[str, dict[int, float]] = {name: {} for name in systems}
            correct: dict[int, bool] = {}
            for n in numbers:
                sql = queries[n].strip().rstrip(";")  # PostgreSQL reads through COPY (...)
                expected = run_pg(sql)  # warm-up, and the reference
                correct[n] = same(run_satchel(sql), expected)  # warm-up
                times = alternate({name: functools.partial(fn, sql) for name, fn in systems.items()}, args.runs)
                for name in systems:
                    medians[name][n] = statistics.median(times[name])
                print(f"  Q{n:<2} postgres {medians['postgres'][n] * 1000:8.1f} ms  satchel "
                      f"{medians['satchel'][n] * 1000:8.1f} ms  {medians['satchel'][n] / medians['postgres'][n]:5.2f}x"
                      f"{'' if correct[n] else '  RESULT DIFFERS'}", flush=True)
        direct.close()
    finally:
        pg.stop()

    rows = [[f"Q{n}", f"{medians['postgres'][n] * 1000:.1f}", f"{medians['satchel'][n] * 1000:.1f}",
             f"{medians['satchel'][n] / medians['postgres'][n]:.2f}x", "yes" if correct[n] else "NO"] for n in numbers]
    total = {name: sum(m.values()) for name, m in medians.items()}
    ratio = total["satchel"] / total["postgres"]
    geo = math.exp(statistics.mean(math.log(medians["satchel"][n] / medians["postgres"][n]) for n in numbers))
    rows.append(["total", f"{total['postgres'] * 1000:.1f}", f"{total['satchel'] * 1000:.1f}", f"{ratio:.2f}x",
                 "yes" if all(correct.values()) else "NO"])
    body = table(["query", "PostgreSQL direct ms", "Satchel federated ms", "ratio", "same result"], rows)
    summary = (f"Satchel federated / PostgreSQL direct: total {ratio:.2f}x, geometric mean of per-query ratios "
               f"{geo:.2f}x ({'meets' if ratio <= GOAL else 'misses'} the total <= {GOAL}x goal). Load average at "
               f"the end: {os.getloadavg()[0]:.2f}.")
    print()
    print(body)
    print(summary)
    text = (f"TPC-H SF{args.sf:g}, the 22 standard queries (DuckDB's `tpch_queries()` text, unchanged) over the "
            f"same PostgreSQL 15 tables (local, one machine; keys, two indexes, ANALYZE). PostgreSQL direct: the ADBC "
            f"PostgreSQL driver on one connection. Satchel: the 8 tables as live `postgres:` datasets (no "
            f"acceleration), queried through Flight SQL with the ADBC driver on one cursor. Both read the whole "
            f"result as Arrow. Median of {args.runs} runs per system after a warm-up, alternating run by run; "
            f"ratio = Satchel / PostgreSQL (< 1 is faster). Every Satchel answer was checked equal to "
            f"PostgreSQL's.\n\n{body}\n\n{summary}\n")
    write_results(args.name, f"TPC-H SF{args.sf:g} federated to PostgreSQL: Satchel vs PostgreSQL direct", text, [
        (f"TPC-H SF{args.sf:g} federated, total vs PostgreSQL direct", f"{ratio:.2f}x", f"<= {GOAL}x"),
        (f"TPC-H SF{args.sf:g} federated, geometric mean", f"{geo:.2f}x", "—")])


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    main()
