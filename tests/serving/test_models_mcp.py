"""Models, data tools and MCP without a real model: a broken model never takes the data side
down; /v1/models, /v1/status and errors are clear; MCP over Streamable HTTP and stdio."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from engine.config import load_pod_text
from engine.errors import Overloaded
from engine.runtime import Principal, Runtime

REPO = Path(__file__).resolve().parents[2]

POD = """
version: v1
kind: Spicepod
name: models_pod
datasets:
  - from: file:items.csv
    name: items
    description: Things in the shop, one row per item.
    columns:
      - name: id
        description: Item id.
models:
  - from: file:models/missing.gguf
    name: broken
  - from: openai:upstream-model
    name: remote
    params:
      endpoint: http://127.0.0.1:9/v1
      openai_api_key: ${secrets:UPSTREAM_KEY}
"""
ITEMS = "id,name\n" + "".join(f"{i},item{i}\n" for i in range(1, 301))


@pytest.fixture(scope="module")
def server(module_satchel_server):
    return module_satchel_server(POD, files={"items.csv": ITEMS}, env={"UPSTREAM_KEY": "sk-very-secret"})


def test_broken_model_is_unavailable_and_data_still_serves(server) -> None:
    assert httpx.get(f"{server.http_url}/v1/ready").status_code == 200
    assert server.sql("SELECT count(*) AS n FROM items").json() == [{"n": 300}]
    models = httpx.get(f"{server.http_url}/v1/models").json()
    assert models["object"] == "list"
    by_id = {m["id"]: m for m in models["data"]}
    assert by_id["broken"]["status"] == "error" and "not found" in by_id["broken"]["error"]
    assert by_id["remote"]["status"] == "ready" and by_id["remote"]["object"] == "model"
    status = httpx.get(f"{server.http_url}/v1/status").json()
    assert {m["name"] for m in status["models"]} == {"broken", "remote"}
    assert "sk-very-secret" not in json.dumps(status)
    r = httpx.post(f"{server.http_url}/v1/chat/completions",
                   json={"model": "broken", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and "unavailable" in r.json()["error"]["message"]
    r = httpx.post(f"{server.http_url}/v1/chat/completions",
                   json={"model": "broken", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503
    r = httpx.post(f"{server.http_url}/v1/chat/completions",
                   json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404
    r = httpx.post(f"{server.http_url}/v1/chat/completions", json={"model": "remote", "messages": []})
    assert r.status_code == 400


def test_unreachable_openai_upstream_is_a_502_and_recorded(server) -> None:
    r = httpx.post(f"{server.http_url}/v1/chat/completions",
                   json={"model": "remote", "messages": [{"role": "user", "content": "secret question"}]}, timeout=30)
    assert r.status_code == 502 and "cannot reach" in r.json()["error"]["message"]
    rows = server.sql("SELECT task, model, error, query_text, prompt_hash FROM runtime.task_history "
                      "WHERE task = 'chat' AND model = 'remote'").json()
    assert rows and rows[-1]["error"] and rows[-1]["prompt_hash"]
    assert "secret question" not in json.dumps(rows) and rows[-1]["query_text"].startswith("sha256:")


def _mcp_post(server, body: dict, session: str | None = None) -> httpx.Response:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-06-18"}
    return httpx.post(f"{server.http_url}/v1/mcp", json=body, headers=headers, timeout=30)


def test_mcp_streamable_http(server) -> None:
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from serving.llm.mcp import MAX_CHARS

    async def main() -> None:
        async with streamable_http_client(f"{server.http_url}/v1/mcp") as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert "items" in (init.instructions or "") and "Things in the shop" in init.instructions
                tools = {t.name: t for t in (await session.list_tools()).tools}
                assert set(tools) == {"list_datasets", "describe_dataset", "query", "search"}
                assert all(t.annotations and t.annotations.read_only_hint for t in tools.values())
                res = await session.call_tool("describe_dataset", {"name": "items"})
                data = res.structured_content or json.loads(res.content[0].text)
                assert [c["name"] for c in data["columns"]] == ["id", "name"]
                assert data["columns"][0]["description"] == "Item id."
                assert data["primary_key"] == [] and data["unique_keys"] == []  # live, so no index holds a key
                res = await session.call_tool("query", {"sql": "SELECT * FROM items ORDER BY id", "max_rows": 10})
                data = res.structured_content or json.loads(res.content[0].text)
                assert data["row_count"] == 10 and data["truncated"] is True
                # compact JSON text, within the character cap (the SDK's indented form was 2.3x the size)
                res = await session.call_tool("query", {"sql": "SELECT repeat('x', 500) AS pad, id FROM items"})
                text = res.content[0].text
                data = json.loads(text)
                assert data["truncated"] is True and 0 < data["row_count"] < 100
                assert text == json.dumps(data, separators=(",", ":"), ensure_ascii=False) and len(text) <= MAX_CHARS
                res = await session.call_tool("query", {"sql": "DELETE FROM items"})
                # the SDK prefixes "Error executing tool query: "; the stable code and the reason follow
                assert res.is_error and "read_only: only read queries" in res.content[0].text
                assert "DELETE statements are refused" in res.content[0].text
                res = await session.call_tool("query", {"sql": "SELECT * FROM nope"})
                assert res.is_error and "unknown_dataset: " in res.content[0].text

    anyio.run(main)
    rows = server.sql("SELECT task, tool_calls, error FROM runtime.task_history WHERE task = 'mcp'").json()
    assert {r["tool_calls"][0] for r in rows} >= {"describe_dataset", "query"}
    assert any(r["error"] for r in rows)


def test_mcp_stdio(tmp_path: Path) -> None:
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    (tmp_path / "items.csv").write_text(ITEMS)
    (tmp_path / "spicepod.yaml").write_text(POD.split("models:")[0])
    params = StdioServerParameters(command=sys.executable, args=["-m", "serving.cli", "mcp", "--pod",
                                                                 str(tmp_path / "spicepod.yaml")],
                                   cwd=str(REPO), env={**os.environ, "SATCHEL_LOG_LEVEL": "WARNING"})

    async def main() -> None:
      with anyio.fail_after(60):
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                res = await session.call_tool("list_datasets", {})
                data = res.structured_content or json.loads(res.content[0].text)
                assert "items" in [d["name"] for d in data["datasets"]]
                res = await session.call_tool("query", {"sql": "SELECT count(*) AS n FROM items"})
                data = res.structured_content or json.loads(res.content[0].text)
                assert data["rows"] == [[300]] and data["truncated"] is False

    anyio.run(main)


def test_data_tools_bound_rows_and_bytes(tmp_path: Path) -> None:
    from serving.llm.data_tools import DataTools, selected_tools

    (tmp_path / "items.csv").write_text(ITEMS)
    pod = load_pod_text(POD.split("models:")[0], file=str(tmp_path / "spicepod.yaml"))
    runtime = Runtime(pod, data_dir=str(tmp_path / ".satchel"))
    runtime.start()
    try:
        tools = DataTools(runtime, max_rows=20, max_bytes=200)
        p = Principal("t")
        names = [d["name"] for d in tools.list_datasets(p)]
        assert "items" in names and "runtime.task_history" in names
        out = tools.call("sql", {"query": "SELECT * FROM items ORDER BY id"}, p)
        assert out["truncated"] is True and 0 < out["row_count"] < 20
        assert len(json.dumps(out["rows"])) <= 200
        # values as the HTTP API writes them, in strict JSON: no Python reprs, no bare NaN
        out = tools.call("sql", {"query": "SELECT CAST('NaN' AS DOUBLE PRECISION) AS x, '\\xff'::bytea AS b, "
                                          "TIMESTAMP '2024-01-06 10:52:00' AS t, CAST(12.50 AS NUMERIC(12, 2)) AS d"}, p)
        assert out["rows"] == [["NaN", "\\xFF", "2024-01-06T10:52:00", 12.5]], out
        json.dumps(out, allow_nan=False)
        out = tools.call("sample_data", {"table": "items", "limit": 2}, p)
        assert out["row_count"] == 2 and out["truncated"] is False
        assert "error" in tools.call("sql", {"query": "DROP TABLE items"}, p)
        assert "error" in tools.call("table_schema", {"table": "nope"}, p)
        assert selected_tools("auto") == ["list_datasets", "table_schema", "sql", "sample_data", "search"]
        assert selected_tools(("sql",)) == ["sql"]
        rows = runtime.task_history.table().to_pylist()
        assert any(r["protocol"] == "tool" and r["task"] == "query" for r in rows)
    finally:
        runtime.stop()


def test_task_history_keeps_old_columns_and_adds_model_columns() -> None:
    from engine.task_history import SCHEMA

    assert SCHEMA.names[:12] == ["task_id", "task", "protocol", "principal", "query_text", "datasets", "served_by",
                                 "started_at", "duration_ms", "rows", "truncated", "error"]
    for name in ("model", "input_tokens", "output_tokens", "tool_calls", "prompt_hash"):
        assert SCHEMA.field(name).nullable
    assert SCHEMA.field("tool_calls").type == pa.list_(pa.string())


def test_model_config_is_validated() -> None:
    from engine.config import ConfigError

    base = "version: v1\nkind: Spicepod\nname: p\nmodels:\n"
    pod = load_pod_text(base + "  - from: openai:gpt-4o-mini\n    name: m\n    params:\n      max_tokens: 64\n")
    assert pod.models[0].provider == "openai" and pod.models[0].path == "gpt-4o-mini"
    assert pod.models[0].params["max_tokens"] == "64"
    with pytest.raises(ConfigError) as info:
        load_pod_text(base + "  - from: hf:some/model\n    name: m\n")
    [issue] = info.value.issues
    assert issue.key == "models[0].from" and "file:<path>.gguf or openai:<model>" in issue.message


def test_grammar_schemas_stay_small() -> None:
    from serving.llm.providers import _llama_response_format

    rf = _llama_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "maxLength": 5000},
                                         "b": {"type": "string", "maxLength": 10}}}}})
    assert rf["schema"]["properties"] == {"a": {"type": "string"}, "b": {"type": "string", "maxLength": 10}}


def test_mcp_over_http_needs_the_api_key_and_records_its_principal(satchel_server) -> None:
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    pod = POD.split("models:")[0] + 'runtime:\n  auth:\n    api_key:\n      enabled: true\n' \
        '      keys: ["${env:SATCHEL_TEST_API_KEY}"]\n'
    server = satchel_server(pod, files={"items.csv": ITEMS}, api_key="k-mcp")
    r = httpx.post(f"{server.http_url}/v1/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 401

    async def main() -> None:
        import httpx2  # the mcp client's HTTP library

        http = httpx2.AsyncClient(headers={"X-API-Key": "k-mcp"}, timeout=30)
        async with streamable_http_client(f"{server.http_url}/v1/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                res = await session.call_tool("query", {"sql": "SELECT 1 AS one"})
                assert not res.is_error

    anyio.run(main)
    rows = server.sql("SELECT principal FROM runtime.task_history WHERE task = 'mcp'").json()
    assert rows and {r["principal"] for r in rows} == {"api_key_1"}


def test_prompt_text_is_stored_only_when_the_pod_opts_in(satchel_server) -> None:
    pod = POD.replace("name: models_pod", "name: models_pod\nruntime:\n  task_history:\n    captured_output: truncated")
    server = satchel_server(pod, files={"items.csv": ITEMS}, env={"UPSTREAM_KEY": "sk-x"})
    r = httpx.post(f"{server.http_url}/v1/chat/completions", timeout=30,
                   json={"model": "remote", "messages": [{"role": "user", "content": "opted-in question"}]})
    assert r.status_code == 502
    [row] = server.sql("SELECT query_text, prompt_hash FROM runtime.task_history WHERE task = 'chat'").json()
    assert "opted-in question" in row["query_text"] and len(row["prompt_hash"]) == 64


def test_an_openai_endpoint_with_credentials_never_shows_them() -> None:
    from engine.errors import ModelError
    from serving.llm.providers import OpenAIModel

    pod = load_pod_text("version: v1\nkind: Spicepod\nname: p\nmodels:\n  - from: openai:gpt\n    name: remote\n"
                        "    params:\n      endpoint: https://agent:${secrets:UP_KEY}@127.0.0.1:9/v1\n      timeout: 2\n",
                        env={"UP_KEY": "hunter2-s3cret"})
    model = OpenAIModel(pod.models[0], pod)
    assert "hunter2" not in json.dumps(model.info()) and "***" in model.info()["endpoint"]
    with pytest.raises(ModelError) as info:  # nothing listens on port 9
        model.chat({"messages": [{"role": "user", "content": "hi"}]})
    assert "hunter2" not in info.value.message and "cannot reach" in info.value.message


def test_tools_describe_columns_as_sql_writes_them(tmp_path: Path) -> None:
    """A model writing PostgreSQL SQL reads SQL types (`numeric(12,2)`, not `decimal128(12, 2)`), and
    the nsql prompt writes a name with capitals quoted, as the query must."""
    from connectors.sql_render import written_ident
    from serving.llm.data_tools import DataTools

    (tmp_path / "parcels.csv").write_text("parcel_id,shipTo,weight kg,sent_at\n1,Paris,1.25,2024-01-06T10:52:00Z\n")
    pod = load_pod_text("version: v1\nkind: Spicepod\nname: t\ndatasets:\n  - from: file:parcels.csv\n    name: Parcels\n",
                        file=str(tmp_path / "spicepod.yaml"))
    runtime = Runtime(pod, data_dir=str(tmp_path / ".satchel"))
    runtime.start()
    try:
        assert runtime.wait_ready(30)
        columns = DataTools(runtime).table_schema("parcels", Principal("t"))["columns"]
        assert [(c["name"], c["type"]) for c in columns] == [
            ("parcel_id", "bigint"), ("shipTo", "varchar"), ("weight kg", "double precision"),
            ("sent_at", "timestamp with time zone")]
        context = DataTools(runtime).schema_context(None, Principal("t"))
        assert 'TABLE "Parcels" (parcel_id bigint, "shipTo" varchar, "weight kg" double precision, ' \
               "sent_at timestamp with time zone)" in context
        # written as the prompt shows it, the query runs
        assert runtime.query(f'SELECT {written_ident("shipTo")}, {written_ident("weight kg")} FROM {written_ident("Parcels")}') \
            .read_all().to_pylist() == [{"shipTo": "Paris", "weight kg": 1.25}]
    finally:
        runtime.stop()
