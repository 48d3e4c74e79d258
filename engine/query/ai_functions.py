"""Models inside SQL: `ai(prompt [, model])`, `ai_classify(text, labels [, model])` and
`ai_extract(text, fields [, model])`, in the outermost SELECT list over any dataset.

Planning replaces each call by the prompt it sends (plain SQL, so it runs on every route); the
result stream then asks the model once per distinct prompt, batch by batch, and puts the
answers in the call's column (VARCHAR). Bounded: at most `MAX_ROWS` rows per statement (more is
a clear error before any model call past it), the query's deadline and cancellation reach every
call, calls queue with chat on the model's own queue, and each call is one task-history row
(task `ai`, the principal, model, tokens, the query's text) counted against the principal's model
token budget. Models run in the serving layer; the engine reaches them through `ChatModels`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from ..errors import ModelUnavailable, QueryTimeout, RequestCancelled, SqlError
from ..task_history import Task, TaskHistory
from ..tracing import Span, new_span
from .policy import Gate

FUNCTIONS = ("ai", "ai_classify", "ai_extract")
MAX_ROWS = 100  # rows one statement may send to a model


class ChatModel(Protocol):
    name: str

    def chat(self, request: dict, deadline: float | None = None, cancel: threading.Event | None = None) -> dict: ...


ChatLookup = Callable[[str | None], ChatModel]
"""model name (None: the pod's first chat model) -> the model; raises for unknown names."""


@dataclass(frozen=True)
class AiCall:
    column: int  # position in the outermost SELECT list
    kind: str
    model: str | None
    labels: tuple[str, ...] = ()


def _call(node: exp.Expression) -> tuple[str, list[exp.Expression]]:
    """(function name, arguments) of an ai call (sqlglot parses some into typed nodes, such as
    AIClassify), else ("", [])."""
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        return (name, list(node.expressions)) if name in FUNCTIONS else ("", [])
    if isinstance(node, exp.Func) and node.sql_name().lower() in FUNCTIONS:
        args = []
        for key in node.arg_types:
            value = node.args.get(key)
            args += value if isinstance(value, list) else [value] if value is not None else []
        return node.sql_name().lower(), args
    return "", []


def has_ai(tree: exp.Expression) -> bool:
    return any(_call(n)[0] for n in tree.find_all(exp.Func))


def _constant_text(node: exp.Expression, what: str) -> str:
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
    raise SqlError(f"{what} must be a string literal, got {node.sql()}")


def _labels(node: exp.Expression) -> tuple[str, ...]:
    if isinstance(node, exp.Array):
        return tuple(_constant_text(e, "ai_classify labels") for e in node.expressions)
    return tuple(p.strip() for p in _constant_text(node, "ai_classify labels").split(",") if p.strip())


def _text(node: exp.Expression) -> exp.Expression:
    return exp.Cast(this=node, to=exp.DataType.build("VARCHAR"))


def _concat(*parts: exp.Expression) -> exp.Expression:
    out = parts[0]
    for p in parts[1:]:
        out = exp.DPipe(this=out, expression=p)
    return out


def extract(tree: exp.Expression) -> tuple[exp.Expression, list[AiCall]]:
    """`tree` with each ai call of the outermost SELECT list replaced by its prompt; the calls."""
    calls: list[AiCall] = []
    select = tree if isinstance(tree, exp.Select) else None
    if select is not None:
        for i, proj in enumerate(select.expressions):
            node = proj.this if isinstance(proj, exp.Alias) else proj
            kind, args = _call(node)
            if not kind:
                continue
            if kind == "ai":
                if not 1 <= len(args) <= 2:
                    raise SqlError("ai(prompt [, model]) takes a prompt and optionally a model name")
                model = _constant_text(args[1], "ai()'s model") if len(args) == 2 else None
                prompt, labels = _text(args[0]), ()
            else:
                if not 2 <= len(args) <= 3:
                    raise SqlError(f"{kind}(text, {'labels' if kind == 'ai_classify' else 'fields'} [, model])")
                model = _constant_text(args[2], f"{kind}'s model") if len(args) == 3 else None
                if kind == "ai_classify":
                    labels = _labels(args[1])
                    if not labels:
                        raise SqlError("ai_classify needs at least one label")
                    prompt = _concat(exp.Literal.string(
                        f"Classify the text into exactly one of these labels: {', '.join(labels)}. "
                        "Answer with the label only.\nText: "), _text(args[0]), exp.Literal.string("\nLabel:"))
                else:
                    fields = _constant_text(args[1], "ai_extract fields")
                    labels = ()
                    prompt = _concat(exp.Literal.string(
                        f"Extract these fields from the text as one JSON object: {fields}. Answer with JSON only."
                        "\nText: "), _text(args[0]), exp.Literal.string("\nJSON:"))
            alias = proj.alias if isinstance(proj, exp.Alias) else kind
            proj.replace(exp.alias_(prompt, alias, quoted=True))
            calls.append(AiCall(i, kind, model, labels))
    if has_ai(tree):
        raise SqlError("ai(), ai_classify() and ai_extract() may appear only as columns of the outermost SELECT "
                       "list (not in WHERE, ORDER BY, subqueries or set operations)")
    return tree, calls


class AiFunctions:
    """Runs the model calls of a query's ai columns (empty until serving attaches the models)."""

    def __init__(self, history: TaskHistory, max_rows: int = MAX_ROWS) -> None:
        self.history = history
        self.max_rows = max_rows
        self._lookup: ChatLookup | None = None

    def attach(self, lookup: ChatLookup) -> None:
        self._lookup = lookup

    def model(self, name: str | None) -> ChatModel:
        if self._lookup is None:
            raise ModelUnavailable("ai(): no models are running here (models are served by `satchel run`)")
        return self._lookup(name)

    def apply(self, reader: pa.RecordBatchReader, calls: list[AiCall], *, sql: str, principal: str, protocol: str,
              deadline: float | None, cancelled: Callable[[], bool], gate: Gate | None = None,
              span: Span | None = None) -> pa.RecordBatchReader:
        """`reader` with each ai column's prompts replaced by the model's answers."""
        models = {c.column: self.model(c.model) for c in calls}  # unknown models fail before any row
        schema = reader.schema
        for c in calls:
            schema = schema.set(c.column, pa.field(schema.field(c.column).name, pa.string()))
        cancel = threading.Event()

        def batches() -> Iterator[pa.RecordBatch]:
            held, rows = [], 0
            for batch in reader:  # at most max_rows rows: counted before the first model call
                rows += batch.num_rows
                if rows > self.max_rows:
                    raise SqlError(f"ai(): at most {self.max_rows} rows per statement go to a model; this one has "
                                   f"more (add a LIMIT, or filter first)")
                held.append(batch)
            for batch in held:
                columns = list(batch.columns)
                for c in calls:
                    prompts = columns[c.column]
                    distinct = pc.unique(prompts).drop_null()
                    answers = []
                    for prompt in distinct.to_pylist():  # one model call per distinct prompt
                        if cancelled():
                            cancel.set()
                            raise RequestCancelled("the query was cancelled; its model calls stopped")
                        answers.append(self._ask(models[c.column], c, prompt, sql, principal, protocol,
                                                 deadline, cancel, gate, span))
                    columns[c.column] = pc.take(pa.array(answers, pa.string()),
                                                pc.index_in(prompts, value_set=distinct))
                yield pa.RecordBatch.from_arrays(columns, schema=schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def _ask(self, model: ChatModel, call: AiCall, prompt: str, sql: str, principal: str, protocol: str,
             deadline: float | None, cancel: threading.Event, gate: Gate | None,
             span: Span | None) -> str | None:
        if deadline is not None and time.monotonic() >= deadline:
            raise QueryTimeout("the query's deadline passed during its ai() calls")
        if gate is not None:
            gate.check_tokens()
        started = time.monotonic()
        task = Task("ai", protocol, principal, sql, model=model.name, tool_calls=[call.kind],
                    prompt_hash=hashlib.sha256(prompt.encode()).hexdigest()).in_span(new_span(span))
        try:
            # the model's own params (max_tokens, temperature, ...) apply, as for chat
            out = model.chat({"messages": [{"role": "user", "content": prompt}]}, deadline, cancel)
            usage = out.get("usage") or {}
            task.input_tokens, task.output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if gate is not None:
                gate.spend((task.input_tokens or 0) + (task.output_tokens or 0))
            answer = (out["choices"][0]["message"].get("content") or "").strip()
        except Exception as e:
            task.error = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            task.error_code = getattr(e, "code", None) or "internal_error"
            raise
        finally:
            task.duration_ms = (time.monotonic() - started) * 1000
            self.history.record(task)
        if call.kind == "ai_classify":
            lowered = answer.lower()
            return next((label for label in call.labels if label.lower() in lowered), None)
        return answer
