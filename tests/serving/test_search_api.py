"""`POST /v1/search` (Spice's request and response shape), the MCP `search` tool and the models'
`search` data tool, with the real all-MiniLM-L6-v2 over the review corpus: results checked
against the SQL vector_search they are built on, bounded, audited, under the caller's API key."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from tests.engine import search_corpus

pytestmark = [pytest.mark.llm, pytest.mark.integration]

POD = """
version: v1
kind: Spicepod
name: search_api
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${env:SATCHEL_TEST_API_KEY}"]
embeddings:
  - from: huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2
    name: minilm
datasets:
  - from: file:reviews.csv
    name: reviews
    description: Product reviews, one row each.
    columns:
      - name: body
        embeddings:
          - from: minilm
            chunking:
              enabled: true
              target_chunk_size: 6
              overlap_size: 1
        full_text_search:
          enabled: true
    acceleration:
      enabled: true
      engine: duckdb
      primary_key: review_id
  - from: file:reviews.csv
    name: reviews_arrow
    columns:
      - name: body
        embeddings:
          - from: minilm
    acceleration:
      enabled: true
      primary_key: review_id
  - from: file:topics.csv
    name: topics
"""
KEY = "search-test-key"


@pytest.fixture(scope="module")
def server(module_satchel_server):
    return module_satchel_server(POD, api_key=KEY, files={"reviews.csv": search_corpus.csv_text(),
                                                         "topics.csv": search_corpus.TOPICS_CSV}, timeout=120)


def _search(server, body: dict, key: str | None = KEY) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/search", json=body, headers={"X-API-Key": key} if key else {},
                      timeout=60)


def test_search_shape_and_answers(server) -> None:
    r = _search(server, {"text": "my package never arrived", "datasets": ["reviews_arrow"], "limit": 3,
                         "additional_columns": ["topic", "created_at"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"results", "duration_ms", "truncated"} and body["truncated"] is False
    sql = server.sql("SELECT review_id, _score FROM vector_search(reviews_arrow, 'my package never arrived', "
                     "limit => 3)").json()
    assert [x["primary_key"] for x in body["results"]] == [{"review_id": s["review_id"]} for s in sql]
    first = body["results"][0]
    assert set(first) == {"matches", "data", "primary_key", "score", "dataset"}
    assert first["dataset"] == "reviews_arrow" and first["data"]["topic"] == "delivery"
    assert set(first["data"]) == {"topic", "created_at"} and abs(first["score"] - sql[0]["_score"]) < 1e-6
    assert set(first["matches"]) == {"body"}


def test_search_every_dataset_chunks_where_and_keywords(server) -> None:
    both = _search(server, {"text": "deep bass headphones", "limit": 4}).json()["results"]
    assert {r["dataset"] for r in both} == {"reviews", "reviews_arrow"}
    assert [r["score"] for r in both] == sorted((r["score"] for r in both), reverse=True)
    chunked = [r for r in both if r["dataset"] == "reviews"][0]
    assert len(chunked["matches"]["body"].split()) <= 6  # the matching chunk, not the whole text
    filtered = _search(server, {"text": "deep bass headphones", "datasets": ["reviews"], "limit": 5,
                                "where": "topic <> 'audio'", "additional_columns": ["topic"]}).json()["results"]
    assert filtered and all(r["data"]["topic"] != "audio" for r in filtered)
    hybrid = _search(server, {"text": "it broke", "datasets": ["reviews"], "keywords": ["charger"],
                              "limit": 3}).json()["results"]
    assert "charger" in hybrid[0]["matches"]["body"].lower()


def test_search_errors_and_audit(server) -> None:
    cases = [({"text": ""}, 400, '"text"'), ({"text": "x", "limit": 1000}, 400, "1 to 100"),
             ({"text": "x", "datasets": ["topics"]}, 400, "no column with `embeddings`"),
             ({"text": "x", "datasets": ["nope"]}, 404, "unknown dataset 'nope'"),
             ({"text": "x", "where": "1=1) UNION SELECT 1 --"}, 400, "not one SQL condition"),
             ({"text": "x", "where": "review_id IN (SELECT 1)"}, 400, "no subqueries"),
             ({"text": "x", "additional_columns": ["nope"]}, 400, "not a column"),
             ({"text": "x", "datasets": ["reviews_arrow"], "keywords": ["x"]}, 400, "full_text_search"),
             ({"query": "x"}, 400, "unknown keys")]
    for body, status, text in cases:
        r = _search(server, body)
        assert r.status_code == status and text in r.json()["error"]["message"], (body, r.text)
    assert _search(server, {"text": "x"}, key=None).status_code == 401
    assert _search(server, {"text": "x"}, key="wrong").status_code == 401
    rows = httpx.post(f"{server.http_url}/v1/sql", headers={"X-API-Key": KEY}, content=(
        "SELECT task, protocol, principal, error_code FROM runtime.task_history WHERE query_text LIKE '%/v1/search%' "
        "OR query_text LIKE '%vector_search%'")).json()
    assert any(r["error_code"] == "bad_request" for r in rows)
    assert any(r["task"] == "query" and r["protocol"] == "http" and r["principal"] for r in rows)


def test_mcp_search_tool(server) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> None:
        http = httpx.AsyncClient(headers={"X-API-Key": KEY}, timeout=60)
        async with streamable_http_client(f"{server.http_url}/v1/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                tools = {t.name: t for t in (await session.list_tools()).tools}
                assert tools["search"].annotations.read_only_hint
                res = await session.call_tool("search", {"text": "non-stick frying pan", "datasets": ["reviews_arrow"],
                                                         "limit": 50})
                data = res.structured_content or json.loads(res.content[0].text)
                assert data["row_count"] == 10 and data["truncated"] is False  # limit capped at 10
                assert data["results"][0]["primary_key"] == {"review_id": 15}
                res = await session.call_tool("search", {"text": "x", "datasets": ["topics"]})
                assert res.is_error and "bad_request: " in res.content[0].text

    anyio.run(main)
    rows = server.sql("SELECT tool_calls, rows, error FROM runtime.task_history WHERE task = 'mcp'").json()
    assert any(r["tool_calls"] == ["search"] and r["rows"] == 10 for r in rows)
    assert any(r["tool_calls"] == ["search"] and r["error"] for r in rows)


def test_data_tool_search_is_bounded(tmp_path) -> None:
    """The models' `search` tool (in process: a Runtime with its model registry, as `satchel run` wires them)."""
    from engine.auth import Principal
    from engine.config import load_pod_text
    from engine.runtime import Runtime
    from serving.llm.data_tools import DataTools
    from serving.llm.providers import ModelRegistry

    (tmp_path / "reviews.csv").write_text(search_corpus.csv_text())
    (tmp_path / "topics.csv").write_text(search_corpus.TOPICS_CSV)
    pod = load_pod_text(POD.replace("${env:SATCHEL_TEST_API_KEY}", KEY), base_dir=str(tmp_path))
    runtime = Runtime(pod, data_dir=str(tmp_path / ".satchel"))
    models = ModelRegistry(pod, runtime.task_history, runtime.metrics, cache_dir=str(tmp_path / "models"))
    runtime.embedders.attach(models.embedder)
    models.start()
    runtime.start()
    try:
        assert runtime.wait_ready(120)
        tools = DataTools(runtime, max_bytes=700)
        out = tools.call("search", {"text": "running shoes", "limit": 8, "datasets": ["reviews_arrow"]},
                         Principal("tool-test"))
        assert out["truncated"] is True and 1 <= out["row_count"] < 8
        assert len(json.dumps(out["results"])) <= 700
        assert out["results"][0]["matches"]["body"].startswith("Comfortable running shoes")
        out = tools.call("search", {"text": "x", "datasets": ["topics"]}, Principal("tool-test"))
        assert "no column with `embeddings`" in out["error"]
    finally:
        models.stop()
        runtime.stop()


