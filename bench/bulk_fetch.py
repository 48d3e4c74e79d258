"""Bulk fetch over Flight SQL: 10M rows x (int64, float64, short string), `SELECT * FROM t`.

Clients: the ADBC Flight SQL driver, `cursor.execute(sql)` + `cursor.fetch_arrow_table()`
(GetFlightInfo, then DoGet of the whole result). Servers, each serving the same Parquet file:

* Satchel, the table DuckDB-accelerated (whole query runs in DuckDB);
* Satchel, the table Arrow-accelerated (DataFusion over the in-memory table);
* roapi (DataFusion over the Parquet file), over its Flight SQL port;
* a bare `pyarrow.flight` server doing DoGet of the same in-memory table (no SQL at all;
  read with `pyarrow.flight`), the floor for moving these bytes over gRPC on this machine.

Each fetch runs once to warm up, then 3 times; the median counts. MB/s is the Arrow
in-memory size of the table (the same for every server) over the wall time of the fetch.

    /tmp/venv/bin/python bench/bulk_fetch.py [--rows 10000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REPO, adbc_connect, free_port, roapi, satchel, stop, table, timed, write_results  # noqa: E402


def make_data(rows: int) -> Path:
    """`bulk_<rows>.parquet`: id int64, value float64, tag (short string, 1000 distinct)."""
    path = DATA / f"bulk_{rows}.parquet"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    print(f"  generating {rows:,} rows -> {path.relative_to(REPO)}", flush=True)
    ids = np.arange(rows, dtype=np.int64)
    tags = pa.array([f"tag-{i:03d}" for i in range(1000)], pa.string())
    tag = pc.take(tags, pa.array(ids % 1000))
    values = ids * 0.5
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.table({"id": ids, "value": values, "tag": tag}), tmp, row_group_size=1 << 20)
    tmp.rename(path)
    return path


def adbc_fetch(uri: str, sql: str):
    conn = adbc_connect(uri)

    def run() -> pa.Table:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    return conn, run


def measure_adbc(uri: str, sql: str, runs: int, rows: int) -> tuple[float, list[float]]:
    conn, run = adbc_fetch(uri, sql)
    try:
        median, times, result = timed(run, runs)
    finally:
        conn.close()
    assert result.num_rows == rows, f"{uri}: got {result.num_rows} rows"
    return median, times


def measure_bare(parquet: Path, runs: int, rows: int) -> tuple[float, list[float]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_flight_baseline.py")), str(parquet),
                             str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        client = flight.connect(f"grpc+tcp://127.0.0.1:{port}")
        median, times, result = timed(lambda: client.do_get(flight.Ticket(b"t")).read_all(), runs)
        client.close()
    finally:
        stop(proc)
    assert result.num_rows == rows
    return median, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    parquet = make_data(args.rows)
    reference = pq.read_table(parquet)
    mb = reference.nbytes / 1e6
    del reference
    print(f"table: {args.rows:,} rows, {mb:.0f} MB in Arrow", flush=True)

    results: dict[str, tuple[float, list[float]]] = {}
    pod = f"""
version: v1
kind: Spicepod
name: bulk
datasets:
  - from: file:{parquet}
    name: t_duckdb
    acceleration:
      engine: duckdb
  - from: file:{parquet}
    name: t_arrow
    acceleration:
      engine: arrow
"""
    print("satchel:", flush=True)
    with satchel(DATA / "pods" / "bulk", pod) as server:
        uri = f"grpc://127.0.0.1:{server.flight_port}"
        results["Satchel (DuckDB-accelerated)"] = measure_adbc(uri, "SELECT * FROM t_duckdb", args.runs, args.rows)
        print("  duckdb done", flush=True)
        results["Satchel (Arrow-accelerated)"] = measure_adbc(uri, "SELECT * FROM t_arrow", args.runs, args.rows)
        print("  arrow done", flush=True)
    print("roapi:", flush=True)
    with roapi({"t": parquet}, DATA / "roapi-bulk.log") as uri:
        results["roapi 0.12 (Parquet, DataFusion)"] = measure_adbc(uri, "SELECT * FROM t", args.runs, args.rows)
    print("bare pyarrow.flight:", flush=True)
    results["bare pyarrow.flight DoGet (no SQL)"] = measure_bare(parquet, args.runs, args.rows)

    roapi_s = results["roapi 0.12 (Parquet, DataFusion)"][0]
    bare_s = results["bare pyarrow.flight DoGet (no SQL)"][0]
    rows = []
    for name, (median, times) in results.items():
        rows.append([name, f"{median:.3f}", " / ".join(f"{t:.3f}" for t in times), f"{mb / median:,.0f}",
                     f"{args.rows / median / 1e6:.1f}", f"{roapi_s / median:.2f}x", f"{bare_s / median:.2f}x"])
    body = table(["server", "median s", "runs s", "MB/s", "Mrows/s", "speed vs roapi", "speed vs bare"], rows)
    print()
    print(body)
    text = (f"`SELECT *` of {args.rows:,} rows (int64, float64, short string; {mb:.0f} MB as Arrow) through the ADBC "
            f"Flight SQL driver (`fetch_arrow_table`), client and server on one 2-core machine. Median of "
            f"{args.runs} runs after one warm-up. Speed ratios > 1 mean faster than the baseline.\n\n{body}\n")
    write_results("bulk_fetch", "Bulk fetch over Flight SQL", text)


if __name__ == "__main__":
    main()
