"""Refresh behaviour of a real in-process Runtime: atomic swaps under concurrent readers, failures
that keep the last good data, retries, bounded file growth, schedules, refresh_sql, append with
upserts, data windows, retention, on_zero_results and ready_state. No mocks: real files, a real
HTTP source, real DuckDB/Arrow accelerators."""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.refresh.scheduler import Schedule
from engine.errors import SatchelError

HEAD = "version: v1\nkind: Spicepod\nname: refresh_tests\n"


def write_atomically(path: Path, table: pa.Table, row_group_size: int | None = None) -> None:
    """Replace `path` in one rename, like a well-behaved producer of the source file."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, row_group_size=row_group_size)
    os.replace(tmp, path)


def rows_of(version: int) -> int:
    return 3000 + 97 * version


def version_table(version: int) -> pa.Table:
    """A complete version: rows_of(version) rows, every row tagged with its version, ids 0..n-1."""
    n = rows_of(version)
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "version": pa.array([version] * n, pa.int64()),
        "tag": pa.array([f"v{version}"] * n, pa.string()),
    })


def query_rows(runtime, sql: str) -> list[dict]:
    return runtime.query(sql).read_all().to_pylist()


def served_by(runtime, sql_prefix: str) -> str:
    rows = runtime.task_history.table().to_pylist()
    return [r for r in rows if r["task"] == "query" and r["query_text"].startswith(sql_prefix)][-1]["served_by"]


# -- 1. atomic swaps -----------------------------------------------------------------------------


@pytest.mark.parametrize("engine,mode", [("duckdb", "memory"), ("duckdb", "file"), ("arrow", "memory")])
def test_readers_never_see_empty_or_partial_table_during_50_refreshes(make_runtime, tmp_path, engine, mode):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "t.parquet", version_table(0), row_group_size=500)
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: file:t.parquet
    name: t
    acceleration:
      engine: {engine}
      mode: {mode}
""", pod_dir=pod_dir)
    runtime.refresh("t", wait=True)
    sql = "SELECT count(*) AS n, min(version) AS lo, max(version) AS hi, min(tag) AS tlo, max(tag) AS thi, sum(id) AS s FROM t"
    stop = threading.Event()
    problems: list[str] = []
    seen: set[int] = set()
    reads = [0]
    warm = threading.Barrier(4)  # every reader has read once (engines started) before the refreshes

    def reader() -> None:
        query_rows(runtime, sql)
        warm.wait(60)
        while not stop.is_set():
            try:
                row = query_rows(runtime, sql)[0]
            except Exception as e:  # any failure during a swap is a bug too
                problems.append(f"query failed: {e}")
                return
            reads[0] += 1
            n, lo, hi = row["n"], row["lo"], row["hi"]
            if n == 0 or lo is None:
                problems.append(f"empty table seen: {row}")
            elif lo != hi or row["tlo"] != row["thi"] or row["tlo"] != f"v{lo}":
                problems.append(f"mixed versions seen: {row}")
            elif n != rows_of(lo) or row["s"] != n * (n - 1) // 2:
                problems.append(f"partial version {lo} seen: {n} rows of {rows_of(lo)}")
            else:
                seen.add(lo)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    warm.wait(60)
    try:
        for version in range(1, 51):
            write_atomically(pod_dir / "t.parquet", version_table(version), row_group_size=500)
            result = runtime.refresh("t", wait=True)
            assert result["rows"] == rows_of(version)
            done, give_up = reads[0], time.monotonic() + 30
            while reads[0] == done and not problems and time.monotonic() < give_up:
                time.sleep(0.001)  # a read ends between any two refreshes, however slow the machine
            if problems:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not problems, problems[:5]
    assert reads[0] >= 50 and len(seen) >= 5, f"readers did not overlap the refreshes: {reads[0]} reads, {sorted(seen)}"
    assert query_rows(runtime, sql)[0]["lo"] == 50


def test_duckdb_file_does_not_grow_without_bound_over_50_full_refreshes(make_runtime, tmp_path):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    big = pa.table({"id": pa.array(range(60_000), pa.int64()),
                    "payload": pa.array([f"row-{i:08d}-" + "x" * 40 for i in range(60_000)])})
    write_atomically(pod_dir / "t.parquet", big)
    runtime = make_runtime(HEAD + """
datasets:
  - from: file:t.parquet
    name: t
    acceleration:
      engine: duckdb
      mode: file
""", pod_dir=pod_dir)
    db_file = pod_dir / ".satchel" / "accelerated_duckdb.db"
    sizes = []
    for _ in range(50):
        runtime.refresh("t", wait=True)
        sizes.append(db_file.stat().st_size)
    baseline = max(sizes[:3])
    assert max(sizes) <= 3 * baseline, f"file grew from {baseline} to {max(sizes)} bytes: {sizes}"
    assert query_rows(runtime, "SELECT count(*) AS n FROM t") == [{"n": 60_000}]