def test_search_embeddings_count_toward_a_principals_token_budget(satchel_server) -> None:
    """A principal granted a dataset whole may search it; the query's embedding call spends its
    model tokens, and past the budget the next search is 429 before any model call."""
    pod = POD.replace('      keys: ["${env:SATCHEL_TEST_API_KEY}"]\n',
                      '      keys: ["${env:SATCHEL_TEST_API_KEY}"]\n    principals:\n      - name: searcher\n'
                      '        keys: ["${env:SEARCHER_KEY}"]\n        datasets: [reviews]\n'
                      '        limits: {model_tokens_per_hour: 5}\n      - name: masked\n'
                      '        keys: ["${env:MASKED_KEY}"]\n        datasets:\n          - name: reviews\n'
                      '            columns: {body: hidden}\n', 1)
    server = satchel_server(pod, api_key=KEY, env={"SEARCHER_KEY": "k-searcher", "MASKED_KEY": "k-masked"}, timeout=120,
                            files={"reviews.csv": search_corpus.csv_text(), "topics.csv": search_corpus.TOPICS_CSV})
    sql = "SELECT review_id FROM vector_search(reviews, 'my package never arrived, what now', limit => 2)"

    def ask() -> httpx.Response:
        return httpx.post(f"{server.http_url}/v1/sql", content=sql, headers={"X-API-Key": "k-searcher"}, timeout=60)

    first = ask()
    assert first.status_code == 200 and len(first.json()) == 2, first.text
    refused = ask()  # the question alone is more than 5 tokens
    assert refused.status_code == 429 and "model tokens per hour" in refused.json()["error"]["message"]
    assert httpx.post(f"{server.http_url}/v1/sql", content=sql, headers={"X-API-Key": KEY}, timeout=60).status_code == 200
    # a principal with column rules on the dataset may not search it: the index holds every value
    masked = httpx.post(f"{server.http_url}/v1/sql", content=sql, headers={"X-API-Key": "k-masked"}, timeout=60)
    assert masked.status_code == 403 and "search over 'reviews'" in masked.json()["error"]["message"]


