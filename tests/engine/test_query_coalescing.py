"""Identical queries at the same time run once (runtime.params.coalesce_queries): on a real
runtime over a real HTTP source held mid-answer, the source sees one read for many queries;
what must not be shared never is."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import QueryTimeout
from engine.query.coalesce import Coalescer, Follower, Leader
from tests.waiting import until

SQL = "SELECT category, count(*) AS n, sum(amount) AS total FROM sales GROUP BY category ORDER BY category"


def _parquet() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"category": [f"c{i % 7}" for i in range(5000)],
                             "amount": [float(i) for i in range(5000)]}), sink)
    return sink.getvalue().to_pybytes()


def _pod(url: str, extra: str = "") -> str:
    return f"""
version: v1
kind: Spicepod
name: coalescing
{extra}
datasets:
  - from: {url}
    name: sales
"""


@pytest.fixture
def source(source_server):
    source_server.files["/sales.parquet"] = _parquet()
    return source_server


def _run_at_once(rt, count: int, source, sql: str = SQL, principals=None, params=None, step=(200, 30)):
    """The leader's source read is held (on `source.release`) until `count - 1` more identical
    queries are waiting or running; then released. Returns (results or errors, source reads)."""
    source.release.clear()
    before = source.count("/sales.parquet")
    source.plan("/sales.parquet", [step])
    out: list = [None] * count

    def run(i: int) -> None:
        try:
            principal = principals[i] if principals else None
            kwargs = {"principal": principal} if principal is not None else {}
            out[i] = rt.query(sql, protocol="test", params=params[i] if params else None, **kwargs).read_all()
        except Exception as e:  # noqa: BLE001 - compared by the test
            out[i] = e

    threads = [threading.Thread(target=run, args=(0,))]
    threads[0].start()
    until(lambda: source.count("/sales.parquet") > before)  # the first query is in the source, held
    threads += [threading.Thread(target=run, args=(i,)) for i in range(1, count)]
    for t in threads[1:]:
        t.start()
    coalescer = rt.queries.coalescer
    until(lambda: coalescer is None or coalescer.waiting == count - 1
           or source.count("/sales.parquet") - before == count, timeout=20)
    source.release.set()
    for t in threads:
        t.join(60)
    return out, source.count("/sales.parquet") - before



def test_identical_queries_at_once_read_the_source_once(make_runtime, source):
    rt = make_runtime(_pod(source.url("/sales.parquet")), start=True)
    assert rt.wait_ready(30)
    expected = rt.query(SQL).read_all()  # planned once: the schema is known
    results, reads = _run_at_once(rt, 6, source)
    assert reads == 1
    assert all(isinstance(r, pa.Table) and r.equals(expected) for r in results)
    served = rt.query("SELECT served_by, count(*) AS n FROM runtime.task_history WHERE protocol = 'test' "
                      "GROUP BY served_by ORDER BY served_by").read_all().to_pylist()
    assert served == [{"served_by": "shared", "n": 5}, {"served_by": "source", "n": 1}]
    metrics = rt.metrics.registry.get_sample_value("satchel_queries_total", {"protocol": "test", "served_by": "shared"})
    assert metrics == 5
    assert rt.queries.coalescer.waiting == 0 and not rt.queries.coalescer._runs


def test_when_the_first_query_fails_the_waiting_ones_run_on_their_own(make_runtime, source):
    rt = make_runtime(_pod(source.url("/sales.parquet")), start=True)
    assert rt.wait_ready(30)
    expected = rt.query(SQL).read_all()
    results, reads = _run_at_once(rt, 4, source, step=(500, 30))  # the held read then fails
    assert isinstance(results[0], Exception)
    assert all(isinstance(r, pa.Table) and r.equals(expected) for r in results[1:])
    assert reads == 4  # the failed read, then each waiting query's own


def test_different_principals_or_parameters_never_share(make_runtime, source):
    auth = """
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["k-admin"]
    principals:
      - name: red
        keys: ["k-red"]
        datasets:
          - name: sales
            filter: "category = 'c1'"
