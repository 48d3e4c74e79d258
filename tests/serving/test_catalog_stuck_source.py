"""A silent live source never holds up the catalog: /v1/datasets, Flight SQL's GetTables,
SHOW TABLES, information_schema and MCP's list_datasets answer at once with every other dataset
and view (views that read the silent one wait for it too),
the silent one's schema is asked for once (not once per listing), and that ask is cancelled at
its deadline. A real `satchel run`; the source is a SilentServerDouble (accepts, never answers)."""

from __future__ import annotations

import json
import time

import adbc_driver_flightsql.dbapi as flightsql
import httpx

from tests.integration.waiting import wait_for
from tests.silent_server import SilentServerDouble, silent_server  # noqa: F401 - fixture

PROMPT_S = 3.5  # a listing answers within this, whatever the silent source does


def _pod(silent: SilentServerDouble, loading: SilentServerDouble) -> str:
    return f"""
version: v1
kind: Spicepod
name: stuck_catalog
runtime:
  params:
    query_timeout: 4s
embeddings:
  - from: huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2
    name: minilm
datasets:
  - from: {loading.url('/notes.csv')}
    name: stuck_search
    ready_state: on_registration
    columns:
      - name: body
        embeddings:
          - from: minilm
    acceleration:
      engine: duckdb
      primary_key: id
  - from: file:ok.csv
    name: ok
  - from: {silent.url('/live.parquet')}
    name: stuck_live
    ready_state: on_registration
views:
  - name: ok_view
    sql: SELECT a FROM ok
  - name: stuck_view
    sql: SELECT id FROM stuck_live
  - name: stuck_view_of_view
    sql: SELECT * FROM stuck_view
"""


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def _mcp_dataset_names(url: str) -> list[str]:
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> list[str]:
        with anyio.fail_after(30):
            async with streamable_http_client(f"{url}/v1/mcp") as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    res = await session.call_tool("list_datasets", {})
                    data = res.structured_content or json.loads(res.content[0].text)
                    return [d["name"] for d in data["datasets"]]

    return anyio.run(main)


def test_a_silent_live_source_never_holds_up_the_catalog(satchel_server, silent_server):
    loading = SilentServerDouble()  # the source of a first load that never ends
    try:
        _catalog_without_the_silent_source(satchel_server, silent_server, loading)
    finally:
        loading.close()


def _catalog_without_the_silent_source(satchel_server, silent_server, loading):
    server = satchel_server(_pod(silent_server, loading), files={"ok.csv": "a,b\n1,x\n"}, wait_ready=False)
    listings = {
        "/v1/datasets": lambda: _with_columns(httpx.get(f"{server.http_url}/v1/datasets", timeout=30).json()),
        "SHOW TABLES": lambda: [r["table_name"] for r in server.sql("SHOW TABLES").json()],
        "information_schema.columns": lambda: sorted(
            {r["table_name"] for r in server.sql("SELECT table_name FROM information_schema.columns").json()}),
        "GetTables": lambda: _flight_tables(server.flight_uri),
        "MCP list_datasets": lambda: _mcp_dataset_names(server.http_url),
    }
    for _ in range(2):  # the second round finds the silent source's schema still being asked for
        for label, listing in listings.items():
            names, took = _timed(listing)
            assert {"ok", "ok_view"} <= set(names) and not {"stuck_live", "stuck_view", "stuck_view_of_view",
                                                             "stuck_search"} & set(names), \
                (label, names)
            assert took < PROMPT_S, (label, took)
    # one ask for the silent source's schema, whatever the number of listings
    assert silent_server.accepted == 1, silent_server.requests
    # which ends at its deadline: its connection is shut, and the next listing asks again
    assert wait_for(lambda: silent_server.open_connections() == 0, timeout=15), silent_server.open_connections()
    names, took = _timed(listings["/v1/datasets"])
    assert "ok" in names and took < PROMPT_S
    assert wait_for(lambda: silent_server.accepted == 2, timeout=5)
    # described, it is a dataset whose columns are not known yet (not an unknown table)
    r = server.sql("DESCRIBE stuck_live")
    assert r.status_code == 503 and r.json()["error"]["code"] == "dataset_not_ready", r.text
    assert "not known yet" in r.json()["error"]["message"]
    assert server.sql("DESCRIBE nothing_here").json()["error"]["code"] == "unknown_dataset"
    # a search of a dataset whose first load waits on its source: at once when it needs the
    # dataset's columns, else at the query deadline
    for body, codes in (({"additional_columns": ["body"]}, {503}), ({}, {503, 504})):
        r, took = _timed(lambda: httpx.post(f"{server.http_url}/v1/search", timeout=30,
                                            json={"text": "late", "datasets": ["stuck_search"], **body}))
        assert r.status_code in codes and took < (PROMPT_S if body else 10), (body, r.status_code, r.text, took)
    # the dataset itself still answers with the query deadline, never hangs
    r = httpx.post(f"{server.http_url}/v1/sql", content="SELECT * FROM stuck_live", timeout=30)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
    assert "stuck_live" in server.log() and "schema" in server.log()


def _with_columns(datasets: list[dict]) -> list[str]:
    """The datasets whose columns are known; the others are listed with their status and none."""
    unknown = {d["name"]: d["status"] for d in datasets if not d["columns"] and d["type"] == "table"}
    assert unknown.get("stuck_live") == "ready (federated)" and set(unknown) <= {"stuck_live", "stuck_search"}, unknown
    return [d["name"] for d in datasets if d["columns"]]


def _flight_tables(uri: str) -> list[str]:
    with flightsql.connect(uri) as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    return [t["table_name"] for catalog in objects for schema in catalog["catalog_db_schemas"] or []
            for t in schema["db_schema_tables"] or []]
