"""`adbc:` datasets in a running Satchel: a SQLite file and a PostgreSQL server (tests/integration/
postgres_server.py) through their ADBC drivers loaded by name; push-down proven by the
statement log, cancellation by pg_stat_activity."""

from __future__ import annotations

import gc
import json
import time

import pyarrow as pa
import pytest

from connectors.sql.adbc import AdbcConnector
from connectors.base import DatasetSpec, Filter
from tests.connectors.test_adbc_conformance import write_sqlite
from tests.integration.postgres_server import SATCHEL_PASSWORD, postgres_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration

ITEMS = pa.table({"id": pa.array(range(1, 101), pa.int64()), "name": [f"item {i}" for i in range(1, 101)],
                  "b": pa.array([i % 2 == 0 for i in range(1, 101)]), "d": pa.array([None] * 100, pa.date32()),
                  "ts": pa.array([None] * 100, pa.timestamp("us"))})


@pytest.fixture
def pg_items(postgres_server):  # noqa: F811
    postgres_server.execute("DROP TABLE IF EXISTS public.items", "CREATE TABLE public.items (id bigint, name text)",
                            "INSERT INTO public.items SELECT g, 'pg ' || g FROM generate_series(1, 100) g",
                            "GRANT SELECT ON public.items TO satchel")
    return postgres_server


def pod(sqlite_path, pg) -> str:
    return f"""\
version: v1
kind: Spicepod
name: adbc
datasets:
  - from: adbc:reference
    name: lite
    params:
      adbc_driver: adbc_driver_sqlite
      adbc_uri: file:{sqlite_path}
  - from: adbc:public.items
    name: pg_items
    params:
      adbc_driver: adbc_driver_postgresql
      adbc_uri: postgresql://satchel:${{secrets:PG_PASS}}@127.0.0.1:{pg.port}/satchel_test
"""


def test_sqlite_and_postgres_through_a_sidecar(satchel_server, tmp_path, pg_items) -> None:
    db = tmp_path / "lite.db"
    write_sqlite(db, ITEMS.rename_columns(["id", "s", "b", "d", "ts"]))
    server = satchel_server(pod(db, pg_items), env={"PG_PASS": SATCHEL_PASSWORD})
    response = server.sql("SELECT count(*) AS n, min(s) AS first FROM lite WHERE id > 90")
    assert response.status_code == 200, response.text
    assert response.json() == [{"n": 10, "first": "item 100"}]
    offset = pg_items.log_offset()
    response = server.sql("SELECT l.s, p.name FROM lite l JOIN pg_items p ON l.id = p.id WHERE p.id BETWEEN 3 AND 4 "
                          "ORDER BY l.id")
    assert response.status_code == 200, response.text
    assert response.json() == [{"s": "item 3", "name": "pg 3"}, {"s": "item 4", "name": "pg 4"}]
    statements = pg_items.statements_since(offset)
    assert any('FROM "public"."items" WHERE "id" >= 3 AND "id" <= 4' in s for s in statements), statements
    explain = json.dumps(server.sql("EXPLAIN SELECT s FROM lite WHERE id = 7 AND s LIKE 'item%'").json())
    assert """WHERE \\"id\\" = 7 AND \\"s\\" LIKE 'item%'""" in explain, explain
    assert SATCHEL_PASSWORD not in explain and SATCHEL_PASSWORD not in server.log()


def test_dropping_a_reader_cancels_the_remote_statement(pg_items) -> None:
    uri = f"postgresql://satchel:{SATCHEL_PASSWORD}@127.0.0.1:{pg_items.port}/satchel_test"
    path = "SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 50000000) g"
    conn = AdbcConnector(DatasetSpec("big", path, "adbc", {"adbc_driver": "adbc_driver_postgresql", "adbc_uri": uri}))
    try:
        reader = conn.scan(["id"], [Filter("id", ">", 0)])
        first = reader.read_next_batch()
        assert first.num_rows > 0

        def running() -> int:
            return pg_items.fetch("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                  "AND query LIKE '%generate_series(1, 50000000)%' AND pid <> pg_backend_pid()")[0][0]

        assert running() == 1
        started = time.monotonic()
        del reader
        gc.collect()
        assert wait_for(lambda: running() == 0, timeout=20), "the statement kept running after the reader was dropped"
        assert time.monotonic() - started < 20
    finally:
        conn.close()


def test_a_source_count_streams_the_announced_schema_over_flight_sql(satchel_server, tmp_path) -> None:
    """`SELECT count(*)` answered by the source's own count: `n` is non-null over Flight SQL, as
    GetFlightInfo announced (the ADBC client rejects a stream whose schema differs)."""
    import adbc_driver_flightsql.dbapi as fs

    db = tmp_path / "lite.db"
    write_sqlite(db, ITEMS.rename_columns(["id", "s", "b", "d", "ts"]))
    server = satchel_server(f"""\
version: v1
kind: Spicepod
name: adbc_count
datasets:
  - from: adbc:reference
    name: lite
    params:
      adbc_driver: adbc_driver_sqlite
      adbc_uri: file:{db}
""")
    with fs.connect(f"grpc://127.0.0.1:{server.flight_port}", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM lite WHERE id > 90")
        got = cur.fetch_arrow_table()
    assert got.to_pylist() == [{"n": 10}] and not got.schema.field("n").nullable
