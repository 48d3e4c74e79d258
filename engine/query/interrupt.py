"""Stops a DataFusion query inside an operator: at its deadline, or when its task is cancelled
(client gone, runtime stopping), the thread blocked reading the next batch gets an exception.

DataFusion has no cancel call. Its blocking read wakes every second to let Python raise pending
exceptions (that is how Ctrl-C stops it in a REPL), and dropping its stream aborts the query's
tasks. So the watchdog raises an exception in the reading thread (`PyThreadState_SetAsyncExc`),
only while that thread is inside the read; the read fails, the stream is closed, and the query
stops wherever DataFusion yields (scans, recursive CTEs, generated series). A join that emits
many batches per input batch does not yield: the client still gets its error at the deadline,
but the operator keeps one of DataFusion's threads until it finishes. `DATAFUSION_THREADS` gives
the runtime headroom, so such a query cannot starve the ones after it."""

from __future__ import annotations

import ctypes
import heapq
import os
import threading
import time
import weakref
from typing import Iterator

import pyarrow as pa

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
        self._armed = False
        self._entry: list | None = None  # its place in the watchdog's heap

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
            raise self._stopped() from None
        finally:
            self._source.close()  # drops DataFusion's stream: its tasks are aborted
            if self._entry is not None:
                _WATCHDOG.forget(self._entry)

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
                raise self._stopped() from None
            raise
        finally:
            with self._lock:
                self._reading = None

    def _stopped(self) -> SatchelError:
        assert self._error is not None
        return self._error

    def _arm(self) -> None:
        if self._armed:
            return
        self._armed = True
        ref = weakref.ref(self)
        if self._deadline is not None:
            self._entry = _WATCHDOG.at(self._deadline, ref, self._limit)
        if self._scope is not None:
            self._scope.add(lambda: _cancelled(ref))


def _cancelled(ref: "weakref.ref[InterruptibleRead]") -> None:
    read = ref()
    if read is not None:
        read.stop(RequestCancelled("the query was cancelled (its client went away or the server is stopping)"))


class _Watchdog:
    """One thread for every query's deadline: a heap of [deadline, number, read, limit, live],
    earliest first; entries of reads that ended are dropped when they outnumber the live ones."""

    def __init__(self) -> None:
        self._heap: list[list] = []
        self._wake = threading.Condition()
        self._count = self._live = 0
        self._thread: threading.Thread | None = None

    def at(self, deadline: float, ref: "weakref.ref[InterruptibleRead]", limit: str) -> list:
        entry = [deadline, 0, ref, limit, True]
        with self._wake:
            self._count += 1
            self._live += 1
            entry[1] = self._count
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="satchel-deadlines", daemon=True)
                self._thread.start()
            self._wake.notify()
        return entry

    def forget(self, entry: list) -> None:
        with self._wake:
            if not entry[4]:
                return
            entry[4] = False
            self._live -= 1
            if len(self._heap) > 64 and len(self._heap) > 2 * self._live:
                self._heap = [e for e in self._heap if e[4]]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                entry = heapq.heappop(self._heap)
                live, entry[4] = entry[4], False
                self._live -= live
            read = entry[2]() if live else None
            if read is not None:
                read.stop(QueryTimeout(f"the query exceeded its deadline ({entry[3]}) and was stopped"))


_WATCHDOG = _Watchdog()
