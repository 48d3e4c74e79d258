"""Snapshot-aware refresh of accelerated Iceberg datasets, in a real Runtime over a real
Iceberg table (SQL catalog on SQLite, local warehouse): unchanged snapshots load nothing,
appends load only the new data files, overwrites and deletes reload in full, and column
additions, renames and drops are followed in place."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.expressions import LessThan

from engine.config import load_pod
from engine.runtime import Runtime
from tests.integration.iceberg_catalog import IcebergCatalog, create_events, events, make_catalog

pytestmark = pytest.mark.integration


@pytest.fixture
def cat(tmp_path: Path) -> IcebergCatalog:
    return make_catalog(tmp_path / "iceberg")


@pytest.fixture
def runtimes():
    made: list[Runtime] = []
    yield made
    for r in made:
        r.stop()


def pod(cat: IcebergCatalog, engine: str, mode: str = "append", acc_extra: str = "") -> str:
    params = "\n".join(f"      {k}: {v}" for k, v in cat.params().items())
    extra = "\n".join(f"      {line}" for line in acc_extra.splitlines())
    return (f"version: v1\nkind: Spicepod\nname: iceberg_refresh\ndatasets:\n"
            f"  - from: iceberg:shop.events\n    name: events\n    time_column: ts\n    params:\n{params}\n"
            f"    acceleration:\n      enabled: true\n      engine: {engine}\n      refresh_mode: {mode}\n{extra}\n")


def start(runtimes: list, tmp_path: Path, text: str, name: str = "pod", data_dir: Path | None = None) -> Runtime:
    pod_dir = tmp_path / name
    pod_dir.mkdir(parents=True, exist_ok=True)
    (pod_dir / "spicepod.yaml").write_text(text)
    runtime = Runtime(load_pod(pod_dir / "spicepod.yaml"), data_dir=str(data_dir or pod_dir / ".satchel"))
    runtimes.append(runtime)
    return runtime


def rows(runtime: Runtime, sql: str = "SELECT * FROM events ORDER BY id") -> pa.Table:
    return runtime.query(sql).read_all()


def source_rows(cat: IcebergCatalog) -> pa.Table:
    return cat.table("shop.events").scan().to_arrow().sort_by("id")


def assert_same(runtime: Runtime, cat: IcebergCatalog) -> None:
    """The accelerated copy equals the Iceberg table row for row (same columns, same values)."""
    want = source_rows(cat)
    got = rows(runtime)
    assert got.column_names == want.column_names
    assert got.to_pylist() == want.to_pylist()


def connector(runtime: Runtime):
    return runtime.datasets["events"].connector


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_unchanged_snapshot_loads_nothing_and_appends_read_only_new_files(cat, runtimes, tmp_path, engine):
    create_events(cat, batches=2)
    runtime = start(runtimes, tmp_path, pod(cat, engine))
    first = runtime.refresh("events", wait=True)
    assert first["mode"] == "full" and first["rows"] == 60
    conn = connector(runtime)
    files_after_load = conn.files_read

    second = runtime.refresh("events", wait=True)
    assert second["mode"] == "unchanged" and second["rows"] == 60
    assert conn.files_read == files_after_load, "an unchanged snapshot must read no data file"

    table = cat.table("shop.events")
    table.append(events(60, 10, days=1))  # one partition day: a few new files
    table.append(events(70, 5, days=1))
    new_files = (len(list(cat.table("shop.events").scan().plan_files()))
                 - len(list(table.scan(snapshot_id=table.history()[1].snapshot_id).plan_files())))
    third = runtime.refresh("events", wait=True)
    assert third["mode"] == "append" and third["rows"] == 75
    assert conn.files_read - files_after_load == new_files, "append must read only the files added since"
    assert_same(runtime, cat)
    history = rows(runtime, "SELECT query_text, rows, error FROM runtime.task_history WHERE task = 'refresh' "
                            "ORDER BY task_id").to_pylist()
    assert [h["rows"] for h in history] == [60, 60, 75] and not any(h["error"] for h in history)


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_delete_and_overwrite_fall_back_to_a_full_reload(cat, runtimes, tmp_path, engine, caplog):
    create_events(cat, batches=2)
    runtime = start(runtimes, tmp_path, pod(cat, engine))
    runtime.refresh("events", wait=True)
    table = cat.table("shop.events")
    table.append(events(60, 6))
    table.delete(LessThan("id", 10))
    caplog.set_level("INFO", logger="satchel.connectors.iceberg.connector")
    result = runtime.refresh("events", wait=True)
    assert result["mode"] == "full" and result["rows"] == 56
    assert "not appends (overwrite)" in caplog.text  # a copy-on-write delete is an overwrite snapshot
    assert_same(runtime, cat)

    cat.table("shop.events").overwrite(events(100, 9))
    assert runtime.refresh("events", wait=True)["mode"] == "full"
    assert_same(runtime, cat)
    # and appends after the reload are incremental again
    cat.table("shop.events").append(events(200, 3))
    assert runtime.refresh("events", wait=True)["mode"] == "append"
    assert_same(runtime, cat)


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_schema_evolution_is_followed_without_a_full_reload(cat, runtimes, tmp_path, engine):
    create_events(cat, batches=2)
    runtime = start(runtimes, tmp_path, pod(cat, engine))
    runtime.refresh("events", wait=True)
    conn = connector(runtime)

    table = cat.table("shop.events")
    with table.update_schema() as update:
        update.add_column("channel", pa_type_string())
    table = cat.table("shop.events")
    added = events(60, 6).append_column("channel", pa.array(["web"] * 6))
    table.append(added.cast(table.schema().as_arrow()))
    before = conn.files_read
    result = runtime.refresh("events", wait=True)
    assert result["mode"] == "append" and result["rows"] == 66
    assert conn.files_read - before <= 6, "only the appended files are read"
    assert_same(runtime, cat)

    with cat.table("shop.events").update_schema() as update:
        update.rename_column("amount", "total")
    before = conn.files_read
    assert runtime.refresh("events", wait=True)["mode"] == "schema"
    assert conn.files_read == before, "a rename reads no data"
    assert_same(runtime, cat)

    with cat.table("shop.events").update_schema() as update:
        update.delete_column("channel")
    assert runtime.refresh("events", wait=True)["mode"] == "schema"
    assert conn.files_read == before
    assert_same(runtime, cat)
    assert rows(runtime, "SELECT sum(total) AS s FROM events").to_pylist() == [{"s": sum(i * 1.5 for i in range(66))}]


def test_a_change_to_the_primary_key_reloads_in_full(cat, runtimes, tmp_path):
    create_events(cat, batches=1)
    runtime = start(runtimes, tmp_path, pod(cat, "duckdb", acc_extra="primary_key: id\non_conflict:\n  id: upsert"))
    runtime.refresh("events", wait=True)
    with cat.table("shop.events").update_schema() as update:
        update.rename_column("id", "event_id")
    result = runtime.refresh("events", wait=True)
    assert result["mode"] == "full"
    want = source_rows_by(cat, "event_id")
    assert rows(runtime, "SELECT * FROM events ORDER BY event_id").to_pylist() == want.to_pylist()


def test_full_mode_reloads_changed_snapshots_and_skips_unchanged(cat, runtimes, tmp_path):
    create_events(cat, batches=1)
    runtime = start(runtimes, tmp_path, pod(cat, "duckdb", mode="full"))
    assert runtime.refresh("events", wait=True)["mode"] == "full"
    assert runtime.refresh("events", wait=True)["mode"] == "unchanged"
    cat.table("shop.events").append(events(30, 3))
    assert runtime.refresh("events", wait=True)["mode"] == "full"
    with cat.table("shop.events").update_schema() as update:
        update.rename_column("region", "area")
    assert runtime.refresh("events", wait=True)["mode"] == "schema"
    assert_same(runtime, cat)


def test_file_mode_remembers_the_snapshot_across_restarts(cat, runtimes, tmp_path):
    create_events(cat, batches=2)
    data_dir = tmp_path / "data"
    text = pod(cat, "duckdb", acc_extra="mode: file")
    first = start(runtimes, tmp_path, text, data_dir=data_dir)
    first.refresh("events", wait=True)
    first.stop()
    runtimes.remove(first)

    cat.table("shop.events").append(events(60, 4))
    second = start(runtimes, tmp_path, text, data_dir=data_dir)
    assert second.datasets["events"].adopt_existing()
    result = second.refresh("events", wait=True)
    assert result["mode"] == "append" and result["rows"] == 64
    assert connector(second).files_read <= 4
    assert second.refresh("events", wait=True)["mode"] == "unchanged"
    assert_same(second, cat)


def pa_type_string():
    from pyiceberg.types import StringType
    return StringType()


def source_rows_by(cat: IcebergCatalog, key: str) -> pa.Table:
    return cat.table("shop.events").scan().to_arrow().sort_by(key)
