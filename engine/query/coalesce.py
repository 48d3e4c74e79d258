"""Identical queries at the same time run once (`runtime.params.coalesce_queries`, on by default).

Agents repeat themselves, often at the same moment: a fleet polling one dashboard query, a tool
retried while its first call still runs. A query that arrives while an identical one (same
principal, SQL text, parameters and data generations: the results cache's key) is still working
toward its first batch waits for that query's result instead of running again, so the
accelerator or the source does the work once. For accelerated data the answer is exactly what the
waiting query would have computed (the data generations are part of the key); a live source's
answer was read by a statement that began before the waiting query arrived.

A result is shared only when it is read to its end and holds at most `max_bytes` (all results
being kept for waiting queries together at most `total_bytes`). Otherwise, and when the first
query fails, is cancelled or is dropped unread, each waiting query runs on its own.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Callable, Hashable, Iterator

import pyarrow as pa

from ..errors import QueryTimeout, RequestCancelled

SHARED_MAX_BYTES = 16 << 20  # one result kept for the queries waiting on it
TOTAL_MAX_BYTES = 64 << 20  # every result being kept for waiting queries
POLL_S = 0.1  # how often a waiting query checks its client and the runtime


class _Run:
    """One executing query others may wait on: joinable until its first batch."""

    def __init__(self) -> None:
        self.joinable = True
        self.waiting = 0
        self.done = threading.Event()
        self.table: pa.Table | None = None  # set before `done` when the result is shared


class Coalescer:
    """The executing queries others may share, by key."""

    def __init__(self, max_bytes: int = SHARED_MAX_BYTES, total_bytes: int = TOTAL_MAX_BYTES) -> None:
        self.max_bytes, self.total_bytes = max_bytes, total_bytes
        self._runs: dict[Hashable, _Run] = {}
        self._lock = threading.Lock()
        self._held = 0
        self.shared = 0  # queries answered by another's execution

    def enter(self, key: Hashable) -> "Leader | Follower":
        """Follow the identical query running now, or lead: run it, for whoever comes meanwhile."""
        with self._lock:
            run = self._runs.get(key)
            if run is not None and run.joinable:
                run.waiting += 1
                return Follower(self, run)
            run = self._runs[key] = _Run()
        return Leader(self, key, run)

    @property
    def waiting(self) -> int:
        """Queries waiting now on another's result."""
        with self._lock:
            return sum(run.waiting for run in self._runs.values())

    def _close(self, key: Hashable, run: _Run) -> bool:
        """Stop `run` taking followers; whether any are waiting."""
        with self._lock:
            run.joinable = False
            if self._runs.get(key) is run:
                del self._runs[key]
            return run.waiting > 0

    def _reserve(self, nbytes: int, already: int) -> bool:
        """Count `nbytes` more of a result holding `already`, when both bounds allow."""
        with self._lock:
            if already + nbytes > self.max_bytes or self._held + nbytes > self.total_bytes:
                return False
            self._held += nbytes
            return True

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes


class Leader:
    """The query that runs; `share` its reader, or `abandon` when it fails before one exists."""

    def __init__(self, owner: Coalescer, key: Hashable, run: _Run) -> None:
        self._owner, self._key, self._run = owner, key, run

    def abandon(self) -> None:
        """No result to share: whoever waits runs on its own."""
        self._owner._close(self._key, self._run)
        self._run.done.set()

    def share(self, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        """`reader`, passed through. At its first batch it stops taking followers; when some
        wait, it reads ahead to the end (within the bounds, so they never wait on this query's
        client) and hands them the whole result."""
        owner, run = self._owner, self._run

        def batches() -> Iterator[pa.RecordBatch]:
            reserved = 0
            try:
                rest = iter(reader)
                first = next(rest, None)
                waiting = owner._close(self._key, run)
                if first is None:
                    if waiting:
                        run.table = reader.schema.empty_table()
                    return
                if not waiting:  # stream on as if never shared
                    run.done.set()
                    yield first
                    yield from rest
                    return
                held, complete = [first], False
                if owner._reserve(first.nbytes, 0):
                    reserved = first.nbytes
                    for batch in rest:
                        held.append(batch)
                        if not owner._reserve(batch.nbytes, reserved):
                            break
                        reserved += batch.nbytes
                    else:
                        complete = True
                if complete:
                    run.table = pa.Table.from_batches(held, reader.schema)
                run.done.set()
                yield from held
                yield from rest
            finally:
                owner._release(reserved)
                owner._close(self._key, run)
                run.done.set()

        stream = batches()
        weakref.finalize(stream, self.abandon)  # dropped before its first read: nobody waits forever
        return pa.RecordBatchReader.from_batches(reader.schema, stream)


class Follower:
    """A query waiting on an identical one's result."""

    def __init__(self, owner: Coalescer, run: _Run) -> None:
        self._owner, self._run = owner, run

    def wait(self, deadline: float | None, cancelled: Callable[[], bool]) -> pa.RecordBatchReader | None:
        """The shared result, or None when there is none (then run the query). Raises
        QueryTimeout at `deadline` (time.monotonic()) and RequestCancelled when `cancelled()`."""
        while not self._run.done.wait(POLL_S if deadline is None
                                      else max(0.0, min(POLL_S, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                raise QueryTimeout("the query exceeded its deadline (query_timeout) while waiting for an "
                                   "identical query running at the same time")
            if cancelled():
                raise RequestCancelled("the query was cancelled while waiting for an identical query")
        table = self._run.table
        if table is None:
            return None
        with self._owner._lock:
            self._owner.shared += 1
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
