"""The LLM call log: every model call (chat, tool, ai(), embeddings, search embeddings) is a
task-history row with trace and parent ids, principal, model, tokens, cost and, for streams, the
time to the first token; Prometheus counts tokens and cost per model and principal; the same
spans reach a real OTLP/HTTP exporter's receiver. Real Gemma GGUF and real MiniLM model."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.otlp_receiver import OtlpReceiverDouble

pytestmark = [pytest.mark.llm, pytest.mark.integration]

KEY = "admin-key"
ITEMS = "id,name\n" + "".join(f"{i},item{i}\n" for i in range(1, 6))
PRICE_IN, PRICE_OUT, PRICE_EMBED = 0.5, 2.0, 0.02


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiverDouble()
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(module_satchel_server, gguf, receiver):
    return module_satchel_server(f"""
version: v1
kind: Spicepod
name: calls
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${{env:SATCHEL_TEST_API_KEY}}"]
    principals:
      - name: alice
        keys: ["${{env:ALICE_KEY}}"]
        datasets: ["*"]
  tracing:
    otlp_endpoint: {receiver.url}
    service_name: satchel-test
  params:
    query_timeout: 5m
embeddings:
  - from: huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2
    name: minilm
    params:
      price_per_1k_input_tokens: {PRICE_EMBED}
datasets:
  - from: file:items.csv
    name: items
models:
  - from: file:{gguf}
    name: gemma
    params:
      chat_format: gemma
      n_ctx: 2048
      n_threads: 2
      max_tokens: 8
      temperature: 0
      price_per_1k_input_tokens: {PRICE_IN}
      price_per_1k_output_tokens: {PRICE_OUT}
  - from: file:{gguf}
    name: analyst
    params:
      chat_format: gemma
      n_ctx: 4096
      n_threads: 2
      max_tokens: 96
      temperature: 0
      tools: [list_datasets, sql]
      tool_recursion_limit: 1
