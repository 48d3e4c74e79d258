"""Iceberg scans: Satchel's connector vs plain pyiceberg on the same table, side by side.

A pyiceberg SQL catalog (SQLite) with a local warehouse holds N rows in F data files
(partitioned by `bucket_id`); each measurement is the best of R runs, alternating the two run by run:
a full scan, a selective scan (one partition plus a range), and count(*) (the connector
answers from manifests, the baseline reads the column). Both sides load the table (its current
snapshot) for every scan, as a live query must.

    /tmp/venv/bin/python bench/iceberg_scan.py [--rows 2000000] [--files 8] [--runs 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import And, EqualTo, LessThan

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402
from connectors.base import DatasetSpec, Filter  # noqa: E402
from connectors.iceberg.connector import IcebergConnector  # noqa: E402


def build(root: Path, rows: int, files: int) -> dict[str, str]:
    uri, warehouse = f"sqlite:///{root / 'catalog.db'}", f"file://{root / 'warehouse'}"
    catalog = SqlCatalog("bench", uri=uri, warehouse=warehouse)
    catalog.create_namespace("bench")
    data = pa.table({
        "id": pa.array(range(rows), pa.int64()),
        "bucket_id": pa.array([i % files for i in range(rows)], pa.int64()),
        "amount": pa.array([i * 0.5 for i in range(rows)], pa.float64()),
        "label": pa.array([f"item-{i % 1000}" for i in range(rows)]),
    })
    table = catalog.create_table("bench.events", schema=data.schema)
    with table.update_spec() as update:
        update.add_identity("bucket_id")
    table.append(data)
    return {"iceberg_catalog_type": "sql", "iceberg_catalog_name": "bench", "iceberg_uri": uri,
            "iceberg_warehouse": warehouse}


def best_of_both(baseline, ours, runs: int) -> tuple[tuple[float, int], tuple[float, int]]:
    """(best time, rows) of each, alternating run by run so a noisy neighbour slows both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    rows = [0, 0]
    for _ in range(runs):
        for i, fn in enumerate((baseline, ours)):
            start = time.perf_counter()
            rows[i] = fn()
            times[i].append(time.perf_counter() - start)
    return (min(times[0]), rows[0]), (min(times[1]), rows[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        params = build(Path(tmp), args.rows, args.files)
        conn = IcebergConnector(DatasetSpec(name="events", path="bench.events", prefix="iceberg", params=params))
        catalog = SqlCatalog("bench", uri=params["iceberg_uri"], warehouse=params["iceberg_warehouse"])

        def table():  # a live read sees the current snapshot: both sides load the table each time
            return catalog.load_table("bench.events")
        selective = [Filter("bucket_id", "=", 3), Filter("id", "<", args.rows // 2)]

        def rows_of(reader) -> int:
            return sum(b.num_rows for b in reader)

        cases = [
            ("full scan", lambda: rows_of(table().scan().to_arrow_batch_reader()),
             lambda: rows_of(conn.scan())),
            ("bucket_id = 3 AND id < N/2", lambda: rows_of(table().scan(
                row_filter=And(EqualTo("bucket_id", 3), LessThan("id", args.rows // 2))).to_arrow_batch_reader()),
             lambda: rows_of(conn.scan(None, selective))),
            ("count(*)", lambda: rows_of(table().scan(selected_fields=("id",)).to_arrow_batch_reader()),
             lambda: conn.count([])),
        ]
        lines = ["| query | pyiceberg (s) | Satchel connector (s) | ratio (Satchel / pyiceberg) | rows |",
                 "|---|---|---|---|---|"]
        headlines = []
        for name, baseline, ours in cases:
            (base_t, base_rows), (our_t, our_rows) = best_of_both(baseline, ours, args.runs)
            assert base_rows == our_rows, f"{name}: {base_rows} != {our_rows} rows"
            lines.append(f"| {name} | {base_t:.3f} | {our_t:.3f} | {our_t / base_t:.2f}x | {our_rows} |")
            headlines.append((f"Iceberg {name}: time vs plain pyiceberg", f"{our_t / base_t:.2f}x", "<= 1.0x"))
            print(lines[-1], flush=True)
        conn.close()
    body = (f"{args.rows} rows x 4 columns in {args.files} partitions, best of {args.runs}; "
            "count(*) baseline reads the id column, the connector counts from manifests.\n\n" + "\n".join(lines))
    write_results("iceberg_scan", "Iceberg scans: connector vs plain pyiceberg", body, headlines)


if __name__ == "__main__":
    main()
