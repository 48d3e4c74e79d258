"""Refresh throughput from PostgreSQL into a file-mode DuckDB accelerator (issue 16 item 6).

TPC-H `lineitem` (numeric(15,2) money columns, dates, text) is loaded into a throwaway
PostgreSQL 15 cluster; then, alternating run by run, the same full read is timed three ways:

* raw ADBC: the ADBC PostgreSQL driver's `SELECT * FROM lineitem` read to its end (no write);
* DuckDB's postgres scanner (wheel `duckdb-extension-postgres`, loaded as
  `postgres_scanner.duckdb_extension`): `CREATE TABLE t AS SELECT * FROM pg.public.lineitem`
  and `CHECKPOINT` into a fresh DuckDB file (read and write; LOAD and ATTACH are set-up, untimed);
* Satchel: `Runtime.refresh()` of a `postgres:` dataset with a file-mode DuckDB accelerator, on
  a runtime made once (read, write, checkpoint, as a scheduled refresh does; start-up untimed).
  The table is large, so the read goes through DuckDB's postgres extension in a private
  database in a process of its own (connectors/sql/pg_scanner.py), streamed back as Arrow IPC
  into the accelerator.

Prints rows/s and Satchel's ratio to the faster of the two baselines (goal: at least 0.8x).

    /tmp/venv/bin/python bench/refresh_postgres.py [--sf 0.1] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, table, write_results  # noqa: E402
from tpch import tpch_connection  # noqa: E402

GOAL = 0.8


def scanner_extension(directory: str) -> str:
    """The postgres scanner from its wheel, under the file name DuckDB requires."""
    import duckdb_extension_postgres

    path = os.path.join(directory, "postgres_scanner.duckdb_extension")
    shutil.copy(Path(duckdb_extension_postgres.__file__).parent / "extensions" / f"v{duckdb.__version__}"
                / "postgres.duckdb_extension", path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sf", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import adbc_driver_postgresql.dbapi as pgdb

    from engine.config import load_pod
    from engine.runtime import Runtime
    from tests.integration.postgres_server import start_server

    pg = start_server()
    work = tempfile.mkdtemp(prefix="satchel-bench-refresh-")
    try:
        con = tpch_connection()
        con.execute(f"CALL dbgen(sf={args.sf})")
        lineitem = con.execute("SELECT * FROM lineitem").fetch_arrow_table()
        con.close()
        pg.ingest("lineitem", lineitem)
        for col in ("l_quantity", "l_extendedprice", "l_discount", "l_tax"):
            pg.execute(f"ALTER TABLE lineitem ALTER COLUMN {col} TYPE numeric(15,2)")
        pg.execute("VACUUM ANALYZE lineitem")
        rows = lineitem.num_rows
        del lineitem
        uri = pg.admin_uri()
        ext = scanner_extension(work)
        pod_dir = Path(work) / "pod"
        pod_dir.mkdir()
        (pod_dir / "spicepod.yaml").write_text(f"""version: v1
kind: Spicepod
name: refresh_bench
datasets:
  - from: postgres:public.lineitem
    name: lineitem
    params:
{pg.params_yaml(6)}
    acceleration:
      engine: duckdb
      mode: file
""")

        def raw_adbc() -> tuple[float, int]:
            started = time.monotonic()
            with pgdb.connect(uri) as c, c.cursor() as cur:
                cur.execute("SELECT * FROM lineitem")
                rows = sum(b.num_rows for b in cur.fetch_record_batch())
            return time.monotonic() - started, rows

        def scanner() -> tuple[float, int]:
            """A fresh database file; the timer starts after LOAD and ATTACH (set-up, as the
            sidecar's start-up is for the refresh)."""
            path = Path(work) / "scanner.duckdb"
            c = duckdb.connect(str(path), config={"allow_unsigned_extensions": "true"})
            try:
                c.execute(f"LOAD '{ext}'")
                c.execute(f"ATTACH '{uri}' AS pg (TYPE postgres, READ_ONLY)")
                started = time.monotonic()
                c.execute("CREATE TABLE t AS SELECT * FROM pg.public.lineitem")
                c.execute("CHECKPOINT")
                elapsed = time.monotonic() - started
                return elapsed, c.execute("SELECT count(*) FROM t").fetchone()[0]
            finally:
                c.close()
                path.unlink()

        runtime = Runtime(load_pod(pod_dir / "spicepod.yaml"), data_dir=str(Path(work) / "data"))

        def satchel() -> tuple[float, int]:
            """A full refresh of the running sidecar's dataset (as a scheduled one is)."""
            started = time.monotonic()
            rows = runtime.refresh("lineitem", wait=True)["rows"]
            return time.monotonic() - started, rows


        systems = {"raw ADBC read (no write)": raw_adbc, "DuckDB postgres scanner": scanner,
                   "Satchel refresh (into a DuckDB file)": satchel}
        times: dict[str, list[float]] = {name: [] for name in systems}
        for name, fn in systems.items():  # warm-up: caches, extension load, Satchel's first load
            fn()
        for run in range(args.runs):
            for name, fn in systems.items():
                elapsed, got = fn()
                times[name].append(elapsed)
                assert got == rows, (name, got, rows)
                print(f"  run {run + 1} {name}: {times[name][-1]:.2f}s", flush=True)
        rate = {name: rows / statistics.median(t) for name, t in times.items()}
        best = max(rate["raw ADBC read (no write)"], rate["DuckDB postgres scanner"])
        ratio = rate["Satchel refresh (into a DuckDB file)"] / best
        body = table(["system", "median s", "runs s", "k rows/s", "vs faster baseline"],
                     [[name, f"{statistics.median(t):.2f}", " / ".join(f"{x:.2f}" for x in t),
                       f"{rate[name] / 1000:.0f}", f"{rate[name] / best:.2f}x"] for name, t in times.items()])
        verdict = "meets" if ratio >= GOAL else "misses"
        text = (f"TPC-H lineitem SF{args.sf:g} ({rows:,} rows) from PostgreSQL 15 (local, one machine), "
                f"median of {args.runs} alternating runs after a warm-up.\n\n{body}\n\n"
                f"Satchel at {ratio:.2f}x the faster baseline: {verdict} the {GOAL}x goal. Load average at the end: "
                f"{os.getloadavg()[0]:.2f}.")
        print(text)
        write_results("refresh_postgres", "Refresh from PostgreSQL into DuckDB", text, [
            (f"refresh rows/s from PostgreSQL (SF{args.sf:g} lineitem) vs the faster baseline", f"{ratio:.2f}x",
             f">= {GOAL}x")])
        runtime.stop()
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    main()
