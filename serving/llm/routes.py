"""OpenAI-compatible routes on the HTTP app: /v1/models, /v1/chat/completions (SSE streaming,
tools), /v1/embeddings, and /v1/nsql (natural language -> SQL -> result).

With `params.tools` on a model, the runtime runs the built-in data tools itself in a loop
bounded by rounds (`params.tool_recursion_limit`, default 5) and by the request's deadline
(`params.timeout`), and returns the final answer. A client that goes away cancels its
generation (a threading.Event passed down to the model worker). Every call is a
row in runtime.task_history (prompt stored as a sha256 unless
`runtime.task_history.captured_output: truncated`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from typing import Any, AsyncIterator, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from engine import tracing
from engine.errors import BadRequest, QueryTimeout, RequestCancelled, SatchelError
from engine.runtime import Principal, Runtime
from engine.task_history import Task
from engine.tracing import Span

from .data_tools import DataTools, openai_tools, selected_tools
from ..http.disconnect import until_disconnect
from .providers import BaseModel_, ModelRegistry, _as_chunks

DEFAULT_TOOL_RECURSION_LIMIT = 5
PROMPT_TEXT_MAX = 4096


class ModelCalls:
    """Chat with tools, embeddings and nsql over a ModelRegistry, each recorded in task history."""

    def __init__(self, runtime: Runtime, registry: ModelRegistry) -> None:
        self.runtime = runtime
        self.registry = registry
        self.tools = DataTools(runtime)
        self.capture_prompts = runtime.pod.runtime.task_history.captured_output == "truncated"

    # -- task history ------------------------------------------------------------------------
    def record(self, kind: str, protocol: str, principal: Principal, model: str | None, prompt: str,
               started: float, usage: dict | None = None, tool_calls: list[str] | None = None,
               error: BaseException | None = None, rows: int | None = None, truncated: bool = False,
               span: Span | None = None, ttft_ms: float | None = None) -> None:
        digest = hashlib.sha256(prompt.encode("utf-8", "replace")).hexdigest()
        text = prompt[:PROMPT_TEXT_MAX] if self.capture_prompts else f"sha256:{digest}"
        elapsed = time.monotonic() - started
        task = Task(kind, protocol, principal.name, text, model=model, prompt_hash=digest,
                    tool_calls=list(tool_calls or []), rows=rows, truncated=truncated,
                    started_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=elapsed), ttft_ms=ttft_ms)
        if span is not None:
            task.in_span(span)
        task.duration_ms = elapsed * 1000
        if usage:
            task.input_tokens = usage.get("prompt_tokens")
            task.output_tokens = usage.get("completion_tokens")
            if principal.policy is not None:  # the principal's model token budget
                principal.policy.gate.spend((task.input_tokens or 0) + (task.output_tokens or 0))
        if error is not None:
            task.error = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            task.error_code = getattr(error, "code", None) or "internal_error"
            self.runtime.metrics.query_failures.labels(protocol, task.error_code).inc()
        self.runtime.task_history.record(task)

    # -- chat ------------------------------------------------------------------------------
    def builtin_tools(self, model: BaseModel_) -> list[str]:
        return selected_tools(model.config.params.get("tools"))

    def chat(self, body: dict, principal: Principal, cancel: threading.Event | None = None) -> dict:
        """A full completion; built-in tool calls are executed here in a loop bounded by rounds and time."""
        model = self.registry.get(body.get("model"))
        request = _chat_request(body)
        started = time.monotonic()
        deadline = started + model.timeout
        called: list[str] = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        span = tracing.new_span()
        traced = tracing.enter(span)  # its tools' queries are its children
        try:
            builtin = self.builtin_tools(model)
            if builtin and request.get("tool_choice") != "none":
                client_names = {t["function"]["name"] for t in request.get("tools") or [] if "function" in t}
                request["tools"] = list(request.get("tools") or []) + openai_tools(
                    [n for n in builtin if n not in client_names])
            limit = int(model.config.params.get("tool_recursion_limit") or DEFAULT_TOOL_RECURSION_LIMIT)
            messages = list(request["messages"])
            for step in range(limit + 1):
                _check_budget(principal)
                if step == limit:  # out of tool budget: ask for a plain answer
                    request = {**request, "tool_choice": "none"}
                if step and time.monotonic() >= deadline:
                    raise QueryTimeout(f"model '{model.name}' did not finish within {model.timeout:g} s "
                                       f"(params.timeout) after {len(called)} tool call(s)")
                out = model.chat({**request, "messages": messages}, deadline, cancel)
                _add_usage(usage, out.get("usage"))
                msg = out["choices"][0]["message"]
                calls = msg.get("tool_calls") or []
                if not calls or not all(c["function"]["name"] in builtin for c in calls):
                    break  # a final answer, or a client tool the client must run
                messages.append({"role": "assistant", "content": msg.get("content"), "tool_calls": calls})
                for c in calls:
                    name = c["function"]["name"]
                    args = _args(c["function"].get("arguments"))
                    t0, tool_span = time.monotonic(), tracing.new_span(span)
                    with tracing.within(tool_span):
                        result = self.tools.call(name, args, principal, protocol="tool")
                    called.append(name)
                    self.record("tool", "http", principal, model.name, f"{name} {json.dumps(args)}", t0,
                                error=_ToolError(result["error"]) if isinstance(result, dict) and "error" in result
                                else None, truncated=bool(isinstance(result, dict) and result.get("truncated")),
                                span=tool_span)
                    messages.append({"role": "tool", "tool_call_id": c.get("id"), "name": name,
                                     "content": json.dumps(result, default=str)})
            out["usage"] = usage
            if called:
                out["satchel_tool_calls"] = called
            self.record("chat", "http", principal, model.name, _prompt_text(body), started, usage, called, span=span)
            return out
        except BaseException as e:
            self.record("chat", "http", principal, model.name, _prompt_text(body), started, usage, called, e,
                        span=span)
            raise
        finally:
            tracing.leave(traced)

    def chat_stream(self, body: dict, principal: Principal, cancel: threading.Event | None = None) -> Iterator[str]:
        """SSE lines `data: {chunk}` ... `data: [DONE]` in OpenAI's chunk format."""
        _check_budget(principal)
        model = self.registry.get(body.get("model"))
        model.check_ready()
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if self.builtin_tools(model) and body.get("tool_choice") != "none":
            out = self.chat({**body, "stream": False}, principal, cancel)  # tools run first; the answer streams
            chunks: Iterator[dict] = ({"id": out["id"], "object": "chat.completion.chunk", "created": out["created"],
                                       "model": out["model"], **c} for c in _as_chunks(out))
            return self._sse(chunks, include_usage, None, principal, body, already_recorded=True)
        request = _chat_request(body)
        started = time.monotonic()
        return self._sse(model.chat_stream(request, started + model.timeout, cancel), include_usage, model.name,
                         principal, body, started=started)

    def _sse(self, chunks: Iterator[dict], include_usage: bool, model: str | None, principal: Principal,
             body: dict, already_recorded: bool = False, started: float = 0.0) -> Iterator[str]:
        usage: dict | None = None
        error: BaseException | None = None
        sent = False
        ttft_ms: float | None = None
        try:
            for chunk in chunks:
                sent = True
                if ttft_ms is None and chunk.get("choices"):
                    ttft_ms = (time.monotonic() - started) * 1000
                if chunk.get("usage") and not chunk.get("choices"):
                    usage = chunk["usage"]
                    if include_usage:
                        yield f"data: {json.dumps(chunk)}\n\n"
                    continue
                chunk.pop("usage", None)
                if include_usage:
                    chunk["usage"] = None
                yield f"data: {json.dumps(chunk)}\n\n"
        except SatchelError as e:
            error = e
            if not sent:  # nothing sent yet: the route answers with the error's HTTP status
                raise
            yield f"data: {json.dumps({'error': {'code': e.code, 'message': e.message}})}\n\n"
        except GeneratorExit:  # the client went away mid-stream
            error = RequestCancelled("the client went away during the stream")
            raise
        finally:
            if not already_recorded:
                self.record("chat", "http", principal, model, _prompt_text(body), started, usage, error=error,
                            ttft_ms=ttft_ms)
        yield "data: [DONE]\n\n"

    # -- embeddings --------------------------------------------------------------------------
    def embeddings(self, body: dict, principal: Principal, cancel: threading.Event | None = None) -> dict:
        _check_budget(principal)
        name = body.get("model") or next(iter(sorted(self.registry.embedding_names)), None)
        model = self.registry.get(name)
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            raise BadRequest("input must be a string or a non-empty list of strings")
        started = time.monotonic()
        try:
            out = model.embed(inputs, started + model.timeout, cancel)
        except BaseException as e:
            self.record("embeddings", "http", principal, model.name, "\n".join(inputs), started, error=e)
            raise
        self.record("embeddings", "http", principal, model.name, "\n".join(inputs), started, out.get("usage"))
        return out

    # -- nsql ------------------------------------------------------------------------------
    def nsql(self, body: dict, principal: Principal, protocol: str = "http",
             cancel: threading.Event | None = None) -> dict:
        _check_budget(principal)
        question = body.get("query") or body.get("question")
        if not isinstance(question, str) or not question.strip():
            raise BadRequest('body must be {"query": "<question>"} (optionally "model", "datasets")')
        model = self.registry.get(body.get("model"))
        started = time.monotonic()
        usage: dict | None = None
        span = tracing.new_span()
        traced = tracing.enter(span)  # its query is its child
        try:
            context = self.tools.schema_context(body.get("datasets"), principal)
            request = {"messages": [
                {"role": "system", "content": "You write one read-only SQL query (PostgreSQL dialect) that answers "
                                              "the question using only these tables:\n" + context},
                {"role": "user", "content": question}],
                "temperature": 0, "max_tokens": int(body.get("max_tokens") or 256),
                "response_format": {"type": "json_schema", "json_schema": {"name": "sql", "schema": {
                    "type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]}}}}
            out = model.chat(request, started + model.timeout, cancel)
            usage = out.get("usage")
            text = out["choices"][0]["message"].get("content") or ""
            try:
                sql = json.loads(text)["sql"]
            except (ValueError, KeyError, TypeError):
                raise BadRequest(f"the model did not produce SQL: {text[:200]!r}") from None
            result = self.tools.sql(sql, principal, protocol="nsql")
        except BaseException as e:
            self.record("nsql", protocol, principal, model.name, question, started, usage, error=e, span=span)
            raise
        finally:
            tracing.leave(traced)
        self.record("nsql", protocol, principal, model.name, question, started, usage,
                    rows=result["row_count"], truncated=result["truncated"], span=span)
        return {"sql": sql, **result}


class _ToolError(Exception):
    """A data tool's error, handed back to the model (its message carries the tool's own code)."""

    code = "tool_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _chat_request(body: dict) -> dict:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise BadRequest("each message needs a role")
    rf = body.get("response_format")
    if rf is not None and not isinstance(rf, dict):
        raise BadRequest("response_format must be an object")
    keep = ("messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
            "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "user", "n", "stream_options")
    return {k: body[k] for k in keep if k in body and body[k] is not None}


def _args(text: Any) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _add_usage(total: dict, usage: dict | None) -> None:
    for k in total:
        total[k] += int((usage or {}).get(k) or 0)


def _prompt_text(body: dict) -> str:
    return json.dumps(body.get("messages"), default=str, sort_keys=True)


def create_router(runtime: Runtime, registry: ModelRegistry) -> APIRouter:
    router = APIRouter()
    calls = ModelCalls(runtime, registry)
    router.calls = calls  # type: ignore[attr-defined]

    async def _json(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the body must be JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    @router.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [
            {"id": m["name"], "object": "model", "created": int(registry.models[m["name"]].loaded_at or 0),
             "owned_by": "satchel", "status": m["status"], **({"error": m["error"]} if m["error"] else {})}
            for m in registry.status()]}

    @router.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _json(request)
        principal = request.state.principal
        if not body.get("stream"):
            return await until_disconnect(request, calls.chat, body, principal)
        cancel = threading.Event()
        try:
            lines = await run_in_threadpool(calls.chat_stream, body, principal, cancel)
            first = await run_in_threadpool(next, lines, None)  # errors before the first chunk get a status
        except BaseException:
            cancel.set()
            raise

        def rest() -> Iterator[str]:
            if first is not None:
                yield first
                yield from lines

        async def body_() -> AsyncIterator[str]:
            try:
                async for line in iterate_in_threadpool(rest()):
                    yield line
            finally:  # the client went away (or the stream ended): stop generating
                cancel.set()

        return StreamingResponse(body_(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await _json(request)
        return await until_disconnect(request, calls.embeddings, body, request.state.principal)

    @router.post("/v1/nsql")
    async def nsql(request: Request):
        body = await _json(request)
        return await until_disconnect(request, calls.nsql, body, request.state.principal, "http")

    return router


def _check_budget(principal: Principal) -> None:
    """A principal past its model token budget gets 429 before any model call."""
    if principal.policy is not None:
        principal.policy.gate.check_tokens()