# -- 2. failures keep the last good data -------------------------------------------------------


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_failed_refresh_keeps_previous_data_and_reports_the_error(make_runtime, tmp_path, engine):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "t.parquet", version_table(1))
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: file:t.parquet
    name: t
    acceleration:
      engine: {engine}
      refresh_retry_enabled: false
""", pod_dir=pod_dir)
    runtime.refresh("t", wait=True)
    expected = [{"n": rows_of(1), "v": 1}]
    sql = "SELECT count(*) AS n, max(version) AS v FROM t"
    assert query_rows(runtime, sql) == expected

    # the file becomes corrupt: half a parquet file
    data = (pod_dir / "t.parquet").read_bytes()
    (pod_dir / "t.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(SatchelError):
        runtime.refresh("t", wait=True)
    assert query_rows(runtime, sql) == expected
    info = {d["name"]: d for d in runtime.status()["datasets"]}["t"]
    assert info["last_error"] and info["ready"] is True
    assert info["status"] != "ready"

    # the file goes missing
    (pod_dir / "t.parquet").unlink()
    with pytest.raises(SatchelError) as missing:
        runtime.refresh("t", wait=True)
    assert "t.parquet" in str(missing.value)
    assert query_rows(runtime, sql) == expected
    history = query_rows(runtime, "SELECT task, query_text, error FROM runtime.task_history "
                                  "WHERE task = 'refresh' ORDER BY task_id")
    errors = [r["error"] for r in history if r["error"]]
    assert len(errors) == 2, history
    assert "not found" in errors[-1] and "t.parquet" in errors[-1]

    # and a good version heals it
    write_atomically(pod_dir / "t.parquet", version_table(2))
    runtime.refresh("t", wait=True)
    assert query_rows(runtime, sql) == [{"n": rows_of(2), "v": 2}]
    info = {d["name"]: d for d in runtime.status()["datasets"]}["t"]
    assert info["last_error"] is None and info["status"] == "ready"


def test_retries_with_backoff_actually_retry(make_runtime, source_server):
    source_server.files["/t.parquet"] = _parquet_bytes(version_table(1))
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: {source_server.url('/t.parquet')}
    name: t
    acceleration:
      refresh_retry_max_attempts: 3
""")
    runtime.datasets["t"].schema()  # first download: schema inference
    before = source_server.count("/t.parquet")
    source_server.plan("/t.parquet", [(503, 0), (500, 0)])  # the next two downloads fail
    started = time.monotonic()
    result = runtime.refresh("t", wait=True)
    elapsed = time.monotonic() - started
    assert result["rows"] == rows_of(1)
    assert source_server.count("/t.parquet") - before == 3  # two failures, then success
    assert elapsed >= 0.25 + 0.5, f"no backoff between attempts ({elapsed:.2f}s)"

    # every attempt fails: exactly max_attempts downloads, then the error
    before = source_server.count("/t.parquet")
    source_server.plan("/t.parquet", [(503, 0)] * 5)
    with pytest.raises(SatchelError) as failed:
        runtime.refresh("t", wait=True)
    assert "503" in str(failed.value)
    assert source_server.count("/t.parquet") - before == 3
    assert query_rows(runtime, "SELECT count(*) AS n FROM t") == [{"n": rows_of(1)}]


def test_first_load_of_a_remote_file_downloads_it_once(make_runtime, source_server):
    """The first load infers the schema from the download it loads; each refresh downloads once."""
    source_server.files["/once.parquet"] = _parquet_bytes(version_table(1))
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: {source_server.url('/once.parquet')}
    name: t
    acceleration:
      enabled: true
""")
    runtime.refresh("t", wait=True)
    assert source_server.count("/once.parquet") == 1
    assert query_rows(runtime, "SELECT count(*) AS n FROM t") == [{"n": rows_of(1)}]
    source_server.files["/once.parquet"] = _parquet_bytes(version_table(2))
    runtime.refresh("t", wait=True)
    assert source_server.count("/once.parquet") == 2
    assert query_rows(runtime, "SELECT count(*) AS n FROM t") == [{"n": rows_of(2)}]


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# -- 3. schedules ------------------------------------------------------------------------------


def test_refresh_check_interval_picks_up_a_changed_file(make_runtime, tmp_path):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "t.parquet", version_table(1))
    runtime = make_runtime(HEAD + """