"""
    rt = make_runtime(_pod(source.url("/sales.parquet"), auth), start=True)
    assert rt.wait_ready(30)
    admin, red = rt.authenticate("k-admin"), rt.authenticate("k-red")
    whole, filtered = rt.query(SQL, admin).read_all(), rt.query(SQL, red).read_all()
    assert filtered.num_rows == 1 and whole.num_rows == 7
    results, reads = _run_at_once(rt, 2, source, principals=[admin, red])
    assert reads == 2 and results[0].equals(whole) and results[1].equals(filtered)
    # the same text with other parameters is another query
    sql = "SELECT count(*) AS n FROM sales WHERE amount < ?"
    rt.query(sql, admin, params=[10]).read_all()
    results, reads = _run_at_once(rt, 2, source, sql, principals=[admin, admin], params=[[10], [20]])
    assert reads == 2 and [r.column("n")[0].as_py() for r in results] == [10, 20]


def test_a_waiting_query_keeps_its_own_deadline(make_runtime, source):
    extra = "runtime:\n  params:\n    query_timeout: 2s\n"
    rt = make_runtime(_pod(source.url("/sales.parquet"), extra), start=True)
    assert rt.wait_ready(30)
    rt.query(SQL).read_all()
    source.release.clear()
    source.plan("/sales.parquet", [(200, 30), (200, 30)])  # held, and so is a read of its own
    before = source.count("/sales.parquet")
    errors: list = []

    def run() -> None:
        try:
            rt.query(SQL).read_all()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    first = threading.Thread(target=run)
    first.start()
    until(lambda: source.count("/sales.parquet") > before)
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="query_timeout"):
        rt.query(SQL).read_all()
    assert time.monotonic() - started < 5
    source.release.set()
    first.join(30)
    assert errors and isinstance(errors[0], QueryTimeout)


def test_coalesce_queries_false_runs_every_query(make_runtime, source):
    extra = "runtime:\n  params:\n    coalesce_queries: false\n"
    rt = make_runtime(_pod(source.url("/sales.parquet"), extra), start=True)
    assert rt.wait_ready(30)
    expected = rt.query(SQL).read_all()
    assert rt.queries.coalescer is None
    results, reads = _run_at_once(rt, 3, source)
    assert reads == 3 and all(r.equals(expected) for r in results)


# -- the Coalescer's bounds, on real Arrow readers -------------------------------------------


def _reader(batches: int, rows: int = 1000) -> pa.RecordBatchReader:
    batch = pa.record_batch({"x": pa.array(range(rows), pa.int64())})
    return pa.RecordBatchReader.from_batches(batch.schema, iter([batch] * batches))


def test_a_result_over_the_bound_is_not_shared_and_streams_whole():
    coalescer = Coalescer(max_bytes=20_000)  # two 8 KB batches fit, three do not
    leader = coalescer.enter("k")
    follower = coalescer.enter("k")
    assert isinstance(leader, Leader) and isinstance(follower, Follower)
    assert leader.share(_reader(5)).read_all().num_rows == 5000  # the leader's client gets all of it
    assert follower.wait(None, lambda: False) is None  # runs on its own
    assert coalescer._held == 0


def test_a_shared_result_is_the_whole_result_and_bounds_are_released():
    coalescer = Coalescer()
    leader, follower = coalescer.enter("k"), coalescer.enter("k")
    stream = leader.share(_reader(3))
    first = stream.read_next_batch()  # the leader reads ahead for the follower
    shared = follower.wait(time.monotonic() + 5, lambda: False)
    assert shared.read_all().num_rows == 3000 and first.num_rows == 1000
    assert stream.read_all().num_rows == 2000
    assert coalescer.shared == 1 and coalescer._held == 0
    assert isinstance(coalescer.enter("k"), Leader)  # a later query runs again


def test_a_leader_dropped_unread_releases_its_followers():
    coalescer = Coalescer()
    leader, follower = coalescer.enter("k"), coalescer.enter("k")
    stream = leader.share(_reader(2))
    del stream, leader
    assert follower.wait(time.monotonic() + 5, lambda: False) is None
    assert isinstance(coalescer.enter("k"), Leader)


def test_a_waiting_query_whose_client_leaves_is_cancelled():
    from engine.errors import RequestCancelled
    coalescer = Coalescer()
    coalescer.enter("k")
    follower = coalescer.enter("k")
    with pytest.raises(RequestCancelled):
        follower.wait(time.monotonic() + 5, lambda: True)
