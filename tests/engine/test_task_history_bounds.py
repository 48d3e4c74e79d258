"""Task history stays bounded in memory whether or not anyone reads it (engine.task_history)."""

from __future__ import annotations

import datetime as dt

from engine.task_history import FOLD_ROWS, MAX_TEXT, Task, TaskHistory


def _record(history: TaskHistory, n: int, text: str = "SELECT 1") -> None:
    for _ in range(n):
        history.record(Task("query", "flight", "agent", text))


def test_rows_join_the_table_while_nobody_reads_it() -> None:
    """An agent's loop records a row per query, 24/7; the rows used to wait as Python objects
    (about 1 KiB each) until someone read runtime.task_history, so a sidecar nobody asked grew
    without end. Rows now join the Arrow table every FOLD_ROWS, and its caps apply then."""
    history = TaskHistory(max_rows=1_000)
    _record(history, 10 * FOLD_ROWS + 3)
    assert len(history._pending) < FOLD_ROWS  # what waits as Python objects stays bounded
    assert history._table.num_rows == 1_000  # the row cap applied without a read
    table = history.table()
    assert table.num_rows == 1_000
    ids = table["task_id"].to_pylist()
    assert ids == list(range(10 * FOLD_ROWS + 3 - 999, 10 * FOLD_ROWS + 4))  # the newest, in order


def test_the_table_is_bounded_in_bytes_as_well_as_rows() -> None:
    history = TaskHistory(max_bytes=4 << 20)
    long_text = "SELECT '" + "x" * MAX_TEXT + "'"
    _record(history, 3 * FOLD_ROWS, long_text)  # 1,536 rows of 16 KiB texts: 24 MiB
    table = history.table()
    assert table.nbytes <= 4 << 20
    assert 0 < table.num_rows < 3 * FOLD_ROWS
    assert table["task_id"].to_pylist()[-1] == 3 * FOLD_ROWS  # the newest kept
    assert {len(t) for t in table["query_text"].to_pylist()} == {MAX_TEXT}


def test_rows_past_the_retention_period_go_without_a_read() -> None:
    history = TaskHistory(retention=dt.timedelta(seconds=1))
    old = Task("query", "flight", "agent", "SELECT 1", started_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    history.record(old)
    _record(history, FOLD_ROWS)
    assert history._table["task_id"].to_pylist() == list(range(2, FOLD_ROWS + 1))  # the old row left at the fold
    assert history.table()["task_id"].to_pylist() == list(range(2, FOLD_ROWS + 2))


def test_a_row_that_cannot_be_stored_is_dropped_and_recording_goes_on(caplog) -> None:
    """Rows now fold while queries run: one row of a wrong type must not fail the fold for every
    query after it (accounting never fails the queries it records)."""
    history = TaskHistory()
    bad = Task("query", "flight", "agent", "SELECT 1")
    bad.rows = "many"  # not an integer
    history.record(bad)
    _record(history, 2 * FOLD_ROWS)  # two folds, the first with the bad row in it
    table = history.table()
    assert table.num_rows == 2 * FOLD_ROWS and 1 not in table["task_id"].to_pylist()
    assert "a query row could not be stored" in caplog.text
