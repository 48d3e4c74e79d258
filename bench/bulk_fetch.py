"""Bulk fetch over Flight SQL: 10M rows x (int64, float64, short string), `SELECT * FROM t`.

Clients: the ADBC Flight SQL driver, `cursor.execute(sql)` + `cursor.fetch_arrow_table()`
(GetFlightInfo, then DoGet of the whole result). Servers, each serving the same Parquet file:

* Satchel, the table DuckDB-accelerated (whole query runs in DuckDB);
* Satchel, the table Arrow-accelerated (DataFusion over the in-memory table);
* roapi (DataFusion over the Parquet file), over its Flight SQL port;
* a bare `pyarrow.flight` server doing DoGet of the same in-memory table (no SQL at all;
  read with `pyarrow.flight`), the floor for moving these bytes over gRPC on this machine.

And, in this process, the DuckDB accelerator alone producing the same result as Arrow (Satchel's
`DuckDBAccelerator.query`, no transport): the DuckDB route can be no faster than that, nor than
the CPU it and the bare fetch need together spread over the cores. That ceiling is printed
next to the goal.

All servers run at once; each fetch runs once to warm up, then `--runs` rounds alternate the servers
(fair on a noisy machine); the median counts. MB/s is the Arrow
in-memory size of the table (the same for every server) over the wall time of the fetch.

    /tmp/venv/bin/python bench/bulk_fetch.py [--rows 10000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
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
from _common import DATA, REPO, adbc_connect, free_port, roapi, satchel, stop, table, wait_port, write_results  # noqa: E402
from accel.duckdb import DuckDBAccelerator  # noqa: E402
from tests.processes import total_cpu_seconds  # noqa: E402  (the repo is on the path: _common puts it there)

ROAPI = "roapi 0.12 (Parquet, DataFusion)"
PRODUCER = "DuckDB accelerator alone, in process (no transport)"
BARE = "bare pyarrow.flight DoGet (no SQL)"


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


def adbc_fetcher(stack: contextlib.ExitStack, uri: str, sql: str, rows: int):
    conn = stack.enter_context(adbc_connect(uri))

    def run() -> None:
        with conn.cursor() as cur:
            cur.execute(sql)
            result = cur.fetch_arrow_table()
        assert result.num_rows == rows, f"{uri}: got {result.num_rows} rows"

    return run


def accelerator_producer(stack: contextlib.ExitStack, parquet: Path, rows: int):
    """Satchel's DuckDB accelerator (in memory, as the pod has it), loaded from `parquet`, producing
    `SELECT * FROM t` as Arrow batches in this process: what the DuckDB route streams, without transport."""
    accelerator = DuckDBAccelerator(None)
    stack.callback(accelerator.close)
    batches = pq.ParquetFile(parquet).iter_batches()
    accelerator.replace("t", pa.RecordBatchReader.from_batches(pq.read_schema(parquet), batches))

    def run() -> None:
        produced = sum(batch.num_rows for batch in accelerator.query("SELECT * FROM t"))
        assert produced == rows

    return run


def bare_fetcher(stack: contextlib.ExitStack, parquet: Path, rows: int):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_flight_baseline.py")), str(parquet),
                             str(port)], stdout=subprocess.PIPE, text=True)
    stack.callback(stop, proc)
    assert proc.stdout.readline().strip() == "ready"
    wait_port(port, proc)
    client = flight.connect(f"grpc+tcp://127.0.0.1:{port}")
    stack.callback(client.close)

    def run() -> None:
        result = client.do_get(flight.Ticket(b"t")).read_all()
        assert result.num_rows == rows

    return run, proc.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    parquet = make_data(args.rows)
    reference = pq.read_table(parquet)
    mb = reference.nbytes / 1e6
    del reference
    print(f"table: {args.rows:,} rows, {mb:.0f} MB in Arrow", flush=True)

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
    runners = {}
    with contextlib.ExitStack() as stack:
        # Every server runs at once and the fetches alternate run by run, so a noisy neighbour
        # slows all of them alike.
        print("satchel:", flush=True)
        server = stack.enter_context(satchel(DATA / "pods" / "bulk", pod))
        uri = f"grpc://127.0.0.1:{server.flight_port}"
        runners["Satchel (DuckDB-accelerated)"] = adbc_fetcher(stack, uri, "SELECT * FROM t_duckdb", args.rows)
        runners["Satchel (Arrow-accelerated)"] = adbc_fetcher(stack, uri, "SELECT * FROM t_arrow", args.rows)
        print("roapi:", flush=True)
        roapi_uri = stack.enter_context(roapi({"t": parquet}, DATA / "roapi-bulk.log")).flight
        runners[ROAPI] = adbc_fetcher(stack, roapi_uri, "SELECT * FROM t", args.rows)
        print("bare pyarrow.flight:", flush=True)
        runners[BARE], bare_pid = bare_fetcher(stack, parquet, args.rows)
        print("DuckDB accelerator in process:", flush=True)
        runners[PRODUCER] = accelerator_producer(stack, parquet, args.rows)
        for run in runners.values():  # warm-up
            run()
        times: dict[str, list[float]] = {name: [] for name in runners}
        cpu: dict[str, list[float]] = {BARE: [], PRODUCER: []}  # CPU seconds of client and server together
        for i in range(args.runs):
            for name, run in runners.items():
                server = total_cpu_seconds(bare_pid) if name == BARE else 0.0  # the bare server's share
                own = time.process_time()
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
                if name in cpu:
                    cpu[name].append(time.process_time() - own + (total_cpu_seconds(bare_pid) - server if name == BARE else 0.0))
            print(f"  round {i + 1}: " + ", ".join(f"{t[-1]:.3f}s" for t in times.values()), flush=True)
    results = {name: (statistics.median(t), t) for name, t in times.items()}

    roapi_s = results[ROAPI][0]
    bare_s = results[BARE][0]
    rows = []
    for name, (median, times) in results.items():
        rows.append([name, f"{median:.3f}", " / ".join(f"{t:.3f}" for t in times), f"{mb / median:,.0f}",
                     f"{args.rows / median / 1e6:.1f}", f"{roapi_s / median:.2f}x", f"{bare_s / median:.2f}x"])
    body = table(["server", "median s", "runs s", "MB/s", "Mrows/s", "speed vs roapi", "speed vs bare"], rows)
    print()
    print(body)
    text = (f"`SELECT *` of {args.rows:,} rows (int64, float64, short string; {mb:.0f} MB as Arrow) through the ADBC "
            f"Flight SQL driver (`fetch_arrow_table`), client and server on one 2-core machine. Median of "
            f"{args.runs} runs after one warm-up, the servers alternating run by run. Speed ratios > 1 mean faster than the baseline.\n\n{body}\n")
    produce_s, produce_cpu, bare_cpu = results[PRODUCER][0], statistics.median(cpu[PRODUCER]), statistics.median(cpu[BARE])
    cores = len(os.sched_getaffinity(0))
    ceiling = bare_s / max(produce_s, (bare_cpu + produce_cpu) / cores)
    text += (f"\nThe DuckDB route's ceiling: bare {bare_s:.3f} s / max(DuckDB producing the result alone {produce_s:.3f} s, "
             f"(the bare fetch's CPU {bare_cpu:.3f} s + DuckDB's {produce_cpu:.3f} s) / {cores} cores) = {ceiling:.2f}x: "
             f"no transport, however cheap, takes it past that on this machine.\n")
    print(text.splitlines()[-1])
    figures = [(f"bulk fetch speed vs bare DoGet, {accel}", f"{bare_s / results[f'Satchel ({accel})'][0]:.2f}x", ">= 0.85x")
               for accel in ("DuckDB-accelerated", "Arrow-accelerated")]
    figures.insert(1, ("bulk fetch ceiling vs bare DoGet, DuckDB-accelerated (DuckDB's own Arrow production and CPU)",
                       f"{ceiling:.2f}x", "-"))
    write_results("bulk_fetch", "Bulk fetch over Flight SQL", text, figures)


if __name__ == "__main__":
    main()