datasets:
  - from: file:t.parquet
    name: t
    acceleration:
      engine: duckdb
      refresh_check_interval: 1s
""", pod_dir=pod_dir, start=True)
    assert runtime.wait_ready(20)
    assert query_rows(runtime, "SELECT max(version) AS v FROM t") == [{"v": 1}]
    write_atomically(pod_dir / "t.parquet", version_table(2))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if query_rows(runtime, "SELECT max(version) AS v FROM t") == [{"v": 2}]:
            break
        time.sleep(0.1)
    assert query_rows(runtime, "SELECT count(*) AS n, max(version) AS v FROM t") == [{"n": rows_of(2), "v": 2}]


def test_cron_schedule_next_after():
    utc = dt.timezone.utc
    now = dt.datetime(2025, 3, 4, 10, 7, 30, tzinfo=utc).timestamp()
    assert Schedule(cron="*/5 * * * *").next_after(now) == dt.datetime(2025, 3, 4, 10, 10, tzinfo=utc).timestamp()
    assert Schedule(cron="0 * * * *").next_after(now) == dt.datetime(2025, 3, 4, 11, 0, tzinfo=utc).timestamp()
    assert Schedule(cron="30 2 * * *").next_after(now) == dt.datetime(2025, 3, 5, 2, 30, tzinfo=utc).timestamp()
    # strictly after: a time exactly on the schedule moves to the next one
    on_time = dt.datetime(2025, 3, 4, 10, 10, tzinfo=utc).timestamp()
    assert Schedule(cron="*/5 * * * *").next_after(on_time) == on_time + 300
    assert Schedule(interval=dt.timedelta(seconds=10)).next_after(now) == now + 10
    assert Schedule().next_after(now) is None  # load once


def test_jitter_is_bounded_and_spreads():
    now = 1_700_000_000.0
    schedule = Schedule(interval=dt.timedelta(seconds=10), jitter=dt.timedelta(seconds=2))
    samples = [schedule.next_after(now) - now for _ in range(500)]
    assert all(10 <= s <= 12 for s in samples), (min(samples), max(samples))
    assert statistics.pstdev(samples) > 0.3  # actually spread, not a constant offset
    cron = Schedule(cron="0 * * * *", jitter=dt.timedelta(seconds=30))
    base = Schedule(cron="0 * * * *").next_after(now)
    assert all(base <= cron.next_after(now) <= base + 30 for _ in range(200))


def test_cron_pod_loads_at_start_and_schedules_the_next_cron_time(make_runtime, tmp_path):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "t.parquet", version_table(1))
    runtime = make_runtime(HEAD + """
datasets:
  - from: file:t.parquet
    name: t
    acceleration:
      refresh_cron: "*/5 * * * *"
""", pod_dir=pod_dir, start=True)
    assert runtime.wait_ready(20)
    deadline = time.monotonic() + 5
    while runtime.scheduler.is_running("t") and time.monotonic() < deadline:
        time.sleep(0.02)
    due = runtime.scheduler.next_run("t")
    assert due is not None
    due_at = dt.datetime.fromtimestamp(due, dt.timezone.utc)
    assert due_at.minute % 5 == 0 and due_at.second == 0 and 0 < due - time.time() <= 300


# -- 4. what gets loaded -----------------------------------------------------------------------


def _orders_table(now: dt.datetime) -> pa.Table:
    return pa.table({
        "id": pa.array(range(20), pa.int64()),
        "region": pa.array(["eu" if i % 2 else "us" for i in range(20)]),
        "amount": pa.array([i * 1.5 for i in range(20)], pa.float64()),
        "secret_note": pa.array([f"note {i}" for i in range(20)]),
        "ts": pa.array([now - dt.timedelta(hours=i) for i in range(20)], pa.timestamp("us", "UTC")),
    })


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_refresh_sql_limits_rows_and_columns(make_runtime, tmp_path, engine):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "orders.parquet", _orders_table(dt.datetime.now(dt.timezone.utc)))
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: file:orders.parquet
    name: orders
    acceleration:
      engine: {engine}
      refresh_sql: SELECT id, region, amount FROM orders WHERE region = 'eu' AND id < 10
""", pod_dir=pod_dir)
    result = runtime.refresh("orders", wait=True)
    assert result["rows"] == 5
    ds = runtime.datasets["orders"]
    assert ds.accelerator.schema("orders").names == ["id", "region", "amount"]
    assert ds.schema().names == ["id", "region", "amount"]
    rows = query_rows(runtime, "SELECT * FROM orders ORDER BY id")
    assert rows == [{"id": i, "region": "eu", "amount": i * 1.5} for i in (1, 3, 5, 7, 9)]
    assert served_by(runtime, "SELECT * FROM orders") == "accelerator"


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_refresh_data_window_keeps_only_recent_rows(make_runtime, tmp_path, engine):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "orders.parquet", _orders_table(dt.datetime.now(dt.timezone.utc)))
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: file:orders.parquet
    name: orders
    time_column: ts
    acceleration:
      engine: {engine}
      refresh_data_window: 5h30m
