"""DuckDB results of more than two batches are read ahead on a helper thread (accel.read_ahead):
the same batches in the same order, errors raised to the consumer as they were raised, and a
result abandoned early stops and joins its helper before its cursor closes."""

from __future__ import annotations

import threading
import time

import duckdb
import pyarrow as pa
import pytest

from accel.read_ahead import read_ahead
from accel.duckdb import DuckDBAccelerator
from engine.errors import QueryTimeout


def _helpers() -> int:
    return sum(t.name == "satchel-read-ahead" for t in threading.enumerate())


def test_batches_come_in_order_and_small_results_start_no_thread() -> None:
    con = duckdb.connect()
    small = con.execute("SELECT range AS i FROM range(1000)").to_arrow_reader(100_000)
    assert pa.Table.from_batches(list(read_ahead(small, con.interrupt))).column("i").to_pylist() == list(range(1000))
    assert _helpers() == 0
    big = con.execute("SELECT range AS i FROM range(1000000)").to_arrow_reader(10_000)
    out = read_ahead(big, con.interrupt)
    batches = [next(out) for _ in range(3)]
    assert _helpers() == 1  # from the third batch on
    batches += list(out)
    assert pa.Table.from_batches(batches).column("i").to_pylist() == list(range(1_000_000))
    assert _helpers() == 0


def test_an_error_mid_result_reaches_the_consumer() -> None:
    con = duckdb.connect()
    reader = con.execute("SELECT CASE WHEN range < 500000 THEN range ELSE error('boom at ' || range) END AS i "
                         "FROM range(1000000)").to_arrow_reader(10_000)
    with pytest.raises(OSError, match="boom at 500000"):  # as pyarrow raises a stream's error
        for _ in read_ahead(reader, con.interrupt):
            pass
    assert _helpers() == 0


# Three fast batches, then rows DuckDB takes many seconds to find (a cross product).
SLOW_TAIL = ("SELECT range AS i FROM range(300000) UNION ALL "
             "SELECT a.range FROM range(40000) a, range(40000) b WHERE hash(a.range * b.range) = 0")


def test_a_result_abandoned_early_stops_its_helper_before_the_cursor_closes() -> None:
    acc = DuckDBAccelerator()
    reader = acc.query(SLOW_TAIL)
    for _ in range(3):
        reader.read_next_batch()
    time.sleep(0.3)
    assert _helpers() == 1  # inside DuckDB, on the slow tail
    started = time.monotonic()
    reader.close()
    del reader
    assert _helpers() == 0 and time.monotonic() - started < 3  # interrupted, not waited for
    assert acc.query("SELECT 42 AS n").read_all().to_pylist() == [{"n": 42}]


def test_a_deadline_mid_result_is_a_timeout() -> None:
    acc = DuckDBAccelerator()
    reader = acc.query(SLOW_TAIL, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        reader.read_all()
    assert time.monotonic() - started < 5
    assert _helpers() == 0