""", files={"items.csv": ITEMS}, api_key=KEY, env={"ALICE_KEY": "k-alice"}, timeout=180)


def history(server, where: str) -> list[dict]:
    cols = ("task, principal, model, input_tokens, output_tokens, cost, ttft_ms, duration_ms, trace_id, span_id, "
            "parent_id, error, query_text, tool_calls")
    r = server.sql(f"SELECT {cols} FROM runtime.task_history WHERE {where} ORDER BY task_id")
    assert r.status_code == 200, r.text
    return r.json()


def alice(path: str, **kw) -> httpx.Response:
    return kw.pop("client", httpx).post(path, headers={"X-API-Key": "k-alice"}, timeout=300, **kw)


def test_ai_calls_are_children_of_their_query_with_tokens_and_cost(server, receiver) -> None:
    sql = "SELECT id, ai('Say one word about ' || name, 'gemma') AS w FROM items WHERE id <= 3 ORDER BY id"
    r = alice(f"{server.http_url}/v1/sql", content=sql)
    assert r.status_code == 200, r.text
    query = history(server, "task = 'query' AND query_text LIKE 'SELECT id, ai(%'")[-1]
    calls = history(server, f"task = 'ai' AND parent_id = '{query['span_id']}'")
    assert len(calls) == 3 and query["principal"] == "alice" and query["parent_id"] is None
    assert len(query["trace_id"]) == 32 and len(query["span_id"]) == 16
    for c in calls:
        assert c["trace_id"] == query["trace_id"] and c["principal"] == "alice" and c["model"] == "gemma"
        assert c["input_tokens"] > 0 and c["output_tokens"] > 0
        assert c["cost"] == pytest.approx((c["input_tokens"] * PRICE_IN + c["output_tokens"] * PRICE_OUT) / 1000)
    spans = receiver.wait_for({query["span_id"], *(c["span_id"] for c in calls)})
    assert len(spans) == 4
    root = spans[query["span_id"]]
    assert root.name == "query" and root.parent_id is None and root.trace_id == query["trace_id"]
    assert root.service_name == "satchel-test" and root.attributes["enduser.id"] == "alice"
    for c in calls:
        span = spans[c["span_id"]]
        assert span.name == "ai" and span.parent_id == query["span_id"] and span.trace_id == query["trace_id"]
        assert span.attributes["gen_ai.request.model"] == "gemma"
        assert span.attributes["gen_ai.usage.input_tokens"] == c["input_tokens"]
        assert span.attributes["satchel.cost"] == pytest.approx(c["cost"])
        assert root.start_ns <= span.start_ns and span.end_ns <= root.end_ns + 50_000_000


def test_a_chats_tools_and_their_queries_share_its_trace(server, receiver) -> None:
    r = alice(f"{server.http_url}/v1/chat/completions", json={
        "model": "analyst", "tool_choice": "required",
        "messages": [{"role": "user", "content": "How many items are there? Use the sql tool."}]})
    assert r.status_code == 200, r.text
    chat = history(server, "task = 'chat' AND model = 'analyst'")[-1]
    trace = history(server, f"trace_id = '{chat['trace_id']}'")
    tools = [t for t in trace if t["task"] == "tool"]
    assert chat["parent_id"] is None and chat["input_tokens"] > 0 and chat["cost"] == 0.0  # analyst: no price
    assert len(tools) == len(r.json()["satchel_tool_calls"]) >= 1
    assert all(t["parent_id"] == chat["span_id"] for t in tools)
    # a query a tool ran is that tool's child
    tool_spans = {t["span_id"] for t in tools}
    queries = [t for t in trace if t["task"] == "query"]
    assert all(q["parent_id"] in tool_spans for q in queries)
    if "sql" in r.json()["satchel_tool_calls"]:
        assert queries, trace
    spans = receiver.wait_for({t["span_id"] for t in trace})
    assert {s.span_id for s in spans.values()} == {t["span_id"] for t in trace}
    assert all(s.trace_id == chat["trace_id"] for s in spans.values())


def test_a_stream_records_its_time_to_first_token(server) -> None:
    with httpx.stream("POST", f"{server.http_url}/v1/chat/completions", headers={"X-API-Key": "k-alice"}, timeout=300,
                      json={"model": "gemma", "stream": True,
                            "messages": [{"role": "user", "content": "Count: one, two,"}]}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and any('"content"' in line for line in lines)
    row = history(server, "task = 'chat' AND model = 'gemma'")[-1]
    assert row["principal"] == "alice" and row["ttft_ms"] is not None
    assert 0 < row["ttft_ms"] <= row["duration_ms"]


def test_embeddings_are_priced_and_counted_per_model_and_principal(server) -> None:
    r = alice(f"{server.http_url}/v1/embeddings", json={"model": "minilm", "input": ["one small text", "another"]})
    assert r.status_code == 200, r.text
    row = history(server, "task = 'embeddings' AND model = 'minilm' AND principal = 'alice'")[-1]
    assert row["input_tokens"] == r.json()["usage"]["prompt_tokens"] > 0
    assert row["cost"] == pytest.approx(row["input_tokens"] * PRICE_EMBED / 1000)
    assert row["query_text"].startswith("sha256:") and "small text" not in json.dumps(row)

    samples = {}
    for family in text_string_to_metric_families(httpx.get(server.metrics_url, timeout=10).text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    rows = history(server, "principal = 'alice' AND model IS NOT NULL")
    for model in ("gemma", "minilm"):
        mine = [x for x in rows if x["model"] == model]
        tokens_in = sum(x["input_tokens"] or 0 for x in mine)
        cost = sum(x["cost"] or 0 for x in mine)
        key = (("direction", "input"), ("model", model), ("principal", "alice"))
        assert samples[("satchel_model_tokens_total", key)] == tokens_in
        assert samples[("satchel_model_cost_total", (("model", model), ("principal", "alice")))] == pytest.approx(cost)
    assert KEY not in httpx.get(server.metrics_url, timeout=10).text and "k-alice" not in str(samples)


def test_prices_are_checked_when_the_pod_loads(tmp_path) -> None:
    from engine.config import load_pod
    from engine.errors import ConfigError

    pod = tmp_path / "spicepod.yaml"
    pod.write_text("version: v1\nkind: Spicepod\nname: p\nmodels:\n  - from: openai:gpt-4o\n    name: m\n"
                   "    params:\n      price_per_1k_input_tokens: cheap\n")
    with pytest.raises(ConfigError) as e:
        load_pod(pod)
    text = str(e.value)
    assert "spicepod.yaml:7:" in text and "params.price_per_1k_input_tokens must be a number" in text
    pod.write_text("version: v1\nkind: Spicepod\nname: p\nruntime:\n  tracing:\n    otlp_endpoint: collector:4318\n")
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        load_pod(pod)


def test_chat_is_not_starved_by_a_running_ai_query(server) -> None:
    """ai() sends one call at a time to the model's FIFO queue, so a chat that arrives meanwhile
    waits for at most the call in progress, not for the whole statement."""
    import threading
    import time

    rows = "".join(f"SELECT {i} AS i UNION ALL " for i in range(1, 20)) + "SELECT 20 AS i"
    sql = f"SELECT i, ai('Name a colour number ' || CAST(i AS VARCHAR), 'gemma') AS c FROM ({rows}) t ORDER BY i"
    done: dict[str, float] = {}

    def run_query() -> None:
        r = alice(f"{server.http_url}/v1/sql", content=sql)
        assert r.status_code == 200, r.text
        done["query"] = time.monotonic()

    worker = threading.Thread(target=run_query)
    worker.start()
    deadline = time.monotonic() + 120
    while not history(server, "task = 'ai' AND query_text LIKE '%Name a colour number%'") \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    r = alice(f"{server.http_url}/v1/chat/completions",
              json={"model": "gemma", "messages": [{"role": "user", "content": "Hello"}]})
    done["chat"] = time.monotonic()
    worker.join(300)
    assert r.status_code == 200, r.text
    calls = history(server, "task = 'ai' AND query_text LIKE '%Name a colour number%'")
    assert len(calls) == 20 and done["chat"] < done["query"]

