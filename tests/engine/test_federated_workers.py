"""The federated engine runs in worker processes the sidecar can kill: a join that never yields
to DataFusion's scheduler is stopped at its deadline (its process is SIGKILLed, so no thread or
core stays busy), a worker that crashes (SIGSEGV) or is killed from outside (SIGKILL, as the
out-of-memory killer does) fails only its query, and the next query gets a fresh worker."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from accel.shared_memory import share_table
from connectors.base import CALLER, Caller
from engine.errors import InternalError, QueryTimeout, ResourceExhausted
from engine.query.workers import WORKER_BASE_BYTES, WorkerPool, pool_size, usable_cores
from tests.processes import alive, cpu_seconds

ROWS = 200_000
# A sum runs in a worker (an Arrow table's count(*) is answered in the sidecar).
SUM_SQL = "SELECT sum(k) AS s FROM big"
SUM = [{"s": ROWS * (ROWS - 1) // 2}]
# a nested-loop join: DataFusion's join emits many batches per input batch and never yields
ENDLESS = "SELECT count(*) AS n FROM big a JOIN big b ON a.k + b.k = -1"

POD = """
version: v1
kind: Spicepod
name: workers
runtime:
  params:
    query_timeout: {timeout}
datasets:
  - from: file:big.parquet
    name: big
    acceleration:
      engine: arrow
"""


def _parquet(n: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"k": pa.array(range(n), pa.int64())}), sink)
    return sink.getvalue()


@pytest.fixture
def runtime(make_runtime):
    def make(timeout: str = "2s"):
        rt = make_runtime(POD.format(timeout=timeout), files={"big.parquet": _parquet(ROWS)}, start=True)
        assert rt.wait_ready(30)
        return rt
    return make


def _workers(rt) -> list[int]:
    return [w.proc.pid for w in list(rt.routes.workers._live) if hasattr(w, "proc")]


def _gone(pid: int, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def _busy_worker(rt, within: float = 10.0) -> int:
    """The pid of the worker running a query (not idle in the pool)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        pool = rt.routes.workers
        idle = {w.proc.pid for w in pool._idle}
        busy = [pid for pid in _workers(rt) if pid not in idle]
        if busy:
            return busy[0]
        time.sleep(0.02)
    raise AssertionError("no worker became busy")


def test_a_join_that_never_yields_is_killed_at_its_deadline(runtime) -> None:
    rt = runtime("2s")
    assert rt.query(SUM_SQL).read_all().to_pylist() == SUM
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="query_timeout"):
        rt.query(ENDLESS, protocol="test").read_all()
    assert time.monotonic() - started < 5
    assert rt.routes.workers.replaced == 1  # its worker was killed: no DataFusion thread is left spinning
    assert rt.metrics.federated_workers_replaced.labels("stopped")._value.get() == 1
    _settled(rt)  # the replacement worker has started (its start-up is not what is measured)
    # this process and the runtime's workers only: other fixtures' servers are children of pytest too
    pids = [os.getpid(), *(w.proc.pid for w in list(rt.routes.workers._live) if hasattr(w, "proc"))]
    busy = []
    for _ in range(3):  # a spinning thread is busy in every window; other tests' leftovers in this process are not
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(1.0)
        busy.append(sum(cpu_seconds(p) for p in pids) - before)
        if busy[-1] < 0.5:
            break
    assert min(busy) < 0.5, busy  # nothing in the sidecar or its workers keeps a core busy
    assert rt.query("SELECT count(*) AS n FROM big a JOIN big b ON a.k = b.k").read_all().to_pylist() == [{"n": ROWS}]
    history = rt.query("SELECT error FROM runtime.task_history WHERE protocol = 'test'").read_all()
    assert any("query_timeout" in (e or "") for e in history.column("error").to_pylist())


def _settled(rt) -> None:
    give_up = time.monotonic() + 10
    while rt.routes.workers.status()["idle"] == 0 or rt.routes.workers._warming:
        assert time.monotonic() < give_up, "no worker became idle after the killed one was replaced"
        time.sleep(0.05)


def test_the_killed_worker_process_is_gone(runtime) -> None:
    rt = runtime("2s")
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(_busy_worker(rt)))
    t.start()
    with pytest.raises(QueryTimeout):
        rt.query(ENDLESS).read_all()
    t.join()
    assert _gone(seen[0]), "the worker that ran the query past its deadline still exists"


@pytest.mark.parametrize("sig, error, text", [(signal.SIGSEGV, InternalError, "SIGSEGV"),
                                              (signal.SIGKILL, ResourceExhausted, "SIGKILL")])