""", pod_dir=pod_dir)
    runtime.refresh("orders", wait=True)
    assert query_rows(runtime, "SELECT id FROM orders ORDER BY id") == [{"id": i} for i in range(6)]


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_retention_evicts_rows_as_they_age(make_runtime, tmp_path, engine):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    now = dt.datetime.now(dt.timezone.utc)
    table = pa.table({"id": pa.array([1, 2, 3], pa.int64()),
                      "ts": pa.array([now, now - dt.timedelta(hours=2), now - dt.timedelta(minutes=59, seconds=58)],
                                     pa.timestamp("us", "UTC"))})
    write_atomically(pod_dir / "events.parquet", table)
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: file:events.parquet
    name: events
    time_column: ts
    acceleration:
      engine: {engine}
      retention_check_enabled: true
      retention_period: 1h
      retention_check_interval: 1s
""", pod_dir=pod_dir, start=True)
    assert runtime.wait_ready(20)
    # the 2h-old row never lands (retention runs after each load); row 3 ages out within ~2s
    first = [r["id"] for r in query_rows(runtime, "SELECT id FROM events ORDER BY id")]
    assert first in ([1, 3], [1])
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and query_rows(runtime, "SELECT count(*) AS n FROM events")[0]["n"] != 1:
        time.sleep(0.2)
    assert query_rows(runtime, "SELECT id FROM events") == [{"id": 1}]
    assert runtime.status()["datasets"][0]["rows"] == 1


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_append_with_upsert_matches_the_source_row_for_row(make_runtime, tmp_path, engine):
    """Append by time_column watermark + primary key upsert: new rows at the watermark, late rows
    (older than the watermark, inside refresh_append_overlap) and updates of existing keys."""
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    schema = pa.schema([("id", pa.int64()), ("updated_at", pa.timestamp("us", "UTC")), ("status", pa.string()),
                        ("amount", pa.float64())])
    source = {i: {"id": i, "updated_at": t0 + dt.timedelta(minutes=i), "status": "new", "amount": float(i)}
              for i in range(1, 41)}

    def publish() -> None:
        rows = list(source.values())
        random.Random(len(rows)).shuffle(rows)
        write_atomically(pod_dir / "orders.parquet", pa.Table.from_pylist(rows, schema=schema))

    publish()
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: file:orders.parquet
    name: orders
    time_column: updated_at
    acceleration:
      engine: {engine}
      refresh_mode: append
      refresh_append_overlap: 30m
      primary_key: id
      on_conflict:
        id: upsert
