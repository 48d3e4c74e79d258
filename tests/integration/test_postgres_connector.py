"""The PostgreSQL connector's reading machinery: streaming, the connection pool, server-side
cancellation, connection settings and secrets."""

from __future__ import annotations

import gc

import pytest

from connectors.base import DatasetSpec
from connectors.sql.postgres import PgSettings, PostgresConnector
from engine.errors import ConnectorError
from tests.integration.postgres_server import SATCHEL_PASSWORD, PgServer, postgres_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def big(postgres_server: PgServer) -> PgServer:
    postgres_server.execute(
        "DROP TABLE IF EXISTS public.big CASCADE",
        "CREATE TABLE public.big AS SELECT g::bigint AS id, md5(g::text) AS h FROM generate_series(1, 500000) g",
        # past its first 250000 rows, a statement that takes 25 s unless cancelled
        "CREATE VIEW public.slow AS SELECT id, h FROM (SELECT * FROM public.big ORDER BY id OFFSET 0) b "
        "WHERE CASE WHEN id > 250000 AND id % 1000 = 0 THEN pg_sleep(0.1) IS NOT NULL ELSE true END",
        "GRANT SELECT ON public.big, public.slow TO satchel")
    return postgres_server


def conn(server: PgServer, path: str = "public.big", **params) -> PostgresConnector:
    return PostgresConnector(DatasetSpec(name="big", path=path, prefix="postgres", params={**server.params(), **params}))


def active(server: PgServer, text: str) -> list[tuple]:
    return server.fetch("SELECT pid, state FROM pg_stat_activity WHERE state = 'active' "
                        f"AND query LIKE '%{text}%' AND query NOT LIKE '%pg_stat_activity%'")


def test_scan_streams_batches(big: PgServer) -> None:
    reader = conn(big).scan(["id", "h"], limit=400_000)
    sizes = [b.num_rows for b in reader]
    assert sum(sizes) == 400_000 and len(sizes) > 1  # several batches, not one materialised table


def test_dropping_a_reader_cancels_the_statement_on_the_server(big: PgServer) -> None:
    c = conn(big, "public.slow")
    reader = c.scan(["id", "h"])
    first = reader.read_next_batch()
    assert first.num_rows > 0
    assert active(big, 'FROM "public"."slow"'), "the scan should be running on the server"
    del reader, first
    gc.collect()
    assert wait_for(lambda: not active(big, 'FROM "public"."slow"'), timeout=5), "statement still running"


def test_a_timed_out_runtime_query_cancels_the_statement(big: PgServer, tmp_path) -> None:
    from engine.config import load_pod
    from engine.errors import QueryTimeout
    from engine.runtime import Runtime

    lines = ["version: v1", "kind: Spicepod", "name: big", "runtime:", "  params:", "    query_timeout: 1s",
             "datasets:", "  - from: postgres:public.slow", "    name: big", "    params:", big.params_yaml(6)]
    (tmp_path / "spicepod.yaml").write_text("\n".join(lines) + "\n")
    rt = Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))
    try:
        with pytest.raises(QueryTimeout):  # at the first batch (the source's wait) or later
            for _ in rt.query("SELECT id, h FROM big WHERE id % 7 = 3 AND id > 0"):
                pass
        gc.collect()
        assert wait_for(lambda: not active(big, 'FROM "public"."slow"'), timeout=5), "statement still running"
    finally:
        rt.stop()


def test_connections_are_pooled(big: PgServer) -> None:
    c = conn(big, connection_pool_size="2")
    for _ in range(5):
        assert c.scan(["id"], limit=10).read_all().num_rows == 10
    backends = big.fetch("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'satchel' "
                         "AND usename = 'satchel'")[0][0]
    assert 1 <= backends <= 4  # reused, not one per scan (other modules' pools may hold a couple)


def test_connection_string_and_source_identity(big: PgServer) -> None:
    uri = f"postgresql://satchel:{SATCHEL_PASSWORD}@127.0.0.1:{big.port}/satchel_test?sslmode=disable"
    a = PostgresConnector(DatasetSpec(name="a", path="public.big", prefix="postgres",
                                      params={"pg_connection_string": uri}))
    b = conn(big)
    kv = PostgresConnector(DatasetSpec(name="c", path="big", prefix="postgres", params={
        "pg_connection_string": f"host=127.0.0.1 port={big.port} dbname=satchel_test user=satchel "
                                f"password='{SATCHEL_PASSWORD}' sslmode=disable"}))
    assert a.source_id == b.source_id == kv.source_id
    assert SATCHEL_PASSWORD not in a.source_id
    assert a.scan(["id"], limit=3).read_all().num_rows == 3
    assert kv.scan(["id"], limit=3).read_all().num_rows == 3
    other_db = PgSettings.from_spec(DatasetSpec(name="d", path="x.y", prefix="postgres",
                                                params={**big.params(), "pg_db": "postgres"}))
    assert other_db.source_id != a.source_id


def test_bad_sql_error_names_the_dataset_and_hides_the_password(big: PgServer) -> None:
    c = conn(big)
    with pytest.raises(ConnectorError) as e:
        c.query("SELECT no_such_column FROM public.big").read_all()
    assert "'big'" in str(e.value) and "no_such_column" in str(e.value)
    assert SATCHEL_PASSWORD not in str(e.value)


def test_sessions_are_read_only(big: PgServer) -> None:
    with pytest.raises(ConnectorError, match="read-only transaction"):
        conn(big).query("WITH d AS (DELETE FROM public.big RETURNING id) SELECT count(*) FROM d").read_all()


def test_a_restarted_server_does_not_break_pooled_connections(big: PgServer) -> None:
    c = conn(big, connection_pool_size="1")
    assert c.scan(["id"], limit=1).read_all().num_rows == 1
    big.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = 'satchel' AND pid <> pg_backend_pid()")
    assert c.scan(["id"], limit=2).read_all().num_rows == 2
