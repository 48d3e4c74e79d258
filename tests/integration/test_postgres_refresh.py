"""Refresh of PostgreSQL datasets: full (atomic), append by time_column with overlap and
primary-key upsert (equal and late timestamps, updates), refresh_data_window, retention,
refresh_sql pushed to PostgreSQL, ready_state and on_zero_results."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.config import load_pod
from engine.runtime import Runtime
from tests.integration.postgres_server import PgServer, postgres_server  # noqa: F401

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def ts(minutes_ago: float) -> str:
    return (NOW - dt.timedelta(minutes=minutes_ago)).isoformat()


def make_table(server: PgServer, name: str, rows: list[tuple]) -> None:
    server.execute(f"DROP TABLE IF EXISTS public.{name}",
                   f"CREATE TABLE public.{name} (id int PRIMARY KEY, updated_at timestamptz NOT NULL, v text, "
                   "amount numeric(10,2))",
                   f"GRANT SELECT ON public.{name} TO satchel")
    insert(server, name, rows)


def insert(server: PgServer, name: str, rows: list[tuple], upsert: bool = False) -> None:
    """(synchronous_commit on: a change is flushed, so decodable, when this returns)"""
    if not rows:
        return
    values = ", ".join(f"({i}, '{t}', '{v.replace(chr(39), chr(39) * 2)}', {a})" for i, t, v, a in rows)
    sql = f"INSERT INTO public.{name} VALUES {values}"
    if upsert:
        sql += " ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at, v = EXCLUDED.v, amount = EXCLUDED.amount"
    server.execute("SET synchronous_commit = on", sql)


def runtime(server: PgServer, tmp_path: Path, table: str, acceleration: dict, extra: dict | None = None,
            start: bool = True) -> Runtime:
    lines = ["version: v1", "kind: Spicepod", "name: refresh", "datasets:", f"  - from: postgres:public.{table}",
             f"    name: {table}", "    time_column: updated_at", "    params:", server.params_yaml(6)]
    for k, v in (extra or {}).items():
        lines.append(f"    {k}: {v}")
    lines.append("    acceleration:")
    for k, v in acceleration.items():
        if isinstance(v, dict):
            lines.append(f"      {k}:")
            lines += [f"        {kk}: {vv}" for kk, vv in v.items()]
        else:
            lines.append(f"      {k}: {v}")
    (tmp_path / "spicepod.yaml").write_text("\n".join(lines) + "\n")
    rt = Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))
    if start:
        rt.start()
    return rt


def rows(rt: Runtime, sql: str) -> list[dict]:
    return rt.query(sql).read_all().to_pylist()


def source_rows(server: PgServer, table: str, where: str = "true") -> list[tuple]:
    return [tuple(r) for r in server.fetch(
        f"SELECT id, v, amount::text FROM public.{table} WHERE {where} ORDER BY id")]


def accel_rows(rt: Runtime, table: str) -> list[tuple]:
    return [(r["id"], r["v"], str(r["amount"])) for r in rows(rt, f"SELECT id, v, amount FROM {table} ORDER BY id")]


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_append_with_overlap_and_upsert(postgres_server: PgServer, tmp_path, engine) -> None:
    table = f"events_{engine}"
    make_table(postgres_server, table, [(1, ts(50), "a", 1), (2, ts(40), "b", 2), (3, ts(30), "c", 3)])
    rt = runtime(postgres_server, tmp_path, table, {
        "engine": engine, "refresh_mode": "append", "refresh_append_overlap": "15m",
        "primary_key": "id", "on_conflict": {"id": "upsert"}})
    try:
        assert rt.wait_ready(30), rt.status()
        assert accel_rows(rt, table) == source_rows(postgres_server, table)
        insert(postgres_server, table, [
            (4, ts(30), "equal-timestamp", 4),  # same time as the watermark
            (5, ts(20), "late, inside the overlap", 5),  # older than the watermark, newer than watermark - 15m
            (3, ts(25), "c updated", 33),  # an update moves its row forward
        ], upsert=True)
        result = rt.refresh(table, wait=True)
        assert result["mode"] == "append"
        assert accel_rows(rt, table) == source_rows(postgres_server, table)
        # a row that arrives later than the overlap is missed by design (full refresh picks it up)
        insert(postgres_server, table, [(6, ts(120), "too late", 6)])
        rt.refresh(table, wait=True)
        assert 6 not in [r[0] for r in accel_rows(rt, table)]
        assert sorted(r[0] for r in accel_rows(rt, table)) == [1, 2, 3, 4, 5]
    finally:
        rt.stop()


def test_full_refresh_replaces_the_copy(postgres_server: PgServer, tmp_path) -> None:
    make_table(postgres_server, "full_t", [(1, ts(5), "a", 1), (2, ts(5), "b", 2)])
    rt = runtime(postgres_server, tmp_path, "full_t", {"engine": "duckdb"})
    try:
        assert rt.wait_ready(30)
        postgres_server.execute("DELETE FROM public.full_t WHERE id = 1", "UPDATE public.full_t SET v = 'B'")
        insert(postgres_server, "full_t", [(3, ts(1), "c", 3)])
        assert rt.refresh("full_t", wait=True)["mode"] == "full"
        assert accel_rows(rt, "full_t") == source_rows(postgres_server, "full_t")
    finally:
        rt.stop()


def test_refresh_sql_and_data_window_go_to_postgres(postgres_server: PgServer, tmp_path) -> None:
    make_table(postgres_server, "win_t", [(1, ts(600), "old", 1), (2, ts(30), "recent", 2),
                                          (3, ts(10), "recent", -3), (4, ts(5), "recent", 4)])
    offset = postgres_server.log_offset()
    rt = runtime(postgres_server, tmp_path, "win_t", {
        "engine": "duckdb", "refresh_data_window": "1h", "refresh_sql": "SELECT * FROM win_t WHERE amount > 0"})
    try:
        assert rt.wait_ready(30)
        assert [r[0] for r in accel_rows(rt, "win_t")] == [2, 4]
    finally:
        rt.stop()
    sent = [s for s in postgres_server.statements_since(offset) if '"public"."win_t"' in s and "SELECT" in s
            and "to_regclass" not in s]
    assert sent, "no statement reached PostgreSQL"
    assert all('"amount" > 0' in s and '"updated_at" >=' in s for s in sent), sent


def test_retention_evicts_old_rows(postgres_server: PgServer, tmp_path) -> None:
    make_table(postgres_server, "ret_t", [(1, ts(600), "old", 1), (2, ts(5), "new", 2)])
    rt = runtime(postgres_server, tmp_path, "ret_t", {
        "engine": "arrow", "retention_check_enabled": "true", "retention_period": "1h"})
    try:
        assert rt.wait_ready(30)
        assert [r[0] for r in accel_rows(rt, "ret_t")] == [2]
    finally:
        rt.stop()


def test_on_zero_results_use_source(postgres_server: PgServer, tmp_path) -> None:
    make_table(postgres_server, "zero_t", [(1, ts(5), "a", 1), (2, ts(5), "b", -2)])
    rt = runtime(postgres_server, tmp_path, "zero_t", {
        "engine": "duckdb", "on_zero_results": "use_source", "refresh_sql": "SELECT * FROM zero_t WHERE amount > 0"})
    try:
        assert rt.wait_ready(30)
        assert rows(rt, "SELECT id FROM zero_t WHERE id = 2") == [{"id": 2}]  # not in the copy: from PostgreSQL
        assert rows(rt, "SELECT id FROM zero_t WHERE id = 1") == [{"id": 1}]
    finally:
        rt.stop()


def test_ready_state_on_registration_queries_postgres_until_loaded(postgres_server: PgServer, tmp_path) -> None:
    make_table(postgres_server, "reg_t", [(1, ts(5), "a", 1)])
    rt = runtime(postgres_server, tmp_path, "reg_t", {"engine": "duckdb"}, {"ready_state": "on_registration"},
                 start=False)  # the first load has not run yet
    try:
        assert rt.ready()
        plan = "\n".join(r["plan"] for r in rows(rt, "EXPLAIN SELECT v FROM reg_t"))
        assert "served by source" in plan and 'source sql for __scan_0: SELECT "v" FROM "public"."reg_t"' in plan, plan
        assert rows(rt, "SELECT v FROM reg_t") == [{"v": "a"}]
        rt.refresh("reg_t", wait=True)
        plan = "\n".join(r["plan"] for r in rows(rt, "EXPLAIN SELECT v FROM reg_t"))
        assert "served by accelerator" in plan, plan
        assert rows(rt, "SELECT v FROM reg_t") == [{"v": "a"}]
    finally:
        rt.stop()


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_changes_from_logical_replication(postgres_server: PgServer, tmp_path, engine) -> None:
    """refresh_mode: changes: inserts, updates (also of the key), deletes and a TRUNCATE reach
    the copy through a logical replication slot; the copy always equals the table."""
    table = f"chg_{engine}"
    postgres_server.execute("ALTER ROLE satchel REPLICATION")
    make_table(postgres_server, table, [(1, ts(50), "a", 1), (2, ts(40), "b", 2), (3, ts(30), "it's", 3)])
    rt = runtime(postgres_server, tmp_path, table, {"engine": engine, "refresh_mode": "changes", "primary_key": "id"})
    ds = rt.datasets[table]
    try:
        assert rt.wait_ready(30), rt.status()
        assert accel_rows(rt, table) == source_rows(postgres_server, table)
        slot = ds.connector.slot_name
        assert postgres_server.fetch(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'")[0][0] == 1
        insert(postgres_server, table, [(4, ts(500), "old timestamp, new row", 4)])  # no watermark can miss it
        postgres_server.execute("SET synchronous_commit = on",
                                f"UPDATE public.{table} SET v = 'b''s new', amount = 22 WHERE id = 2",
                                f"DELETE FROM public.{table} WHERE id = 1",
                                f"UPDATE public.{table} SET id = 30 WHERE id = 3")
        result = rt.refresh(table, wait=True)
        assert result["mode"] == "changes"
        assert accel_rows(rt, table) == source_rows(postgres_server, table)
        # nothing new: nothing changes
        assert rt.refresh(table, wait=True)["mode"] == "changes"
        assert accel_rows(rt, table) == source_rows(postgres_server, table)
        postgres_server.execute("SET synchronous_commit = on", f"TRUNCATE public.{table}")
        insert(postgres_server, table, [(7, ts(1), "after truncate", 7)])
        assert rt.refresh(table, wait=True)["mode"] == "full"
        assert accel_rows(rt, table) == source_rows(postgres_server, table)
        insert(postgres_server, table, [(8, ts(1), "after that", 8)])
        assert rt.refresh(table, wait=True)["mode"] == "changes"
        assert accel_rows(rt, table) == source_rows(postgres_server, table)
    finally:
        rt.stop()
        ds.connector.drop_changes()
