"""`acceleration.indexes` on the DuckDB accelerator: the declared indexes are built with every
load in the load's own transaction and used by point lookups; data that breaks a unique index
fails its refresh with a clear error and the last good data stays; a file-mode restart serves
the stored table only when it carries exactly the declared indexes; column changes keep them.
Real files and a real DuckDB; no mocks."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from accel.base import TableIndex
from accel.duckdb import DuckDBAccelerator
from engine.config import ConfigError, load_pod_text
from engine.errors import ConnectorError
from tests.engine.test_refresh_runtime import HEAD, query_rows, write_atomically

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def _orders(ids: list[int], status: str = "new") -> pa.Table:
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "region": pa.array([f"r{i % 3}" for i in ids]),
        "updated_at": pa.array([T0 + dt.timedelta(minutes=i) for i in ids], pa.timestamp("us", "UTC")),
        "status": pa.array([status] * len(ids)),
    })


def _pod(mode: str = "memory", indexes: str = "id: unique\n        (region, status): enabled", extra: str = "") -> str:
    return HEAD + f"""
datasets:
  - from: file:orders.parquet
    name: orders
    time_column: updated_at
    acceleration:
      engine: duckdb
      mode: {mode}
      refresh_retry_enabled: false
{extra}      indexes:
        {indexes}
"""


def _indexes(runtime) -> dict[str, str]:
    """The indexes DuckDB holds on `orders`: name -> its CREATE statement."""
    cur = runtime.datasets["orders"].accelerator.cursor()
    try:
        return dict(cur.execute("SELECT index_name, sql FROM duckdb_indexes() WHERE table_name = 'orders'").fetchall())
    finally:
        cur.close()


def _plan(runtime, sql: str) -> str:
    """The plan DuckDB ran (EXPLAIN alone shows its estimate: a sequential scan)."""
    cur = runtime.datasets["orders"].accelerator.cursor()
    try:
        return "\n".join(row[1] for row in cur.execute(f"EXPLAIN ANALYZE {sql}").fetchall())
    finally:
        cur.close()


def _loaded(make_runtime, tmp_path, ids: list[int], pod: str):
    """A runtime over orders.parquet holding `ids`, refreshed once; returns it and the pod's directory."""
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "orders.parquet", _orders(ids))
    runtime = make_runtime(pod, pod_dir=pod_dir)
    runtime.refresh("orders", wait=True)
    return runtime, pod_dir


def test_declared_indexes_are_built_and_used_by_a_point_lookup(make_runtime, tmp_path) -> None:
    runtime, pod_dir = _loaded(make_runtime, tmp_path, list(range(5000)), _pod())
    built = sorted(_indexes(runtime).values())
    assert len(built) == 2
    assert "CREATE UNIQUE INDEX" in built[1] and "(id)" in built[1]
    assert "CREATE INDEX" in built[0] and "(region, status)" in built[0]
    assert "Type: Index Scan" in _plan(runtime, "SELECT * FROM orders WHERE id = 4321")
    assert query_rows(runtime, "SELECT id, region FROM orders WHERE id = 4321") == [{"id": 4321, "region": "r1"}]
    # a full refresh replaces the table and its indexes together
    write_atomically(pod_dir / "orders.parquet", _orders(list(range(100, 200))))
    runtime.refresh("orders", wait=True)
    assert sorted(_indexes(runtime).values()) == built
    assert query_rows(runtime, "SELECT count(*) AS n FROM orders WHERE id = 4321") == [{"n": 0}]


def test_data_that_breaks_a_unique_index_fails_its_refresh_and_the_last_good_data_stays(make_runtime, tmp_path) -> None:
    runtime, pod_dir = _loaded(make_runtime, tmp_path, list(range(100)), _pod())
    write_atomically(pod_dir / "orders.parquet", _orders(list(range(50)) + [7, 8], status="dup"))
    with pytest.raises(ConnectorError, match=r"breaks a unique index of acceleration.indexes .*duplicate key") as e:
        runtime.refresh("orders", wait=True)
    assert "Traceback" not in str(e.value) and str(tmp_path) not in str(e.value)
    assert "(id)" in str(e.value) and '"7"' not in str(e.value)  # the index, never a value a policy may hide
    assert query_rows(runtime, "SELECT count(*) AS n, min(status) AS s FROM orders") == [{"n": 100, "s": "new"}]
    assert len(_indexes(runtime)) == 2
    info = {d["name"]: d for d in runtime.status()["datasets"]}["orders"]
    assert info["ready"] is True and "unique index" in info["last_error"]
    history = query_rows(runtime, "SELECT error_code FROM runtime.task_history WHERE task = 'refresh' ORDER BY task_id")
    assert history[-1]["error_code"] == "source_error"


