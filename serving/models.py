"""Model providers for the OpenAI-compatible routes.

* `file:<path>.gguf` -> LocalModel: llama-cpp-python, one worker thread per model that runs
  requests one at a time in arrival order (FIFO = fair), behind a bounded queue.
* `openai:<model>` -> OpenAIModel: forwards to any OpenAI-compatible endpoint.

Loading happens in a background thread; a model that fails to load is `error` with its message
and never affects the data side. Every response is an OpenAI-shaped dict (or chunk dicts).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any, Callable, Iterator

import httpx

from engine.config import Model, Pod
from engine.errors import BadRequest, ModelError, ModelUnavailable, Overloaded

log = logging.getLogger("satchel.models")

DEFAULT_QUEUE_SIZE = 16
_DONE = object()


def _param(model: Model, key: str, default: Any = None, cast: Callable[[Any], Any] = str) -> Any:
    value = model.params.get(key)
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise BadRequest(f"model '{model.name}': params.{key} must be {cast.__name__}, got {value!r}") from None


def _bool(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


class ModelQueue:
    """One worker thread running jobs in arrival order, with at most `size` waiting."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self._jobs: queue.Queue = queue.Queue(maxsize=size)
        self._thread = threading.Thread(target=self._work, name=f"satchel-model-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        try:
            self._jobs.put_nowait((fn, fut))
        except queue.Full:
            raise Overloaded(f"model '{self.name}' is busy: its request queue is full; retry later") from None
        return fut

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def _work(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # delivered to the caller, never kills the worker
                fut.set_exception(e)


class BaseModel_:
    provider = ""

    def __init__(self, config: Model, pod: Pod) -> None:
        self.config = config
        self.name = config.name
        self.status = "loading"
        self.error: str | None = None
        self.loaded_at: float | None = None

    def info(self) -> dict:
        return {"name": self.name, "provider": self.provider, "status": self.status, "error": self.error}

    def start(self) -> None:
        threading.Thread(target=self._load_guarded, name=f"satchel-load-{self.name}", daemon=True).start()

    def _load_guarded(self) -> None:
        try:
            self.load()
            self.status, self.loaded_at = "ready", time.time()
            log.info("model %s ready", self.name)
        except BaseException as e:  # a broken model never takes the runtime down
            self.status, self.error = "error", f"failed to load: {e}"
            log.error("model %s: %s", self.name, self.error)

    def load(self) -> None:  # pragma: no cover - overridden
        pass

    def check_ready(self) -> None:
        if self.status == "loading":
            raise ModelUnavailable(f"model '{self.name}' is still loading")
        if self.status != "ready":
            raise ModelUnavailable(f"model '{self.name}' is unavailable: {self.error}")

    # the OpenAI operations; `request` is the chat body with defaults applied
    def chat(self, request: dict) -> dict:
        raise NotImplementedError

    def chat_stream(self, request: dict) -> Iterator[dict]:
        raise NotImplementedError

    def embed(self, inputs: list[str]) -> dict:
        raise NotImplementedError


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


class LocalModel(BaseModel_):
    """A GGUF model run in-process by llama-cpp-python."""

    provider = "file"

    def __init__(self, config: Model, pod: Pod) -> None:
        super().__init__(config, pod)
        path = config.path
        self.path = path if os.path.isabs(path) else os.path.join(pod.base_dir, path)
        self.n_ctx = _param(config, "n_ctx", 2048, int)
        self.n_threads = _param(config, "n_threads", max(1, (os.cpu_count() or 2)), int)
        self.chat_format = _param(config, "chat_format", None)
        self.temperature = _param(config, "temperature", None, float)
        self.max_tokens = _param(config, "max_tokens", 256, int)
        self.system_prompt = _param(config, "system_prompt", None)
        self.queue = ModelQueue(config.name, _param(config, "queue_size", DEFAULT_QUEUE_SIZE, int))
        self._llm: Any = None
        self._embedder: Any = None

    def info(self) -> dict:
        return {**super().info(), "path": self.config.path, "queued": self.queue.waiting}

    def load(self) -> None:
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"model file {self.config.path} not found")
        try:
            import llama_cpp
        except ImportError:
            raise RuntimeError("llama-cpp-python is not installed; install satchel[llm]") from None
        self._llm = llama_cpp.Llama(model_path=self.path, n_ctx=self.n_ctx, n_threads=self.n_threads,
                                    chat_format=self.chat_format, verbose=False)

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

    def _run_chat(self, request: dict) -> dict:
        kw = self._kwargs(request)
        tools = request.get("tools") or []
        choice = request.get("tool_choice", "auto")
        if tools and choice != "none":
            return self._tool_chat(request, kw, tools, choice)
        if request.get("seed") is not None:
            self._llm.set_seed(int(request["seed"]))
        out = self._llm.create_chat_completion(**kw)
        return out

    def _tool_chat(self, request: dict, kw: dict, tools: list[dict], choice: Any) -> dict:
        """Tool calling for any local model: the output is grammar-constrained to
        {"tool": <name>, "arguments": {...}} or {"answer": "..."}, so it is never malformed."""
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
        kw = dict(kw)
        kw["messages"] = self._fold(_with_system(kw["messages"], guide))
        kw["response_format"] = {"type": "json_object", "schema": _safe_schema(schema)}
        if request.get("seed") is not None:
            self._llm.set_seed(int(request["seed"]))
        out = self._llm.create_chat_completion(**kw)
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
        return out

    def chat(self, request: dict) -> dict:
        self.check_ready()
        out = self.queue.submit(lambda: self._run_chat(request)).result()
        out["id"], out["model"] = _completion_id(), self.name
        return out

    def chat_stream(self, request: dict) -> Iterator[dict]:
        """Chunks in OpenAI's format; generation runs on the model's worker in turn."""
        self.check_ready()
        chunks: queue.Queue = queue.Queue()
        cid, created = _completion_id(), int(time.time())

        def job() -> None:
            try:
                if request.get("tools") and request.get("tool_choice", "auto") != "none":
                    out = self._run_chat(request)
                    for c in _as_chunks(out):
                        chunks.put(c)
                else:
                    kw = self._kwargs(request)
                    if request.get("seed") is not None:
                        self._llm.set_seed(int(request["seed"]))
                    text = []
                    finish = None
                    for c in self._llm.create_chat_completion(stream=True, **kw):
                        delta = c["choices"][0].get("delta") or {}
                        if delta.get("content"):
                            text.append(delta["content"])
                        finish = c["choices"][0].get("finish_reason") or finish
                        chunks.put({"choices": c["choices"]})
                    completion = len(self._llm.tokenize("".join(text).encode(), add_bos=False, special=True)) if text else 0
                    prompt = max(0, int(self._llm.n_tokens) - completion)
                    chunks.put({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                         "total_tokens": prompt + completion}})
            except BaseException as e:
                chunks.put(e)
            finally:
                chunks.put(_DONE)

        self.queue.submit(job)
        while True:
            item = chunks.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise ModelError(f"model '{self.name}' failed: {item}")
            yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.name, **item}

    # -- embeddings ------------------------------------------------------------------------
    def embed(self, inputs: list[str]) -> dict:
        self.check_ready()

        def job() -> dict:
            if self._embedder is None:
                import llama_cpp

                self._embedder = llama_cpp.Llama(model_path=self.path, n_ctx=self.n_ctx, n_threads=self.n_threads,
                                                 embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                                                 verbose=False)
            return self._embedder.create_embedding(inputs)

        out = self.queue.submit(job).result()
        out["model"] = self.name
        return out