""", pod_dir=pod_dir)
    sql = "SELECT id, updated_at, status, amount FROM orders ORDER BY id"

    def expected() -> list[dict]:
        return [source[k] for k in sorted(source)]

    runtime.refresh("orders", wait=True)
    assert _normal(query_rows(runtime, sql)) == _normal(expected())
    watermark = t0 + dt.timedelta(minutes=40)
    rounds = [
        # new rows sharing the watermark timestamp, and an update of the watermark row itself
        {41: (watermark, "new", 41.0), 42: (watermark, "new", 42.0), 40: (watermark, "paid", 400.0)},
        # late rows: older than the watermark but inside the overlap; updates of old keys with new times
        {43: (watermark - dt.timedelta(minutes=10), "late", 43.0), 5: (watermark + dt.timedelta(minutes=5), "paid", 50.0),
         6: (watermark + dt.timedelta(minutes=5), "shipped", 60.0)},
        # an update of a late row, a key updated twice across rounds, and more rows at the same instant
        {43: (watermark + dt.timedelta(minutes=6), "paid", 430.0), 5: (watermark + dt.timedelta(minutes=7), "shipped", 55.0),
         44: (watermark + dt.timedelta(minutes=7), "new", 44.0), 45: (watermark + dt.timedelta(minutes=7), "new", 45.0)},
        # nothing changed: an append must not duplicate anything
        {},
    ]
    for changes in rounds:
        for key, (ts, status, amount) in changes.items():
            source[key] = {"id": key, "updated_at": ts, "status": status, "amount": amount}
        publish()
        result = runtime.refresh("orders", wait=True)
        assert result["mode"] == "append"
        assert _normal(query_rows(runtime, sql)) == _normal(expected()), f"after round {changes}"
        assert result["rows"] == len(source)


def _normal(rows: list[dict]) -> list[tuple]:
    return [(r["id"], r["updated_at"].astimezone(dt.timezone.utc), r["status"], r["amount"]) for r in rows]


# -- 5. fallbacks and readiness ----------------------------------------------------------------


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_on_zero_results_use_source(make_runtime, tmp_path, engine):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "orders.parquet", _orders_table(dt.datetime.now(dt.timezone.utc)))
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: file:orders.parquet
    name: orders
    acceleration:
      engine: {engine}
      refresh_sql: SELECT * FROM orders WHERE id < 5
      on_zero_results: use_source
""", pod_dir=pod_dir)
    runtime.refresh("orders", wait=True)
    assert query_rows(runtime, "SELECT id, region FROM orders WHERE id = 3") == [{"id": 3, "region": "eu"}]
    assert served_by(runtime, "SELECT id, region FROM orders WHERE id = 3") == "accelerator"
    # not in the working set: the accelerator answers nothing, the source answers
    assert query_rows(runtime, "SELECT id, region FROM orders WHERE id = 12") == [{"id": 12, "region": "us"}]
    assert served_by(runtime, "SELECT id, region FROM orders WHERE id = 12") == "source"
    assert query_rows(runtime, "SELECT id FROM orders WHERE id > 100") == []


def test_on_zero_results_return_empty_is_the_default(make_runtime, tmp_path):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "orders.parquet", _orders_table(dt.datetime.now(dt.timezone.utc)))
    runtime = make_runtime(HEAD + """
datasets:
  - from: file:orders.parquet
    name: orders
    acceleration:
      refresh_sql: SELECT * FROM orders WHERE id < 5
""", pod_dir=pod_dir)
    runtime.refresh("orders", wait=True)
    assert query_rows(runtime, "SELECT id FROM orders WHERE id = 12") == []


@pytest.mark.parametrize("engine", ["duckdb", "arrow"])
def test_ready_state_on_registration_answers_from_the_source_while_loading(make_runtime, source_server, engine):
    for path in ("/a.parquet", "/b.parquet"):
        source_server.files[path] = _parquet_bytes(version_table(3))
        # download 1 = a catalog lookup's schema inference, download 2 = the first load (held for up to 20s)
        source_server.plan(path, [(200, 0), (200, 20)])
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: {source_server.url('/a.parquet')}
    name: orders
    ready_state: on_registration
    acceleration:
      engine: {engine}
  - from: {source_server.url('/b.parquet')}
    name: orders_strict
    acceleration:
      engine: {engine}
""")
    for name in ("orders", "orders_strict"):
        runtime.datasets[name].schema()
    runtime.start()
    deadline = time.monotonic() + 10
    while min(source_server.count("/a.parquet"), source_server.count("/b.parquet")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    ds = runtime.datasets["orders"]
    assert not ds.loaded_once
    sql = "SELECT count(*) AS n, max(version) AS v FROM orders"
    assert query_rows(runtime, sql) == [{"n": rows_of(3), "v": 3}]
    assert served_by(runtime, sql) == "source"
    # on_load (the default) refuses until loaded, and readiness waits for it
    with pytest.raises(SatchelError) as not_ready:
        query_rows(runtime, "SELECT count(*) FROM orders_strict")
    assert not_ready.value.http_status == 503 and "still loading" in str(not_ready.value)
    assert not runtime.ready()
    source_server.release.set()  # let the loads finish
    assert runtime.wait_ready(20)  # readiness waits for on_load datasets only: wait for `orders` too
    deadline = time.monotonic() + 20
    while not ds.loaded_once and time.monotonic() < deadline:
        time.sleep(0.02)
    assert query_rows(runtime, sql) == [{"n": rows_of(3), "v": 3}]
    assert served_by(runtime, sql) == "accelerator"


# -- 6. file mode: what a restart may serve ----------------------------------------------------


def test_file_mode_restart_adopts_only_the_same_source_and_working_set(make_runtime, tmp_path):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    write_atomically(pod_dir / "t.parquet", version_table(1))
    secret = "s3cr3t-in-the-path"
    (pod_dir / secret).mkdir()
    write_atomically(pod_dir / secret / "t.parquet", version_table(4))
    data_dir = tmp_path / "state"
    pod = HEAD + """
