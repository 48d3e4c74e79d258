"""A full refresh of a large PostgreSQL table reads it on several connections at once (ranges of
pages), all in one snapshot: the accelerated copy is the table of one moment even while rows
move under concurrent updates, every session is committed and pooled again, and a refresh
ended early (dropped, or cancelled at its deadline) leaves no statement running."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from connectors.base import CALLER, Caller, CancelScope, DatasetSpec
from connectors.sql.postgres import PostgresConnector
from engine.config import load_pod
from engine.errors import ConnectorError
from engine.runtime import Runtime
from tests.integration.postgres_server import PgServer, postgres_server  # noqa: F401

pytestmark = pytest.mark.integration

ROWS = 300_000  # about 3,000 pages: read in 3 parts


def _make_big(server: PgServer, name: str, rows: int = ROWS) -> None:
    server.execute(f"DROP TABLE IF EXISTS public.{name}",
                   f"CREATE TABLE public.{name} (id int8 PRIMARY KEY, v int8 NOT NULL, pad text NOT NULL)",
                   f"INSERT INTO public.{name} SELECT g, 0, md5(g::text) FROM generate_series(1, {rows}) g",
                   f"GRANT SELECT ON public.{name} TO satchel", f"VACUUM ANALYZE public.{name}")


def _runtime(server: PgServer, tmp_path: Path, table: str, extra: str = "") -> Runtime:
    (tmp_path / "spicepod.yaml").write_text(f"""version: v1
kind: Spicepod
name: parallel
datasets:
  - from: postgres:public.{table}
    name: {table}
    params:
{server.params_yaml(6)}
    acceleration:
      engine: duckdb
{extra}""")
    return Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))


def _part_statements(server: PgServer, table: str) -> int:
    return server.fetch(f"SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%FROM \"public\".\"{table}\"%ctid%'")[0][0]


def test_a_large_table_is_read_in_parts_in_one_snapshot(postgres_server: PgServer, tmp_path) -> None:
    table = "big_moving"
    _make_big(postgres_server, table)
    stop = threading.Event()
    updates = [0]

    def move_rows() -> None:  # every update moves its rows to the table's end: from one part to another
        while not stop.is_set():
            postgres_server.execute(f"UPDATE public.{table} SET v = v + 1 WHERE id % 50 = {updates[0] % 50}")
            updates[0] += 1

    writer = threading.Thread(target=move_rows, daemon=True)
    writer.start()
    rt = _runtime(postgres_server, tmp_path, table)
    try:
        rt.start()
        assert rt.wait_ready(60), rt.status()
        for _ in range(2):
            rt.refresh(table, wait=True)
        stop.set()
        writer.join(30)
        got = rt.query(f"SELECT count(*) AS n, count(DISTINCT id) AS d, min(id) AS lo, max(id) AS hi FROM {table}").read_all()
        assert got.to_pylist() == [{"n": ROWS, "d": ROWS, "lo": 1, "hi": ROWS}]
    finally:
        stop.set()
        rt.stop()
    assert updates[0] > 0
    assert _part_statements(postgres_server, table) >= 2
    # every part's session was committed: none is left idle in a transaction
    assert postgres_server.fetch("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' "
                                 "AND usename = 'satchel'")[0][0] == 0


def test_a_small_table_is_read_in_one_statement(postgres_server: PgServer, tmp_path) -> None:
    table = "small_whole"
    postgres_server.execute(f"DROP TABLE IF EXISTS public.{table}",
                            f"CREATE TABLE public.{table} AS SELECT g AS id FROM generate_series(1, 1000) g",
                            f"GRANT SELECT ON public.{table} TO satchel")
    rt = _runtime(postgres_server, tmp_path, table)
    try:
        rt.start()
        assert rt.wait_ready(60), rt.status()
        assert rt.query(f"SELECT count(*) AS n FROM {table}").read_all().to_pylist() == [{"n": 1000}]
    finally:
        rt.stop()
    assert _part_statements(postgres_server, table) == 0


def _active_parts(server: PgServer, table: str) -> int:
    return server.fetch(f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{table}%ctid%' "
                        "AND state = 'active' AND pid <> pg_backend_pid()")[0][0]


@pytest.fixture(scope="module")
def huge(postgres_server: PgServer) -> str:
    """A table larger than what the parts' readers buffer (a few batches each), so its
    statements are still running while the consumer waits."""
    _make_big(postgres_server, "big_early", 3_000_000)
    return "big_early"


@pytest.mark.parametrize("how", ["dropped", "cancelled"])
def test_a_parallel_read_ended_early_leaves_nothing_running(postgres_server: PgServer, huge: str, how: str) -> None:
    table = huge
    connector = PostgresConnector(DatasetSpec(name=table, path=f"public.{table}", prefix="postgres",
                                              params=postgres_server.params()))
    scope = CancelScope()
    token = CALLER.set(Caller("runtime", "refresh", None, scope))
    try:
        reader = connector.scan()
        reader.read_next_batch()  # every part's statement has started; the consumer stops here
        assert _active_parts(postgres_server, table) >= 2
        if how == "dropped":  # the refresh failed writing, or its consumer went away
            del reader
        else:  # the refresh's deadline or the runtime stopping
            scope.cancel()
            with pytest.raises(ConnectorError, match="canceling statement"):
                reader.read_all()
    finally:
        CALLER.reset(token)
        connector.close()
    deadline = time.monotonic() + 5
    while _active_parts(postgres_server, table) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _active_parts(postgres_server, table) == 0
    assert postgres_server.fetch("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' "
                                 "AND usename = 'satchel'")[0][0] == 0
