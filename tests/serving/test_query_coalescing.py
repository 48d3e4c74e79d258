"""Identical queries at the same time, on a real sidecar: concurrent Flight SQL (ADBC) and HTTP
clients asking one question while the live source is held mid-answer cost the source one read;
`Cache-Control: no-cache` opts out."""

from __future__ import annotations

import threading
import time

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from tests.waiting import until


SQL = "SELECT category, count(*) AS n FROM sales GROUP BY category ORDER BY category"


def _parquet() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"category": [f"c{i % 5}" for i in range(1000)]}), sink)
    return sink.getvalue().to_pybytes()


def _sidecar(satchel_server, source_server, runtime: str = ""):
    """A sidecar over the source's sales table, and (its /v1/sql URL, the query's answer)."""
    source_server.files["/sales.parquet"] = _parquet()
    server = satchel_server(f"""
version: v1
kind: Spicepod
name: coalescing
{runtime}
datasets:
  - from: {source_server.url('/sales.parquet')}
    name: sales
""")
    url = f"{server.http_url}/v1/sql"
    expected = httpx.post(url, content=SQL, timeout=60).json()  # planned: its schema is known
    assert [r["n"] for r in expected] == [200] * 5
    return server, url, expected


def test_concurrent_clients_asking_one_question_cost_the_source_one_read(satchel_server, source_server):
    server, url, expected = _sidecar(satchel_server, source_server)

    def ask_together(count: int, headers: dict) -> tuple[list, int]:
        source_server.release.clear()
        source_server.plan("/sales.parquet", [(200, 30)])  # the first read is held
        before = source_server.count("/sales.parquet")
        answers: list = [None] * count

        def ask(i: int) -> None:
            if i % 2:
                answers[i] = httpx.post(url, content=SQL, headers=headers, timeout=60).json()
            else:
                with _flight(server) as conn, conn.cursor() as cur:
                    cur.execute(SQL)
                    answers[i] = cur.fetch_arrow_table().to_pylist()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
        threads[0].start()
        until(lambda: source_server.count("/sales.parquet") > before)
        for t in threads[1:]:
            t.start()
        time.sleep(1.0)  # the others arrive while the first is held in the source
        source_server.release.set()
        for t in threads:
            t.join(60)
        return answers, source_server.count("/sales.parquet") - before

    answers, reads = ask_together(4, {})
    assert answers == [expected] * 4 and reads == 1
    history = httpx.post(url, content="SELECT served_by, count(*) AS n FROM runtime.task_history "
                                      f"WHERE query_text = '{SQL}' GROUP BY served_by ORDER BY served_by",
                         timeout=60).json()
    assert {r["served_by"]: r["n"] for r in history} == {"shared": 3, "source": 2}

    answers, reads = ask_together(3, {"Cache-Control": "no-cache"})  # the HTTP one opts out
    assert answers == [expected] * 3 and reads == 2


def _flight(server):
    import adbc_driver_flightsql.dbapi as flightsql
    return flightsql.connect(f"grpc://127.0.0.1:{server.flight_port}")


def test_a_waiting_client_that_leaves_is_cancelled_and_the_others_still_get_the_answer(
        satchel_server, source_server):
    server, url, expected = _sidecar(satchel_server, source_server, "runtime:\n  params:\n    query_timeout: 0s")
    source_server.release.clear()
    source_server.plan("/sales.parquet", [(200, 30)])
    before = source_server.count("/sales.parquet")
    answers: dict[str, object] = {}

    def first() -> None:
        with _flight(server) as conn, conn.cursor() as cur:
            cur.execute(SQL)
            answers["first"] = cur.fetch_arrow_table().to_pylist()

    def patient() -> None:
        answers["patient"] = httpx.post(url, content=SQL, timeout=60).json()

    def impatient() -> None:  # a real client that gives up and closes its connection
        try:
            answers["impatient"] = httpx.post(url, content=SQL, timeout=1.5).json()
        except httpx.TimeoutException:
            answers["impatient"] = "gave up"

    leader = threading.Thread(target=first)
    leader.start()
    until(lambda: source_server.count("/sales.parquet") > before)
    others = [threading.Thread(target=f) for f in (patient, impatient)]
    for t in others:
        t.start()
    others[1].join(30)
    assert answers["impatient"] == "gave up"
    history = f"SELECT served_by, error_code FROM runtime.task_history WHERE query_text = '{SQL}' AND error_code IS NOT NULL"
    until(lambda: httpx.post(url, content=history, timeout=10).json() == [{"served_by": "shared",
                                                                         "error_code": "cancelled"}])
    source_server.release.set()
    leader.join(60)
    others[0].join(60)
    assert answers["first"] == expected and answers["patient"] == expected
    assert source_server.count("/sales.parquet") - before == 1
