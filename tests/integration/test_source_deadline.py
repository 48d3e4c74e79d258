"""Every query has a deadline (on by default) that reaches PostgreSQL as its own
statement_timeout, and a client that goes away (Flight SQL or HTTP) cancels the source
statement. Real PostgreSQL (pg_stat_activity and its log), real sidecars, real clients."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.integration.postgres_server import PgServer, postgres_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration

CROSS = "SELECT count(*) AS n FROM deadline_t a, deadline_t b, deadline_t c WHERE a.id + b.id + c.id > 0"


@pytest.fixture(scope="module")
def pg(postgres_server: PgServer) -> PgServer:
    postgres_server.execute(
        "DROP TABLE IF EXISTS public.deadline_t CASCADE",
        "CREATE TABLE public.deadline_t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 3000) g",
        "GRANT SELECT ON public.deadline_t TO satchel")
    return postgres_server


def _pod(pg: PgServer, timeout: str | None) -> str:
    params = f"runtime:\n  params:\n    query_timeout: {timeout}\n" if timeout else ""
    return f"""
version: v1
kind: Spicepod
name: deadline
{params}datasets:
  - from: postgres:public.deadline_t
    name: deadline_t
    params:
{pg.params_yaml(6)}
"""


def _active(pg: PgServer) -> list[tuple]:
    return pg.fetch("SELECT pid, query FROM pg_stat_activity WHERE state = 'active' AND usename = 'satchel' "
                    "AND query LIKE '%deadline_t%'")


def test_the_default_deadline_is_on_and_zero_turns_it_off() -> None:
    from engine.config import load_pod_text

    base = "version: v1\nkind: Spicepod\nname: p\n"
    assert load_pod_text(base).runtime.params.query_timeout.total_seconds() == 60
    off = load_pod_text(base + "runtime:\n  params:\n    query_timeout: 0s\n")
    assert off.runtime.params.query_timeout.total_seconds() == 0


def test_postgres_stops_the_statement_itself_at_the_deadline(pg: PgServer, satchel_server) -> None:
    server = satchel_server(_pod(pg, "1500ms"))
    offset = pg.log_offset()
    r = server.sql(CROSS)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
    assert "query_timeout" in r.json()["error"]["message"]
    log = "\n".join(pg.statements_since(offset))
    assert "SET statement_timeout = " in log  # the deadline travelled with the statement
    assert wait_for(lambda: "canceling statement due to statement timeout" in pg.log_text()[offset:], timeout=10)
    assert wait_for(lambda: not _active(pg), timeout=5)
    assert server.sql("SELECT count(*) AS n FROM deadline_t").json() == [{"n": 3000}]


def test_the_deadline_is_set_once_per_session_while_it_stays_the_same(pg: PgServer, satchel_server) -> None:
    """statement_timeout is the time left rounded up to 250 ms: queries in a row under the same
    query_timeout reuse the pooled session's setting (no SET round trip before each). A query
    that takes over 250 ms to reach the source (a loaded machine) has a lower value, and the
    next one sets it back: a few SETs at most, never one per query."""
    server = satchel_server(_pod(pg, "60s"))
    query = "SELECT count(*) AS n FROM deadline_t WHERE id > 10"
    for _ in range(2):
        assert server.sql(query).json() == [{"n": 2990}]
    offset = pg.log_offset()
    for _ in range(6):
        assert server.sql(query).json() == [{"n": 2990}]
    sent = pg.statements_since(offset)
    assert sum("deadline_t" in s for s in sent) == 6, sent
    sets = [int(s.split("=")[1]) for s in sent if "SET statement_timeout" in s]
    assert len(sets) <= 3 and all(value % 250 == 0 and 0 < value <= 60_000 for value in sets), sent
    offset = pg.log_offset()
    short = satchel_server(_pod(pg, "10s"))  # another deadline: its own SET, a multiple of 250 ms
    assert short.sql(query).json() == [{"n": 2990}]
    sets = [s for s in pg.statements_since(offset) if "SET statement_timeout" in s]
    assert sets and all(int(s.split("=")[1]) % 250 == 0 and 0 < int(s.split("=")[1]) <= 10000 for s in sets), sets


def test_a_flight_client_that_goes_away_cancels_the_source_statement(pg: PgServer, satchel_server) -> None:
    import adbc_driver_flightsql.dbapi as flightsql

    server = satchel_server(_pod(pg, "0s"))  # no deadline: only the disconnect can stop it
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with flightsql.connect(server.flight_uri) as conn, conn.cursor() as cur:
                cur.adbc_statement.set_options(**{"adbc.flight.sql.rpc.timeout_seconds.fetch": "1"})
                cur.execute(CROSS)
                cur.fetchall()
        except BaseException as e:  # the client gives up after a second
            errors.append(e)

    client = threading.Thread(target=run)
    client.start()
    assert wait_for(lambda: bool(_active(pg)), timeout=10), "the statement never started"
    client.join(30)
    assert errors, "the client was expected to give up"
    gone_at = time.monotonic()
    assert wait_for(lambda: not _active(pg), timeout=10), f"statement still running: {_active(pg)}"
    assert time.monotonic() - gone_at < 5


def test_an_http_client_that_goes_away_cancels_the_source_statement(pg: PgServer, satchel_server) -> None:
    server = satchel_server(_pod(pg, "0s"))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.http_url}/v1/sql", content=CROSS, timeout=2)
    assert wait_for(lambda: not _active(pg), timeout=10), f"statement still running: {_active(pg)}"