datasets:
  - from: file:${{env:SUBDIR}}/t.parquet
    name: t
    acceleration:
      engine: duckdb
      mode: file
      refresh_sql: {refresh_sql}
"""
    env = {"SUBDIR": secret}
    first = make_runtime(pod.format(refresh_sql="SELECT * FROM t WHERE id < 100"), pod_dir=pod_dir, data_dir=data_dir,
                         env=env)
    first.refresh("t", wait=True)
    first.stop()
    db_file = data_dir / "accelerated_duckdb.db"
    assert secret.encode() not in db_file.read_bytes()  # the resolved from: is not stored in the file

    # same pod: the previous data is served at once, without a load
    same = make_runtime(pod.format(refresh_sql="SELECT * FROM t WHERE id < 100"), pod_dir=pod_dir, data_dir=data_dir,
                        env=env)
    assert same.datasets["t"].adopt_existing()
    assert query_rows(same, "SELECT count(*) AS n, max(version) AS v FROM t") == [{"n": 100, "v": 4}]
    same.stop()

    # another working set: the old rows must not be served as if they were it
    other = make_runtime(pod.format(refresh_sql="SELECT * FROM t WHERE id < 10"), pod_dir=pod_dir, data_dir=data_dir,
                         env=env)
    assert not other.datasets["t"].adopt_existing()
    other.refresh("t", wait=True)
    assert query_rows(other, "SELECT count(*) AS n FROM t") == [{"n": 10}]


def test_a_failed_first_load_is_retried_until_the_source_appears(make_runtime, tmp_path):
    """A load-once dataset whose source is missing at start must not stay unready forever."""
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    runtime = make_runtime(HEAD + """
datasets:
  - from: file:late.parquet
    name: late
    acceleration:
      engine: duckdb
      refresh_retry_enabled: false
""", pod_dir=pod_dir, start=True)
    deadline = time.monotonic() + 10
    while not runtime.datasets["late"].last_error and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runtime.datasets["late"].last_error and not runtime.ready()
    assert runtime.scheduler.next_run("late") is not None  # a retry is scheduled
    write_atomically(pod_dir / "late.parquet", version_table(5))
    assert runtime.wait_ready(10), runtime.status()
    assert query_rows(runtime, "SELECT max(version) AS v FROM late") == [{"v": 5}]
    deadline = time.monotonic() + 5
    while runtime.scheduler.is_running("late") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runtime.scheduler.next_run("late") is None  # loaded: back to load-once


def test_refresh_rows_in_task_history_start_when_the_refresh_starts(make_runtime, source_server):
    """started_at is the refresh's start (scheduled and on-demand), duration_ms its length."""
    source_server.files["/t.parquet"] = _parquet_bytes(version_table(1))
    source_server.plan("/t.parquet", [(200, 1.0), (200, 1.0)])  # two slow loads (the first infers the schema)
    utc = dt.timezone.utc
    before_first = dt.datetime.now(utc)
    runtime = make_runtime(HEAD + f"""
datasets:
  - from: {source_server.url('/t.parquet')}
    name: t
    acceleration:
      engine: arrow
""", start=True)
    assert runtime.wait_ready(15)
    before_second = dt.datetime.now(utc)
    runtime.refresh("t", wait=True)
    after = dt.datetime.now(utc)
    rows = [r for r in runtime.task_history.table().to_pylist() if r["task"] == "refresh"]
    assert len(rows) == 2, rows
    for row, before, end in ((rows[0], before_first, before_second), (rows[1], before_second, after)):
        assert row["error"] is None and row["duration_ms"] >= 1000, row
        assert before <= row["started_at"] <= before + dt.timedelta(seconds=0.9), (before, row)
        assert row["started_at"] + dt.timedelta(milliseconds=row["duration_ms"]) <= end + dt.timedelta(seconds=0.05)