AWKWARD_POD = """
version: v1
kind: Spicepod
name: search_values
embeddings:
  - from: huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2
    name: minilm
datasets:
  - from: file:parts.parquet
    name: parts
    columns:
      - name: body
        embeddings:
          - from: minilm
    acceleration:
      enabled: true
      engine: duckdb
      primary_key: part_id
"""


def test_search_results_hold_any_value_as_the_sql_route_renders_it(satchel_server) -> None:
    """NaN, infinities, bytes that are not UTF-8, maps, timestamps inside structs: `/v1/search`
    (and the MCP tool, which shares its forms) answers strict JSON with each value as `/v1/sql`
    gives it (a NaN or a non-UTF-8 byte failed the response; a map came as a list of pairs)."""
    import datetime as dt
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    at = dt.datetime(2024, 1, 6, 10, 52, tzinfo=dt.timezone.utc)
    parts = pa.table({
        "part_id": [1, 2, 3],
        "body": ["a brass hinge for a garden gate", "a steel bolt", "a rubber washer"],
        "ratio": [float("nan"), float("inf"), 0.25],
        "raw": pa.array([b"\xff\x00\"x", None, b"ok"]),
        "stock": pa.array([[("depot", 3)], [], None], pa.map_(pa.string(), pa.int64())),
        "audit": pa.array([{"by": "ops", "at": at}, None, {"by": None, "at": None}],
                          pa.struct([("by", pa.string()), ("at", pa.timestamp("us", "UTC"))])),
    })
    sink = io.BytesIO()
    pq.write_table(parts, sink)
    server = satchel_server(AWKWARD_POD, files={"parts.parquet": sink.getvalue()}, timeout=120)
    columns = ["ratio", "raw", "stock", "audit"]
    r = httpx.post(f"{server.http_url}/v1/search", timeout=60,
                   json={"text": "gate hinge", "datasets": ["parts"], "limit": 3, "additional_columns": columns})
    assert r.status_code == 200, r.text

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant}")

    found = {row["primary_key"]["part_id"]: row["data"] for row in json.loads(r.text, parse_constant=refuse)["results"]}
    assert set(found) == {1, 2, 3}
    sql = server.sql(f"SELECT part_id, {', '.join(columns)} FROM parts ORDER BY part_id").json()
    assert {row.pop("part_id"): row for row in sql} == found
    assert found[1] == {"ratio": "NaN", "raw": '\\xFF\\x00\\x22x', "stock": {"depot": 3},
                        "audit": {"by": "ops", "at": "2024-01-06T10:52:00Z"}}
