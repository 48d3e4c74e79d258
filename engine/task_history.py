"""`runtime.task_history`: one row per query, refresh, model call or refused request,
queryable with SQL like any table.

A serving entry point wraps each request in `request_scope()`; every row recorded inside it is
counted there, so the entry point can tell whether a failed request still needs its row.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from .redact import redact
from .tracing import Span, new_span

log = logging.getLogger("satchel.task_history")
DESCRIPTION = "One row per query and refresh run by this sidecar."
SCHEMA = pa.schema([
    pa.field("task_id", pa.int64(), nullable=False),
    pa.field("task", pa.string(), metadata={b"description": b"query | refresh | chat | embeddings | tool | nsql | mcp | ai | model_worker | request (refused before it ran)"}),
    pa.field("protocol", pa.string(), metadata={b"description": b"flight | http | mcp | tool | internal"}),
    pa.field("principal", pa.string()),
    pa.field("query_text", pa.string(), metadata={b"description": b"SQL text (secrets redacted)"}),
    pa.field("datasets", pa.list_(pa.string()), metadata={b"description": b"Datasets the task touched"}),
    pa.field("served_by", pa.string(), metadata={b"description": b"accelerator | source | mixed | runtime | cache (a results-cache hit) | shared (an identical query running at the same time)"}),
    pa.field("started_at", pa.timestamp("us", "UTC")),
    pa.field("duration_ms", pa.float64()),
    pa.field("rows", pa.int64()),
    pa.field("truncated", pa.bool_()),
    pa.field("error", pa.string()),
    # model calls (chat, tool, nsql, mcp); null for queries and refreshes
    pa.field("model", pa.string(), metadata={b"description": b"Model name for model calls (chat, tool, nsql, ai, embeddings)"}),
    pa.field("input_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),
    pa.field("tool_calls", pa.list_(pa.string()), metadata={b"description": b"Tools the task called"}),
    pa.field("prompt_hash", pa.string(), metadata={b"description": b"sha256 of the prompt text"}),
    pa.field("error_code", pa.string(), metadata={b"description": b"The stable error code the client got"}),
    pa.field("trace_id", pa.string(), metadata={b"description": b"One per request: the rows of a chat, its tools and their queries share it"}),
    pa.field("span_id", pa.string(), metadata={b"description": b"This task's span (OpenTelemetry shape)"}),
    pa.field("parent_id", pa.string(), metadata={b"description": b"span_id of the task that started this one (null: the request itself)"}),
    pa.field("cost", pa.float64(), metadata={b"description": b"Model calls: tokens times the model's price_per_1k_input_tokens / price_per_1k_output_tokens"}),
    pa.field("ttft_ms", pa.float64(), metadata={b"description": b"Streamed chat: milliseconds to the first token"}),
])
MAX_TEXT = 16 * 1024
REMEMBERED_TEXT = 2048  # texts up to this long are redacted once (`_redacted_text`)
MAX_BYTES = 64 << 20  # the table's size at most (100,000 rows of long query texts would be 1.6 GiB)
FOLD_ROWS = 512  # recorded rows wait as Python objects until this many, then join the Arrow table
EXACT_BYTES_EVERY = 64  # folds


@dataclass
class Task:
    task: str
    protocol: str
    principal: str | None
    query_text: str
    datasets: list[str] = field(default_factory=list)
    served_by: str | None = None
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    duration_ms: float | None = None
    rows: int | None = None
    truncated: bool = False
    error: str | None = None
    error_code: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    tool_calls: list[str] | None = None
    prompt_hash: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_id: str | None = None
    cost: float | None = None
    ttft_ms: float | None = None

    def in_span(self, span: Span) -> "Task":
        """This task is `span` (the tasks it starts name it as their parent)."""
        self.trace_id, self.span_id, self.parent_id = span.trace_id, span.span_id, span.parent_id
        return self


def started_at(monotonic_start: float) -> dt.datetime:
    """The wall-clock time of a `time.monotonic()` reading: a task's start, for a row recorded
    when the task ends (pass it as `Task(started_at=...)`)."""
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=time.monotonic() - monotonic_start)


@dataclass
class RequestScope:
    """One request being served: when it started and how many rows it recorded so far."""

    started: float = field(default_factory=time.monotonic)
    rows: int = 0


_SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar("satchel_request", default=None)


def current_request() -> RequestScope | None:
    """The request being served in this context, if any."""
    return _SCOPE.get()


@contextlib.contextmanager
def request_scope() -> Iterator[RequestScope]:
    """Count the task-history rows recorded while serving one request (in this context and the
    threads it hands work to with a copied context); an enclosing request counts them too."""
    parent, scope = _SCOPE.get(), RequestScope()
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
        if parent is not None:
            parent.rows += scope.rows


class TaskHistory:
    """An in-memory Arrow table trimmed to the retention period (and hard row and byte caps),
    whether or not anyone reads it. Text and errors are redacted (pod secrets and
    credential-shaped values) on the way in."""

    def __init__(self, enabled: bool = True, retention: dt.timedelta = dt.timedelta(hours=8),
                 max_rows: int = 100_000, secrets: Iterable[str] = (), max_bytes: int = MAX_BYTES) -> None:
        self.enabled = enabled
        self.secrets = tuple(secrets)
        self.retention = retention
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: list[dict] = []
        self._table = SCHEMA.empty_table()
        self._bytes = 0  # the table's size: exact every EXACT_BYTES_EVERY folds, kept up in between
        self._folds = 0
        self._observers: list[Callable[[Task], None]] = []

    def observe(self, observer: Callable[[Task], None]) -> None:
        """Call `observer(task)` for every task recorded, in registration order, before its row
        is stored (model pricing fills `cost`; the OpenTelemetry export sends the span)."""
        self._observers.append(observer)

    def record(self, task: Task) -> None:
        scope = _SCOPE.get()
        if scope is not None:
            scope.rows += 1
        if task.span_id is None:  # a task recorded where it ran: a span under the current one
            task.in_span(new_span())
        task.query_text = _redacted_text(task.query_text or "", self.secrets)
        task.error = redact(task.error, self.secrets) if task.error else task.error
        for observer in self._observers:
            try:
                observer(task)
            except Exception:  # noqa: BLE001 - accounting never fails the task it accounts
                log.exception("task history observer failed")
        if not self.enabled:
            return
        row = dict(task.__dict__)
        row["task_id"] = next(self._ids)
        with self._lock:
            self._pending.append(row)
            if len(self._pending) >= FOLD_ROWS:  # rows wait as dicts (about 1 KiB each) only briefly
                self._fold_locked()

    def table(self) -> pa.Table:
        """The current history (also applies retention)."""
        with self._lock:
            self._fold_locked()
            return self._table

    def _fold_locked(self) -> None:
        """The pending rows into the table, then the table cut to the retention period, the row
        cap and the byte cap (oldest rows first)."""
        if self._pending:
            rows, self._pending = self._pending, []
            try:
                fresh = pa.Table.from_pylist(rows, schema=SCHEMA)
            except (pa.ArrowException, TypeError, ValueError):  # accounting never fails the queries it records
                fresh = pa.Table.from_pylist(_storable(rows), schema=SCHEMA)
            self._table = pa.concat_tables([self._table, fresh])  # chunks of FOLD_ROWS: cut without copying
            self._folds += 1
            # a table's nbytes walks every chunk (10 ms at the row cap): counted exactly now and then
            self._bytes = self._table.nbytes if self._folds % EXACT_BYTES_EVERY == 0 else self._bytes + fresh.nbytes
        cutoff = dt.datetime.now(dt.timezone.utc) - self.retention
        if self._table.num_rows and self._table["started_at"][0].as_py() < cutoff:
            self._table = self._table.filter(pc.greater_equal(self._table["started_at"],
                                                              pa.scalar(cutoff, SCHEMA.field("started_at").type)))
            self._bytes = self._table.nbytes
        rows = self._table.num_rows
        keep = self.max_rows
        if self._bytes > self.max_bytes:
            keep = min(keep, int(rows * self.max_bytes / self._bytes))
        if rows > keep:
            self._table = self._table.slice(rows - keep)
            self._bytes = self._bytes * keep // rows


def _storable(rows: list[dict]) -> list[dict]:
    """The rows that fit SCHEMA, each tried alone (only after a fold failed); the others are
    logged by task and field and dropped."""
    kept = []
    for row in rows:
        try:
            pa.Table.from_pylist([row], schema=SCHEMA)
        except (pa.ArrowException, TypeError, ValueError) as e:
            log.error("task history: a %s row could not be stored (%s); dropped", row.get("task"), type(e).__name__)
            continue
        kept.append(row)
    return kept


@functools.lru_cache(maxsize=1024)
def _redacted(text: str, secrets: tuple[str, ...]) -> str:
    return redact(text, secrets)


def _redacted_text(text: str, secrets: tuple[str, ...]) -> str:
    """A query's text for its row: redacted and cut to MAX_TEXT. Agents repeat their queries,
    and redacting runs seven expressions over the text: short texts are remembered."""
    text = text[:2 * MAX_TEXT]
    return (_redacted(text, secrets) if len(text) <= REMEMBERED_TEXT else redact(text, secrets))[:MAX_TEXT]