def test_a_worker_that_dies_fails_only_its_query(runtime, sig, error, text) -> None:
    rt = runtime("60s")
    outcome: list[BaseException] = []

    def endless() -> None:
        try:
            rt.query(ENDLESS).read_all()
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)

    t = threading.Thread(target=endless)
    t.start()
    pid = _busy_worker(rt)
    # another query runs alongside in its own worker
    assert rt.query("SELECT count(*) AS n FROM big a JOIN big b ON a.k = b.k").read_all().to_pylist() == [{"n": ROWS}]
    os.kill(pid, sig)
    t.join(10)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], error), outcome
    assert text in str(outcome[0]) and "/" not in str(outcome[0])
    assert _gone(pid)
    assert rt.status()["federated_engine"]["replaced"] == 1
    assert rt.metrics.federated_workers_replaced.labels("lost")._value.get() == 1
    assert rt.query("SELECT max(k) AS m FROM big a JOIN big b USING (k)").read_all().to_pylist() == [{"m": ROWS - 1}]


def test_a_result_dropped_unread_stops_its_worker(runtime) -> None:
    rt = runtime("60s")
    reader = rt.query("SELECT a.k FROM big a JOIN big b ON a.k = b.k ORDER BY a.k")
    first = reader.read_next_batch()
    assert first.num_rows > 0
    pid = _busy_worker(rt)
    reader.close()
    del reader  # as a server drops the result of a client that went away
    assert _gone(pid)
    assert rt.query(SUM_SQL).read_all().to_pylist() == SUM


def test_queries_beyond_the_pool_wait_within_their_deadline() -> None:
    table = share_table(pa.table({"k": pa.array(range(ROWS), pa.int64())}))
    endless = {"sql": ENDLESS, "partitions": 2, "pool_bytes": 1 << 28, "tables": [{"name": "big", "fd": 0}]}
    quick = {**endless, "sql": "SELECT count(*) AS n FROM big"}
    pool = WorkerPool(1)
    outcome: list[BaseException] = []

    def run(request: dict, seconds: float) -> pa.Table:
        token = CALLER.set(Caller(deadline=time.monotonic() + seconds))
        try:
            return pool.query(request, [table.fd], "runtime.params.query_timeout").read_all()
        finally:
            CALLER.reset(token)

    def first() -> None:
        try:
            run(endless, 4.0)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)

    try:
        t = threading.Thread(target=first)
        t.start()
        end = time.monotonic() + 10
        while not pool._live and time.monotonic() < end:
            time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match="waiting for the federated engine"):
            run(quick, 1.0)
        assert time.monotonic() - started < 2.0
        t.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], QueryTimeout)
        assert run(quick, 10.0).to_pylist() == [{"n": ROWS}]  # a fresh worker took the killed one's place
    finally:
        pool.close()


def test_queries_waiting_for_a_worker_get_one_in_arrival_order() -> None:
    """Waiting queries are served first come, first served: none waits several turns while later
    ones go ahead (the long latency tail under load)."""
    table = share_table(pa.table({"k": pa.array(range(ROWS), pa.int64())}))
    endless = {"sql": ENDLESS, "partitions": 2, "pool_bytes": 1 << 28, "tables": [{"name": "big", "fd": 0}]}
    pool = WorkerPool(1)
    served: list[int] = []

    def run(request: dict, seconds: float, number: int | None = None) -> None:
        token = CALLER.set(Caller(deadline=time.monotonic() + seconds))
        try:
            pool.query(request, [table.fd], "runtime.params.query_timeout").read_all()
            served.append(number)
        except QueryTimeout:
            pass
        finally:
            CALLER.reset(token)

    try:
        holder = threading.Thread(target=run, args=(endless, 2.0))  # holds the one worker until its deadline
        holder.start()
        end = time.monotonic() + 10
        while not pool._live and time.monotonic() < end:
            time.sleep(0.01)
        waiting = []
        for number in range(6):
            quick = {**endless, "sql": f"SELECT count(*) + {number} AS n FROM big"}
            waiting.append(threading.Thread(target=run, args=(quick, 30.0, number)))
            waiting[-1].start()
            while len(pool._queue) < number + 1 and time.monotonic() < end:  # queued before the next comes
                time.sleep(0.005)
        for t in [holder, *waiting]:
            t.join(30)
        assert served == list(range(6))
    finally:
        pool.close()