def test_an_append_keeps_the_indexes_and_upserts_through_the_unique_one(make_runtime, tmp_path) -> None:
    extra = "      refresh_mode: append\n      refresh_append_overlap: 1h\n      primary_key: id\n" \
            "      on_conflict:\n        id: upsert\n"
    runtime, pod_dir = _loaded(make_runtime, tmp_path, list(range(10)), _pod(extra=extra))
    # the overlap re-reads every row: each existing key is deleted and inserted again under the unique index
    write_atomically(pod_dir / "orders.parquet", pa.concat_tables([_orders(list(range(10)), "paid"), _orders([10, 11])]))
    runtime.refresh("orders", wait=True)
    rows = query_rows(runtime, "SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status")
    assert rows == [{"status": "new", "n": 2}, {"status": "paid", "n": 10}]
    assert len(_indexes(runtime)) == 2


def test_an_append_without_a_key_that_repeats_one_fails_cleanly(make_runtime, tmp_path) -> None:
    extra = "      refresh_mode: append\n      refresh_append_overlap: 1h\n"
    runtime, pod_dir = _loaded(make_runtime, tmp_path, list(range(10)), _pod(extra=extra))
    write_atomically(pod_dir / "orders.parquet", _orders(list(range(12))))  # the overlap brings 0..9 again
    with pytest.raises(ConnectorError, match="unique index"):
        runtime.refresh("orders", wait=True)
    assert query_rows(runtime, "SELECT count(*) AS n FROM orders") == [{"n": 10}]


def test_a_file_mode_restart_reuses_the_table_only_with_the_declared_indexes(make_runtime, tmp_path) -> None:
    pod_dir, data_dir = tmp_path / "pod", tmp_path / "data"
    pod_dir.mkdir()
    write_atomically(pod_dir / "orders.parquet", _orders(list(range(100))))
    first = make_runtime(_pod("file"), pod_dir=pod_dir, data_dir=data_dir, start=True)
    assert first.wait_ready(30)
    first.stop()

    same = make_runtime(_pod("file"), pod_dir=pod_dir, data_dir=data_dir, start=True)
    assert same.wait_ready(30)
    assert same.datasets["orders"].refresh_count == 0  # reopened as it is
    assert len(_indexes(same)) == 2
    same.stop()

    changed = make_runtime(_pod("file", indexes="status: enabled"), pod_dir=pod_dir, data_dir=data_dir, start=True)
    assert changed.wait_ready(30)
    assert changed.datasets["orders"].refresh_count == 1  # reloaded, to build the new set
    assert [sql.split(" ON ")[1] for sql in _indexes(changed).values()] == ["orders(status);"]


def test_column_changes_drop_and_rebuild_the_indexes() -> None:
    acc = DuckDBAccelerator(None)
    acc.declare_indexes("orders", [TableIndex(("id",), unique=True), TableIndex(("region",))])
    acc.replace("orders", _orders(list(range(20))).to_reader())
    acc.alter_columns("orders", [("add", "note", pa.string()), ("rename", "status", "state"), ("drop", "updated_at")])
    assert acc.has_declared_indexes("orders")
    assert acc.schema("orders").names == ["id", "region", "state", "note"]
    with pytest.raises(ConnectorError, match="names column 'region', which its data does not have"):
        acc.alter_columns("orders", [("rename", "region", "area")])
    assert acc.schema("orders").names == ["id", "area", "state", "note"]  # the change itself is kept
    acc.declare_indexes("orders", [TableIndex(("id",), unique=True), TableIndex(("area",))])
    acc.append("orders", acc.scan("orders", None, [], 1), ["id"], {"id": "upsert"})  # the next load builds what is missing
    assert acc.has_declared_indexes("orders") and acc.row_count("orders") == 20
    acc.close()


@pytest.mark.parametrize("yaml,key,text", [
    ("      indexes:\n        id: unique\n", "datasets[0].acceleration.indexes", "indexes need engine: duckdb"),
    ("      engine: duckdb\n      indexes:\n        '(a, )': enabled\n", "datasets[0].acceleration.indexes.(a, )",
     "expected a column name"),
    ("      engine: duckdb\n      indexes:\n        id: primary\n", "datasets[0].acceleration.indexes.id",
     "allowed: enabled, unique"),
    ("      enabled: false\n      engine: duckdb\n      indexes:\n        id: unique\n",
     "datasets[0].acceleration.indexes", "indexes need the dataset accelerated"),
])
def test_bad_indexes_are_config_errors_that_name_the_key(yaml: str, key: str, text: str) -> None:
    pod = HEAD + "datasets:\n  - from: file:x.parquet\n    name: x\n    acceleration:\n" + yaml
    with pytest.raises(ConfigError) as e:
        load_pod_text(pod, "spicepod.yaml")
    assert key in str(e.value) and text in str(e.value), str(e.value)


def test_index_keys_are_columns_or_column_lists() -> None:
    pod = load_pod_text(HEAD + "datasets:\n  - from: file:x.parquet\n    name: x\n    acceleration:\n"
                               "      engine: duckdb\n      indexes:\n        '(a, b)': enabled\n", "spicepod.yaml")
    assert pod.datasets[0].acceleration.table_indexes == (TableIndex(("a", "b"), unique=False),)
