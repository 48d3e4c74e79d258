"""The memory budget: runtime.params.memory_limit (else a share of the container's limit) bounds
DuckDB accelerators and each federated query's DataFusion pool; past it a query fails with
`resource_exhausted` (or spills) and the runtime keeps serving."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.config import load_pod
from engine.errors import ConfigError, ResourceExhausted
from engine.memory import budget_bytes, container_limit, size_bytes
from engine.runtime import Runtime


def test_sizes_and_the_default_budget() -> None:
    assert size_bytes("512MiB") == 512 << 20 and size_bytes("2GB") == 2 * 10**9 and size_bytes("1000") == 1000
    assert budget_bytes("64MiB") == 64 << 20 and size_bytes("512Mi") == 512 << 20 and size_bytes("1G") == 10**9
    assert 0 < budget_bytes(None) == int(container_limit() * 0.75)
    with pytest.raises(ConfigError, match="not a size"):
        size_bytes("lots")


@pytest.fixture
def runtime(tmp_path):
    n = 2_000_000
    pq.write_table(pa.table({"id": pa.array(range(n), pa.int64()),
                             "k": pa.array([f"key-{i % 500_000:07d}-padding-to-make-it-wide" for i in range(n)])}),
                   tmp_path / "big.parquet")
    (tmp_path / "spicepod.yaml").write_text("""
version: v1
kind: Spicepod
name: budget
runtime:
  params:
    memory_limit: 48MiB
datasets:
  - from: file:big.parquet
    name: live_big
  - from: file:big.parquet
    name: acc_big
    acceleration:
      engine: duckdb
""")
    rt = Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))
    rt.start()
    deadline = time.monotonic() + 60
    while not rt.ready():
        assert time.monotonic() < deadline, rt.status()
        time.sleep(0.05)
    yield rt
    rt.stop()


def test_duckdb_accelerators_get_their_share_of_the_budget(runtime) -> None:
    [row] = runtime.query("SELECT count(*) AS n FROM acc_big").read_all().to_pylist()
    assert row == {"n": 2_000_000}
    acc = next(iter(runtime.duckdb_instances.values()))
    limit = acc.cursor().execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.endswith("MiB") and float(limit.split()[0]) <= 24.5


def test_a_federated_query_past_its_pool_fails_clearly_and_the_runtime_keeps_serving(runtime) -> None:
    sql = "SELECT k, count(*) AS n, max(id) AS m FROM live_big GROUP BY k ORDER BY k"
    with pytest.raises(ResourceExhausted) as info:  # a 500,000-group aggregate in a 16 MiB pool
        runtime.query(sql).read_all()
    assert info.value.code == "resource_exhausted" and "48 MiB" in info.value.message
    assert runtime.query("SELECT count(*) AS n FROM live_big").read_all().to_pylist() == [{"n": 2_000_000}]


def _spill_dirs() -> set[str]:
    import glob
    import tempfile

    return set(glob.glob(f"{tempfile.gettempdir()}/satchel-spill-*"))


def test_a_federated_scan_larger_than_its_share_spills_to_disk_and_streams(runtime) -> None:
    """live_big (2M rows, about 100 MB) is far past the 16 MiB pool: the scan is spilled to a
    Parquet file that DataFusion reads as it goes, the answer is exact, and the file is gone when
    the result ends (or is dropped half read)."""
    before = _spill_dirs()
    reader = runtime.query("SELECT id, k FROM live_big WHERE id % 4 = 1")
    assert _spill_dirs() - before, "the scan should have spilled"
    rows = ids = 0
    for batch in reader:
        rows += batch.num_rows
        ids += pa.compute.sum(batch.column("id")).as_py() or 0
    assert rows == 500_000 and ids == sum(range(1, 2_000_000, 4))
    assert _spill_dirs() == before
    half_read = runtime.query("SELECT id FROM live_big")
    half_read.read_next_batch()
    del half_read
    assert _spill_dirs() == before
