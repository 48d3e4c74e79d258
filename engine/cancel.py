"""Bounded waits on sources: a deadline, a client that goes away or a stopping runtime cancels a
task's source work (its CancelScope) and ends the wait for it at once."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
import weakref
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Iterator, TypeVar

import pyarrow as pa

from connectors.base import CancelScope

from .errors import QueryTimeout, RequestCancelled

T = TypeVar("T")
POLL_S = 0.1
CLIENT_POLL_S = 0.2  # how often a query waiting for its first batch asks whether its client is still there
GRACE_S = 1.0  # after a cancel, how long the waiter lets the work end with its own error


class LiveScopes:
    """The cancel scopes of a runtime's running tasks, all cancelled when it stops."""

    def __init__(self) -> None:
        self._scopes: "weakref.WeakSet[CancelScope]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self.stopping = False

    def track(self, scope: CancelScope) -> CancelScope:
        """`scope`, cancelled by `cancel_all` while it lives (at once when already stopping)."""
        with self._lock:
            self._scopes.add(scope)
            stopping = self.stopping
        if stopping:
            cancel_in_background(scope)
        return scope

    def cancel_all(self) -> None:
        """Cancel every live task's source work; tasks tracked later start cancelled."""
        with self._lock:
            self.stopping, scopes = True, list(self._scopes)
        for scope in scopes:
            cancel_in_background(scope)


class ClientWatch:
    """Cancels a query's scope when its client goes away before the first batch (an aggregate
    over a long join, in DuckDB or in a federated worker, sends nothing until it ends): the
    accelerator is interrupted, the worker killed, source statements cancelled. After the first
    batch the response's writer notices a client that left, and `client_gone` may no longer be
    valid (Flight's call context, HTTP's event set when the first batch is handed over), so it
    is never called after `stop()` returns. One thread asks for every watched query (no timer
    or wake-up per query: most end long before the first poll)."""

    def __init__(self, client_gone: Callable[[], bool], scope: CancelScope) -> None:
        self._client_gone, self._scope = client_gone, scope
        self.since = time.monotonic()
        self._lock = threading.Lock()
        self._active = True
        self.fired = False  # the client went away and the query was cancelled for it
        _WATCHES.add(self)

    def poll(self) -> None:
        with self._lock:
            if not self._active:
                return
            try:
                gone = self._client_gone()
            except Exception:  # noqa: BLE001 - a client that cannot be asked is treated as present
                return
            if not gone:
                return
            self._active = False
            self.fired = True
        _WATCHES.discard(self)
        cancel_in_background(self._scope)

    def stop(self) -> None:
        with self._lock:
            self._active = False
        _WATCHES.discard(self)

    def reason(self, error: Exception) -> Exception:
        """The error to report for a query that failed: cancelled, when this watch cancelled it
        (its work then fails with whatever the interrupted engine or source says)."""
        if self.fired:
            return RequestCancelled("the query was cancelled: its client went away")
        return error

    def until_first_batch(self, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        """`reader`, stopping this watch at its first batch (or its end, or when it is dropped)."""
        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for batch in reader:
                    self.stop()
                    yield batch
            except Exception as e:
                raise self.reason(e) from None
            finally:
                self.stop()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())


class _Watches:
    """The live ClientWatches, asked every CLIENT_POLL_S by one daemon thread while there are
    any, each from CLIENT_POLL_S after it began: asking costs a Flight call 70-350 us holding
    the GIL (gRPC's IsCancelled), and most queries have their first batch sooner. Held weakly:
    a result dropped unread ends its watch when it is collected."""

    def __init__(self) -> None:
        self._watches: "weakref.WeakSet[ClientWatch]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self._some = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, watch: ClientWatch) -> None:
        with self._lock:
            self._watches.add(watch)
            if not self._some.is_set():  # set() takes a lock and notifies even when already set
                self._some.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="satchel-client-watch", daemon=True)
                self._thread.start()

    def discard(self, watch: ClientWatch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            self._some.wait()
            time.sleep(CLIENT_POLL_S)
            with self._lock:
                watches = list(self._watches)
                if not watches:
                    self._some.clear()
            due = time.monotonic() - CLIENT_POLL_S
            for watch in watches:
                if watch.since <= due:
                    watch.poll()


_WATCHES = _Watches()


def cancel_in_background(scope: CancelScope) -> None:
    """`scope.cancel()` on a helper thread: a cancel hook may itself wait on a frozen source."""
    threading.Thread(target=scope.cancel, name="satchel-cancel", daemon=True).start()


def guarded(work: Callable[[], T], scope: CancelScope, deadline: float | None,
            client_gone: Callable[[], bool] | None = None, limit: str = "runtime.params.query_timeout") -> T:
    """`work()` on a helper thread while this thread watches: at `deadline` (time.monotonic())
    it raises QueryTimeout, when `client_gone()` or the scope is cancelled (the runtime stops)
    RequestCancelled; either way the scope is cancelled (after a grace for a deadline, which the
    source enforces itself where it can). A daemon thread, not a pool: a
    pool's threads are joined at exit and can all be taken by frozen sources. A result that
    arrives after the waiter gave up is closed."""
    future: Future = Future()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            future.set_result(context.run(work))
        except BaseException as e:  # delivered to the waiting thread
            future.set_exception(e)

    threading.Thread(target=run, name="satchel-source-wait", daemon=True).start()
    while True:
        try:
            return future.result(timeout=POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic())))
        except FutureTimeout:
            pass
        if deadline is not None and time.monotonic() >= deadline:
            error: Exception = QueryTimeout(f"the query exceeded its deadline ({limit}) and was cancelled")
        elif scope.cancelled:
            error = RequestCancelled("the server is stopping; the query was cancelled")
        elif client_gone is not None and client_gone():
            error = RequestCancelled("the client went away; its source statements were cancelled")
        else:
            continue
        break
    future.add_done_callback(_close_late_result)
    if isinstance(error, QueryTimeout):
        # The source was given the same deadline: let it stop the statement with its own limit
        # (clearer in its logs) before cancelling from here.
        with contextlib.suppress(Exception):
            future.result(timeout=GRACE_S)
    cancel_in_background(scope)
    with contextlib.suppress(Exception):
        future.result(timeout=GRACE_S)
    raise error


def _close_late_result(future: Future) -> None:
    if future.exception() is not None:
        return
    close = getattr(future.result(), "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()
