"""Loading progress that means something: rows, Arrow bytes and, where the source knows its size
(Parquet footers), a percentage; in the dataset's status while a load runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa

from engine.config import load_pod
from engine.runtime import Runtime
from tests.conftest import REPO


def test_progress_rows_bytes_and_percent(tmp_path: Path) -> None:
    shutil.copytree(REPO / "data", tmp_path / "data")
    shutil.copy(REPO / "spicepod.yaml", tmp_path / "spicepod.yaml")
    runtime = Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))
    try:
        orders = runtime.datasets["orders"]
        expected = orders.connector.expected_rows()
        assert expected == 6000  # the Parquet parts' footers, before reading any row
        assert runtime.datasets["customers"].connector.expected_rows() is None  # CSV: unknown until read
        batch = pa.record_batch({"x": pa.array(range(1500), pa.int64())})
        reader = orders._with_progress(pa.RecordBatchReader.from_batches(batch.schema, [batch] * 4), expected)
        orders.status = "loading"
        reader.read_next_batch()
        reader.read_next_batch()
        info = orders.info()
        assert info["rows_loading"] == 3000 and info["bytes_loading"] == 2 * batch.nbytes
        assert info["rows_expected"] == 6000 and info["percent_loaded"] == 50.0
        orders.status = "ready"
        assert orders.info()["rows_loading"] is None
    finally:
        runtime.stop()
