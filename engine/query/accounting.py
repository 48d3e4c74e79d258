"""Accounting of queries: every one (refused ones included) is one task-history row and metrics
under the error code the client saw; errors leave as SatchelErrors without secrets."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Callable, Iterator

import pyarrow as pa

from ..errors import InternalError, QueryTimeout, RequestCancelled, ResourceExhausted, SatchelError, SqlError
from ..memory import resource_exhausted_text
from ..metrics import Metrics
from ..redact import hide_paths, redact
from ..task_history import Task, TaskHistory, started_at


class Accounting:
    def __init__(self, metrics: Metrics, task_history: TaskHistory, secrets: frozenset[str], memory_budget: int) -> None:
        self.metrics = metrics
        self.task_history = task_history
        self.secrets = secrets
        self.memory_budget = memory_budget
        self._children: dict[tuple, object] = {}  # see _labelled

    def accounted(self, reader: pa.RecordBatchReader, task: Task, started: float, deadline: float | None,
                  max_rows: int | None, timeout_text: str, sanitize: Callable[[SatchelError], str] | None = None,
                  finished: Callable[[], None] | None = None) -> pa.RecordBatchReader:
        """`reader`, cut at `max_rows` and at the deadline; its row ends up in task history when
        the stream ends, fails or is dropped. `finished()` runs once when the stream ends, fails,
        is dropped or is collected unread."""
        release = _once(finished)

        def batches() -> Iterator[pa.RecordBatch]:
            rows = nbytes = 0
            error: BaseException | None = None
            try:
                for batch in reader:
                    if deadline and time.monotonic() > deadline:
                        raise QueryTimeout(f"query exceeded the runtime query_timeout of {timeout_text}")
                    if max_rows is not None and rows + batch.num_rows > max_rows:
                        batch = batch.slice(0, max_rows - rows)
                        task.truncated = True
                    rows += batch.num_rows
                    nbytes += batch.nbytes
                    yield batch
                    if task.truncated:
                        break
            except GeneratorExit:  # dropped before its end: the client left or the response failed
                error = RequestCancelled("the result was not read to its end (the client went away or the "
                                         "response failed)")
                raise
            except Exception as e:
                error = self.public_error(e, sanitize)
                raise error from None
            finally:
                release()
                self._labelled(self.metrics.query_rows, task.protocol).inc(rows)
                self._labelled(self.metrics.query_bytes, task.protocol).inc(nbytes)
                self.finish(task, started, rows, error)

        stream = batches()
        weakref.finalize(stream, release)  # a stream never read still gives its slot back
        return pa.RecordBatchReader.from_batches(reader.schema, stream)

    def refused(self, error: BaseException, *, protocol: str, principal: str | None, text: str,
                started: float, task: str = "request") -> SatchelError:
        """Account a request refused before it ran (auth, parsing, planning, a bad protocol
        message): one task-history row and one failure metric under the code the client gets,
        which is returned."""
        public = self.public_error(error)
        row = Task(task, protocol, principal, text, started_at=started_at(started))
        self.finish(row, started, 0, public)
        return public

    def finish(self, task: Task, started: float, rows: int, error: SatchelError | None) -> None:
        elapsed = time.monotonic() - started
        task.duration_ms = elapsed * 1000
        task.rows = rows
        if error is not None:
            task.error, task.error_code = error.message, error.code
            self._labelled(self.metrics.query_failures, task.protocol, error.code).inc()
        self._labelled(self.metrics.queries, task.protocol, task.served_by or "none").inc()
        self._labelled(self.metrics.query_duration, task.protocol).observe(elapsed)
        self.task_history.record(task)

    def _labelled(self, metric, *values: str):
        """`metric.labels(*values)`, remembered (labels() checks and locks on every call; a
        query accounts four). Label values come from small fixed sets: protocols, routes, codes."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def public_error(self, e: BaseException, sanitize: Callable[[SatchelError], str] | None = None) -> SatchelError:
        """Every failure leaves as a SatchelError with a clear, secret-free message (and, for a
        principal with a policy, without the values an engine quotes: `sanitize`)."""
        public = self._public_error(e)
        public.message = hide_paths(public.message)
        if sanitize is not None:
            public.message = sanitize(public)
        return public

    def _public_error(self, e: BaseException) -> SatchelError:
        if isinstance(e, SatchelError):
            e.message = redact(e.message, self.secrets)
            return e
        if resource_exhausted_text(e):
            return ResourceExhausted(f"the query needs more memory than its budget ({self.memory_budget >> 20} MiB "
                                     f"from runtime.params.memory_limit or the container's limit)")
        if isinstance(e, _PROGRAMMING_ERRORS) and not isinstance(e, pa.ArrowException):  # a bug here, not an engine's word
            log.error("internal error running a query", exc_info=e)
            return InternalError("internal error while running the query; see the server log")
        text = redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, self.secrets)
        return SqlError(f"query failed: {text}")


log = logging.getLogger(__name__)
# Python's own errors: "query failed: 'from'" (a KeyError) told the client nothing
_PROGRAMMING_ERRORS = (KeyError, AttributeError, TypeError, IndexError, NameError, AssertionError)


def _once(fn: Callable[[], None] | None) -> Callable[[], None]:
    """`fn` made safe to call any number of times from any thread (it runs at most once)."""
    lock, done = threading.Lock(), [fn is None]

    def call() -> None:
        with lock:
            if done[0]:
                return
            done[0] = True
        fn()

    return call
