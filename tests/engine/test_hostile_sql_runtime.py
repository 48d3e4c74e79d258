"""Hostile SQL against an in-process Runtime over the demo pod, and the DuckDB accelerator's own
lockdown with the SQL policy bypassed. Every statement is refused with a clear error, and
afterwards nothing changed: same table contents, no file written or modified."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from accel.duckdb import DuckDBAccelerator
from engine.config import load_pod
from engine.errors import ReadOnlyViolation, SatchelError, SqlError
from engine.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]


def _load_helper():
    name = "satchel_tests_hostile_sql"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("hostile_sql.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


H = _load_helper()


@pytest.fixture(scope="module")
def demo_runtime(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    pod_dir = root / "demo"
    shutil.copytree(REPO / "data", pod_dir / "data")
    shutil.copy(REPO / "spicepod.yaml", pod_dir / "spicepod.yaml")
    out = root / "out"
    out.mkdir()
    runtime = Runtime(load_pod(pod_dir / "spicepod.yaml"), data_dir=str(root / "state"))
    runtime.start()
    assert runtime.wait_ready(60)
    yield runtime, pod_dir, out
    runtime.stop()


def snapshot(runtime: Runtime) -> dict[str, pa.Table]:
    out = {}
    for name in H.TABLES + ["order_details"]:
        table = runtime.query(f"SELECT * FROM {name}").read_all()
        out[name] = table.sort_by([(c, "ascending") for c in table.column_names if c != "tags"])
    return out


def test_hostile_sql_is_refused_in_process_and_changes_nothing(demo_runtime):
    runtime, pod_dir, out = demo_runtime
    before_files = H.files_digest(pod_dir)
    before = snapshot(runtime)
    accepted = []
    for template in H.HOSTILE:
        sql = H.render(template, out, pod_dir)
        try:
            runtime.query(sql, protocol="http").read_all()
        except SatchelError as e:
            assert isinstance(e, (ReadOnlyViolation, SqlError)), (sql, type(e), e)
            assert e.http_status in (400, 403), (sql, e.http_status, e)
            assert e.message and len(e.message) > 15, (sql, e.message)
            assert "Traceback" not in e.message
        else:
            accepted.append(sql)
    assert not accepted, f"hostile statements were run: {accepted}"
    assert list(out.iterdir()) == []
    assert H.files_digest(pod_dir) == before_files
    after = snapshot(runtime)
    for name, table in before.items():
        assert after[name].equals(table), f"{name} changed"
    # each refusal is in task history with its error, and nothing there ran
    history = runtime.query("SELECT query_text, error, rows FROM runtime.task_history WHERE task = 'query' "
                            "AND protocol = 'http'").read_all().to_pylist()
    assert len(history) == len(H.HOSTILE)
    assert all(r["error"] and r["rows"] == 0 for r in history)


@pytest.mark.parametrize("sql,status", [
    ("DROP TABLE orders", 403),
    ("SELECT 1; DROP TABLE orders", 403),
    ("WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x", 403),
    ("SELECT * FROM read_csv('/etc/passwd')", 403),
    ("SELECT * FROM '/etc/passwd'", 403),
    ("SELECT current_setting('memory_limit') FROM orders", 403),
    ("SELECT getenv('HOME')", 403),
    ("COPY orders TO '/tmp/x.csv'", 403),
    ("SELECT * FROM orders FOR UPDATE", 403),
    ("SELECT * INTO evil FROM orders", 403),
    ("SELEC 1", 400),
])
def test_refusals_name_the_problem(demo_runtime, sql, status):
    runtime = demo_runtime[0]
    with pytest.raises(SatchelError) as caught:
        runtime.query(sql).read_all()
    assert caught.value.http_status == status, caught.value


def test_reads_still_work_after_the_attack(demo_runtime):
    runtime = demo_runtime[0]
    rows = runtime.query("SELECT count(*) AS n FROM orders").read_all().to_pylist()
    assert rows == [{"n": 6000}]


# -- the DuckDB accelerator's own lockdown, with the SQL policy bypassed ---------------------


@pytest.fixture
def locked_duckdb(tmp_path):
    acc = DuckDBAccelerator(str(tmp_path / "acc.db"))
    table = pa.table({"id": pa.array(range(100), pa.int64()), "v": pa.array([f"r{i}" for i in range(100)])})
    acc.replace("t", pa.RecordBatchReader.from_batches(table.schema, table.to_batches()), source="test")
    secret_csv = tmp_path / "secret.csv"
    secret_csv.write_text("a,b\n1,2\n")
    parquet = tmp_path / "data.parquet"
    import pyarrow.parquet as pq

    pq.write_table(table, parquet)
    yield acc, tmp_path, table
    acc.close()


BYPASS = [
    "COPY t TO '{dir}/leak.csv'",
    "COPY (SELECT * FROM t) TO '{dir}/leak.parquet' (FORMAT parquet)",
    "COPY t FROM '{dir}/secret.csv'",
    "ATTACH '{dir}/other.db' AS other",
    "ATTACH ':memory:' AS other",
    "SELECT * FROM read_csv('{dir}/secret.csv')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_parquet('{dir}/data.parquet')",
    "SELECT * FROM '{dir}/data.parquet'",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('{dir}/*')",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET threads = 1",
    "PRAGMA enable_profiling",
    "PRAGMA threads = 1",
    "CALL pragma_version()",
    "EXPORT DATABASE '{dir}/export'",
    "DROP TABLE t",
    "DELETE FROM t",
    "CREATE TABLE evil AS SELECT 1",
    "SELECT 1; DROP TABLE t",
    "SELECT * FROM t; DELETE FROM t",
]


@pytest.mark.parametrize("template", BYPASS)
def test_duckdb_accelerator_refuses_even_without_the_sql_policy(locked_duckdb, template):
    acc, folder, table = locked_duckdb
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(Exception) as caught:
        acc.query(template.replace("{dir}", str(folder))).read_all()
    assert str(caught.value)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert acc.query("SELECT * FROM t ORDER BY id").read_all().equals(table)


FILE_AND_SETTINGS = [
    "COPY t TO '{dir}/leak.csv'",
    "SELECT * FROM read_csv('{dir}/secret.csv')",
    "SELECT * FROM read_parquet('{dir}/data.parquet')",
    "SELECT * FROM '{dir}/data.parquet'",
    "SELECT * FROM glob('{dir}/*')",
    "ATTACH '{dir}/other.db' AS other",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "EXPORT DATABASE '{dir}/export'",
]


@pytest.mark.parametrize("template", FILE_AND_SETTINGS)
def test_duckdb_database_itself_is_locked_down(locked_duckdb, template):
    """Below the accelerator's statement check too: a raw cursor cannot touch files or settings."""
    import duckdb

    acc, folder, _ = locked_duckdb
    before = sorted(p.name for p in folder.iterdir())
    cur = acc.cursor()
    try:
        with pytest.raises(duckdb.Error) as caught:
            cur.execute(template.replace("{dir}", str(folder))).fetchall()
    finally:
        cur.close()
    assert "disabled" in str(caught.value) or "locked" in str(caught.value) or "Permission" in str(caught.value)
    assert sorted(p.name for p in folder.iterdir()) == before
