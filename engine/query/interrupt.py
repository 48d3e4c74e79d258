"""Stops a DataFusion query inside an operator: at its deadline, or when its task is cancelled
(client gone, runtime stopping), the thread blocked reading the next batch gets an exception.

DataFusion has no cancel call. Its blocking read wakes every second to let Python raise pending
exceptions (that is how Ctrl-C stops it in a REPL), and dropping its stream aborts the query's
tasks. So a timer (accel.timers) raises an exception in the reading thread
(`PyThreadState_SetAsyncExc`), only while that thread is inside the read; the read fails, the stream is closed, and the query
stops wherever DataFusion yields (scans, recursive CTEs, generated series). A join that emits
many batches per input batch does not yield: the client still gets its error at the deadline,
but the operator keeps one of DataFusion's threads until it finishes. `DATAFUSION_THREADS` gives
the runtime headroom, so such a query cannot starve the ones after it."""

from __future__ import annotations

import ctypes
import os
import threading
import time
import weakref
from typing import Iterator

import pyarrow as pa

from accel.timers import TIMERS
from connectors.base import CALLER

from ..errors import QueryTimeout, RequestCancelled, SatchelError

DATAFUSION_THREADS = max(8, 4 * (os.cpu_count() or 1))
"""Tokio worker threads for DataFusion (its default is one per core): a query stuck in a
non-yielding operator after its deadline holds one, and the rest keep serving."""


def reserve_threads() -> None:
    """Size DataFusion's runtime; must run before its first query (tokio reads the variable
    when the runtime is built). An operator's own setting wins."""
    os.environ.setdefault("TOKIO_WORKER_THREADS", str(DATAFUSION_THREADS))


class _Interrupt(Exception):
    """Raised asynchronously in a thread blocked in a DataFusion read."""


class InterruptibleRead:
    """A DataFusion result whose blocking reads the current task's deadline and cancel scope can
    break. Use `reader()`; the source reader is closed when the result ends, fails or is dropped."""

    def __init__(self, source: pa.RecordBatchReader, limit: str = "runtime.params.query_timeout") -> None:
        caller = CALLER.get()
        self._source = source
        self._deadline = caller.deadline
        self._scope = caller.scope
        self._limit = limit
        self._lock = threading.Lock()
        self._reading: int | None = None  # the thread inside a read, while it is inside
        self._error: SatchelError | None = None  # why it was stopped, once it was
        self._timer: int | None = None  # its deadline's handle in TIMERS

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self._source.schema, self._batches())

    def stop(self, error: SatchelError) -> None:
        """Stop the query with `error`: the read in progress (if any) fails at once."""
        with self._lock:
            if self._error is not None:
                return
            self._error = error
            if self._reading is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._reading), ctypes.py_object(_Interrupt))

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            self._arm()
            while (batch := self._read()) is not None:
                yield batch
        except _Interrupt:
            raise self._error from None
        finally:
            self._source.close()  # drops DataFusion's stream: its tasks are aborted
            if self._timer is not None:
                TIMERS.cancel(self._timer)

    def _read(self) -> pa.RecordBatch | None:
        with self._lock:
            if self._error is not None:
                raise self._error
            self._reading = threading.get_ident()
        try:
            return self._source.read_next_batch()
        except StopIteration:
            return None
        except Exception:
            if self._error is not None:  # the interrupt, wrapped by DataFusion as an Arrow error
                raise self._error from None
            raise
        finally:
            with self._lock:
                self._reading = None

    def _arm(self) -> None:
        """Watch the deadline and the cancel scope (from the first read: a result never read,
        such as a schema lookup, needs neither)."""
        ref = weakref.ref(self)
        if self._deadline is not None:
            limit = self._limit
            self._timer = TIMERS.schedule(self._deadline - time.monotonic(), lambda: _expired(ref, limit))
        if self._scope is not None:
            self._scope.add(lambda: _cancelled(ref))


def _cancelled(ref: "weakref.ref[InterruptibleRead]") -> None:
    read = ref()
    if read is not None:
        read.stop(RequestCancelled("the query was cancelled (its client went away or the server is stopping)"))


def _expired(ref: "weakref.ref[InterruptibleRead]", limit: str) -> None:
    read = ref()
    if read is not None:
        read.stop(QueryTimeout(f"the query exceeded its deadline ({limit}) and was stopped"))
