"""A file-mode DuckDB accelerator stays bounded over repeated full refreshes: the file's size after
each of N refreshes of the same data. A full refresh writes the new copy before the old one's
blocks are free, so the steady state is about two loads (the second refresh's size); target: no
refresh after the second grows the file past 1.1x that (a regression that keeps old versions
shows as a ratio growing with N).

    /tmp/venv/bin/python bench/duckdb_file_growth.py [--rows 1000000] [--refreshes 30]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, table, write_results  # noqa: E402

from engine.config import load_pod_text  # noqa: E402
from engine.runtime import Runtime  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--refreshes", type=int, default=30)
    args = parser.parse_args()
    pod_dir = DATA / "duckdb_file_growth"
    shutil.rmtree(pod_dir, ignore_errors=True)
    pod_dir.mkdir(parents=True)
    n = args.rows
    pq.write_table(pa.table({"id": pa.array(range(n), pa.int64()),
                             "payload": pa.array([f"row-{i:09d}-" + "x" * 30 for i in range(n)])}), pod_dir / "t.parquet")
    pod = load_pod_text("version: v1\nkind: Spicepod\nname: growth\ndatasets:\n  - from: file:t.parquet\n    name: t\n"
                        "    acceleration:\n      engine: duckdb\n      mode: file\n", base_dir=str(pod_dir))
    runtime = Runtime(pod, data_dir=str(pod_dir / ".satchel"))
    db = pod_dir / ".satchel" / "accelerated_duckdb.db"
    sizes, seconds = [], []
    try:
        for _ in range(args.refreshes):
            started = time.perf_counter()
            runtime.refresh("t", wait=True)
            seconds.append(time.perf_counter() - started)
            sizes.append(db.stat().st_size)
    finally:
        runtime.stop()
    first, steady = sizes[0], sizes[min(1, len(sizes) - 1)]
    marks = sorted({1, 2, 5, 10, args.refreshes} & set(range(1, args.refreshes + 1)))
    rows = [[k, f"{sizes[k - 1] / 2**20:.1f}", f"{sizes[k - 1] / first:.2f}", f"{sizes[k - 1] / steady:.2f}",
             f"{seconds[k - 1]:.2f}"] for k in marks]
    body = (f"{n:,} rows, {args.refreshes} full refreshes of the same Parquet file into a file-mode DuckDB.\n\n"
            + table(["after refresh", "file MiB", "x first", "x second", "refresh s"], rows)
            + f"\n\nLargest after the second refresh: {max(sizes[1:] or sizes) / steady:.2f}x the second's size "
              f"(target: at most 1.1x; {max(sizes) / first:.2f}x one load).")
    print(body)
    write_results("duckdb_file_growth", "DuckDB file size over repeated refreshes", body, [
        (f"file size, largest after {args.refreshes} refreshes / after the second", f"{max(sizes[1:] or sizes) / steady:.2f}x",
         "<= 1.1x")])


if __name__ == "__main__":
    main()
