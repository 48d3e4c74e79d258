"""Concurrent queries on one DuckDB accelerator: execution slots and the shared deadline timer."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from accel.duckdb import DuckDBAccelerator, execution_slots
from accel.fifo_slots import FifoSlots
from accel.timers import Timers
from connectors.base import CancelScope
from engine.errors import QueryTimeout


@pytest.fixture
def accelerator() -> DuckDBAccelerator:
    acc = DuckDBAccelerator()
    table = pa.table({"x": pa.array(range(1000), pa.int64())})
    acc.replace("t", pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
    yield acc
    acc.close()


def test_slots_follow_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SATCHEL_DUCKDB_SLOTS", "3")
    assert execution_slots() == 3
    monkeypatch.delenv("SATCHEL_DUCKDB_SLOTS")
    assert execution_slots() >= 2


def test_many_threads_query_at_once_and_a_query_waits_for_a_slot_within_its_timeout(accelerator) -> None:
    results, errors = [], []

    def run() -> None:
        try:
            results.append(accelerator.query("SELECT sum(x) AS s FROM t", timeout=30).read_all().column(0)[0].as_py())
        except Exception as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [499500] * 16
    held = [accelerator._slots.acquire(timeout=5) for _ in range(execution_slots())]  # every slot busy
    try:
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match="waiting to run"):
            accelerator.query("SELECT 1 FROM t", timeout=0.3)
        assert 0.25 < time.monotonic() - started < 5
    finally:
        for ok in held:
            assert ok
            accelerator._slots.release()
    assert accelerator.query("SELECT count(*) FROM t", timeout=5).read_all().column(0)[0].as_py() == 1000


def test_a_long_query_is_still_interrupted_at_its_timeout(accelerator) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        accelerator.query("SELECT count(*) FROM range(100000000000) a", timeout=0.5).read_all()
    assert time.monotonic() - started < 10


def test_timers_run_due_callbacks_in_order_and_never_cancelled_ones() -> None:
    timers, fired = Timers(), []
    # due 0.9 s apart: on a loaded machine the next line may start a tenth of a second later
    # (0.2 s and 0.1 s once fired late first, scheduled 0.1 s before early)
    late = timers.schedule(1.0, lambda: fired.append("late"))
    cancelled = timers.schedule(0.05, lambda: fired.append("cancelled"))
    timers.schedule(0.1, lambda: fired.append("early"))
    timers.cancel(cancelled)
    for _ in range(500):  # cancelled entries are dropped, not kept until due
        timers.cancel(timers.schedule(60, lambda: fired.append("never")))
    deadline = time.monotonic() + 10
    while len(fired) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # (anything else due would have fired by now)
    timers.cancel(late)  # already ran: a no-op
    assert fired == ["early", "late"] and len(timers._heap) < 100


def test_a_query_without_a_timeout_waits_for_a_slot(accelerator) -> None:
    # (Semaphore.acquire(timeout=-1) does not wait at all: such a query used to fail at once,
    # with a formatting error instead of an answer, whenever every slot was busy)
    held = [accelerator._slots.acquire(timeout=5) for _ in range(execution_slots())]
    answer: list[int] = []
    waiter = threading.Thread(target=lambda: answer.append(
        accelerator.query("SELECT count(*) FROM t").read_all().column(0)[0].as_py()))
    try:
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and answer == []  # waiting for a slot, not failed
    finally:
        for ok in held:
            assert ok
            accelerator._slots.release()
    waiter.join(10)
    assert answer == [1000]


def test_slots_are_handed_out_in_arrival_order_and_a_timed_out_waiter_leaves_the_queue() -> None:
    slots = FifoSlots(1)
    assert slots.acquire(timeout=1)
    order: list[int] = []
    waiters = []
    for i in range(8):  # queued one after another while the only slot is held
        t = threading.Thread(target=lambda i=i: (slots.acquire(timeout=30), order.append(i), slots.release()))
        t.start()
        waiters.append(t)
        while len(slots._waiters) < i + 1:
            time.sleep(0.001)
    assert not slots.acquire(timeout=0.05)  # a late caller times out behind them and leaves no trace
    assert len(slots._waiters) == 8
    slots.release()
    for t in waiters:
        t.join(10)
    assert order == list(range(8))  # first come, first served: none barged in
    assert slots.acquire(timeout=0) and not slots.acquire(timeout=0)  # exactly one slot again
    slots.release()


def test_a_released_slot_is_not_taken_by_a_newcomer_while_others_wait() -> None:
    slots = FifoSlots(1)
    assert slots.acquire()
    got: list[str] = []
    waiter = threading.Thread(target=lambda: (slots.acquire(timeout=30), got.append("waiter")))
    waiter.start()
    while not slots._waiters:
        time.sleep(0.001)
    slots.release()  # handed to the waiter, even before it runs again
    assert not slots.acquire(timeout=0)
    waiter.join(10)
    assert got == ["waiter"]


def test_a_waiter_whose_query_is_cancelled_leaves_the_line_at_once() -> None:
    slots = FifoSlots(1)
    assert slots.acquire()
    scope, outcome = CancelScope(), []
    waiter = threading.Thread(target=lambda: outcome.append(slots.acquire(timeout=30, scope=scope)))
    behind = threading.Thread(target=lambda: outcome.append(("behind", slots.acquire(timeout=30))))
    waiter.start()
    while len(slots._waiters) < 1:
        time.sleep(0.001)
    behind.start()
    while len(slots._waiters) < 2:
        time.sleep(0.001)
    started = time.monotonic()
    scope.cancel()  # as a client going away cancels its query's scope
    waiter.join(5)
    assert outcome == [False] and time.monotonic() - started < 1  # not at its 30 s timeout
    assert len(slots._waiters) == 1
    slots.release()  # the next in line gets the slot the cancelled one would have had
    behind.join(5)
    assert outcome == [False, ("behind", True)]
    slots.release()
    assert not slots.acquire(timeout=0, scope=scope)  # a cancelled query takes no slot, even a free one
    already = CancelScope()
    already.cancel()
    assert slots.acquire(timeout=0)
    assert not slots.acquire(timeout=30, scope=already)  # cancelled before it waited: leaves at once
    slots.release()
    assert slots.acquire(timeout=0) and not slots._waiters