class OpenAIModel(BaseModel_):
    """Forwards to an OpenAI-compatible endpoint (params.endpoint, params.openai_api_key)."""

    provider = "openai"

    def __init__(self, config: Model, pod: Pod) -> None:
        super().__init__(config, pod)
        self.upstream = config.path
        self.endpoint = _param(config, "endpoint", "https://api.openai.com/v1").rstrip("/")
        key = config.params.get("openai_api_key")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = _param(config, "timeout", 120.0, float)
        self.secrets = pod.secret_values

    def info(self) -> dict:
        return {**super().info(), "upstream": self.upstream, "endpoint": self.endpoint}

    def load(self) -> None:
        pass  # nothing to load; failures surface per request as 502

    def _post(self, path: str, body: dict) -> dict:
        try:
            resp = httpx.post(f"{self.endpoint}{path}", json=body, headers=self._headers, timeout=self.timeout)
        except httpx.HTTPError as e:
            raise ModelError(f"model '{self.name}': cannot reach {self.endpoint}: {type(e).__name__}") from None
        if resp.status_code >= 400:
            raise ModelError(f"model '{self.name}': upstream answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def chat(self, request: dict) -> dict:
        self.check_ready()
        body = {k: v for k, v in request.items() if k != "stream_options"}
        out = self._post("/chat/completions", {**body, "model": self.upstream, "stream": False})
        out["model"] = self.name
        return out

    def chat_stream(self, request: dict) -> Iterator[dict]:
        self.check_ready()
        body = {**request, "model": self.upstream, "stream": True}
        try:
            with httpx.stream("POST", f"{self.endpoint}/chat/completions", json=body, headers=self._headers,
                              timeout=self.timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ModelError(f"model '{self.name}': upstream answered {resp.status_code}: {resp.text[:300]}")
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    chunk["model"] = self.name
                    yield chunk
        except httpx.HTTPError as e:
            raise ModelError(f"model '{self.name}': cannot reach {self.endpoint}: {type(e).__name__}") from None

    def embed(self, inputs: list[str]) -> dict:
        self.check_ready()
        out = self._post("/embeddings", {"model": self.upstream, "input": inputs})
        out["model"] = self.name
        return out


class ModelRegistry:
    """The pod's models, loaded in the background at start()."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.models: dict[str, BaseModel_] = {}
        for m in pod.models:
            cls = LocalModel if m.provider == "file" else OpenAIModel
            try:
                self.models[m.name] = cls(m, pod)
            except Exception as e:  # a bad param makes this model unavailable, nothing else
                broken = BaseModel_(m, pod)
                broken.provider, broken.status, broken.error = m.provider, "error", str(e)
                self.models[m.name] = broken

    def start(self) -> None:
        for m in self.models.values():
            if m.status == "loading":
                m.start()

    def loading(self) -> list[str]:
        return [m.name for m in self.models.values() if m.status == "loading"]

    def get(self, name: str | None) -> BaseModel_:
        if not self.models:
            raise ModelUnavailable("this pod serves no models (add a `models:` entry to spicepod.yaml)")
        if name is None or name == "":
            return next(iter(self.models.values()))
        model = self.models.get(name)
        if model is None:
            from engine.errors import NotFound

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