def test_stopping_the_runtime_ends_every_worker(runtime) -> None:
    rt = runtime("60s")
    outcome: list[BaseException] = []
    t = threading.Thread(target=lambda: outcome.append(pytest.raises(Exception, lambda: rt.query(ENDLESS).read_all()).value))
    t.start()
    pid = _busy_worker(rt)
    rt.stop()
    t.join(10)
    assert not t.is_alive() and outcome
    assert _gone(pid)


def _mapped_inodes(pid: int) -> set[int]:
    """Inodes of the shared-memory Arrow files process `pid` maps."""
    out = set()
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        if len(parts) >= 6 and "satchel-arrow" in parts[5]:
            out.add(int(parts[4]))
    return out


def test_workers_keep_an_accelerator_table_mapped_until_it_is_replaced(runtime) -> None:
    rt = runtime("60s")
    old = int(rt.arrow.shared("big").key.split(":")[1])
    assert rt.query(SUM_SQL).read_all().to_pylist() == SUM
    (pid,) = [w.proc.pid for w in rt.routes.workers._idle]
    assert old in _mapped_inodes(pid)  # kept between queries: no page is faulted in twice
    assert rt.query(SUM_SQL).read_all().to_pylist() == SUM
    assert [w.proc.pid for w in rt.routes.workers._idle] == [pid]
    rt.refresh("big", wait=True)
    new = int(rt.arrow.shared("big").key.split(":")[1])
    assert new != old
    end = time.monotonic() + 5
    while old in _mapped_inodes(pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert old not in _mapped_inodes(pid)  # the idle worker let the replaced table go
    assert rt.query(SUM_SQL).read_all().to_pylist() == SUM
    assert new in _mapped_inodes(pid)


def test_the_pool_fits_the_cores_and_the_memory_budget() -> None:
    assert pool_size(512 << 20) == 2  # a small pod: two workers, whatever the machine's cores
    assert pool_size(64 << 30) == max(2, min(2 * usable_cores(), (64 << 30) // 4 // WORKER_BASE_BYTES))
    assert pool_size(64 << 30) == max(2, 2 * usable_cores())


def test_a_query_during_a_table_swap_takes_the_idle_worker(runtime) -> None:
    """Idle workers are told to drop replaced tables while they stay in the pool: a query that
    arrives meanwhile takes one, not a new process (a start costs it about 0.3 s)."""
    rt = runtime("60s")
    pool = rt.routes.workers
    assert rt.query(SUM_SQL).read_all().to_pylist() == SUM
    assert len(_workers(rt)) == 1
    stop = threading.Event()

    def swaps() -> None:
        while not stop.is_set():
            pool.forget(rt.arrow.shared_keys())

    t = threading.Thread(target=swaps)
    t.start()
    try:
        for _ in range(100):
            assert rt.query("SELECT max(k) AS m FROM big").read_all().to_pylist() == [{"m": ROWS - 1}]
    finally:
        stop.set()
        t.join(10)
    assert len(_workers(rt)) == 1 and pool.replaced == 0


def _maps(pid: int) -> str:
    """The files process `pid` maps (its libraries among them)."""
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_a_worker_runs_without_pandas(runtime) -> None:
    # datafusion imports pandas, which a worker never uses: refused, it was half of each
    # worker's start and 27 MiB of its memory. The worker still plans and runs its queries.
    rt = runtime()
    assert rt.query(SUM_SQL).read_all().to_pylist() == SUM
    assert rt.query("SELECT json_extract_string('{\"a\": \"x\"}', '$.a') AS j, max(k) AS m FROM big").read_all() \
        .to_pylist() == [{"j": "x", "m": ROWS - 1}]
    (pid,) = _workers(rt)
    assert "/datafusion/" in _maps(pid)  # the worker's own libraries are listed here
    assert "/pandas/" not in _maps(pid)


def test_a_worker_loads_duckdb_only_for_a_json_function(runtime) -> None:
    rt = runtime()
    assert rt.query(SUM_SQL).read_all().to_pylist() == SUM
    (pid,) = _workers(rt)
    duckdb_library = "/_duckdb."
    assert duckdb_library not in _maps(pid)  # a worker that runs no JSON function starts sooner and holds less
    json = "SELECT count(*) AS n FROM big WHERE json_extract_string('{\"a\": ' || CAST(k AS VARCHAR) || '}', '$.a') = '5'"
    assert rt.query(json).read_all().to_pylist() == [{"n": 1}]
    assert _workers(rt) == [pid] and duckdb_library in _maps(pid)
