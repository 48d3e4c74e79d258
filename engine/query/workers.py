"""The federated engine's worker processes (engine.query.datafusion_worker), seen from the sidecar.

A query takes an idle worker (or starts one, up to `pool_size`; beyond that it waits within its
deadline), sends its SQL and the shared-memory files of its tables, and streams the answer back
as Arrow IPC. At the query's deadline, when its client goes away, or when its result is dropped
unread, the worker is killed (SIGKILL: DataFusion stops wherever it is) and the next query starts
a fresh one. A worker that dies by itself (a crash, the out-of-memory killer) fails only its query.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa

from accel.timers import TIMERS
from connectors.base import CALLER, CancelScope

from ..errors import InternalError, QueryTimeout, RequestCancelled, ResourceExhausted, SatchelError
from ..process_exit import describe_exit, worker_env
from .datafusion_worker import frame, read_frame

log = logging.getLogger("satchel.federated")

WORKER_BASE_BYTES = 80 << 20  # an idle worker's own memory, with room (43 MiB anonymous after a query, measured)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


def pool_size(memory_budget: int) -> int:
    """Federated queries run at once (more wait for a worker within their deadline): two per
    usable core, as many as a quarter of the memory budget holds workers, at least two."""
    return max(2, min(2 * usable_cores(), memory_budget // 4 // WORKER_BASE_BYTES))




class WorkerQueryError(Exception):
    """DataFusion's own error from a worker, as text (classified like any engine error)."""


class PlanningError(WorkerQueryError):
    """DataFusion refused the statement before it ran."""


class _Worker:
    """One worker process and its socket; its spill files live in its own temporary directory."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="satchel-datafusion-")
        parent, child = socket.socketpair()
        env = worker_env(TMPDIR=self.dir, TOKIO_WORKER_THREADS=str(max(2, usable_cores())))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.query.datafusion_worker", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True, env=env)
        except BaseException:
            parent.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        finally:
            child.close()
        self.sock = parent
        self.answers = parent.makefile("rb")
        self.killed = False  # by the sidecar (deadline, cancel, dropped result, shutdown)
        # the thread holds the stream, not this object: a pool dropped unclosed still closes the
        # socket, and its worker exits
        threading.Thread(target=_log_stderr, args=(self.proc.stderr, self.proc.pid), name="satchel-datafusion-log",
                         daemon=True).start()

    def send(self, request: dict, fds: list[int], flags: int = 0) -> None:
        socket.send_fds(self.sock, [frame(request)], fds, flags)

    def kill(self) -> None:
        self.killed = True
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def end(self) -> None:
        """Kill the process, reap it, and remove its spill directory."""
        self.kill()
        self.proc.wait()
        self.answers.close()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def exit_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        return describe_exit(code)


class WorkerPool:
    """Worker processes for one runtime's federated queries."""

    def __init__(self, size: int, on_replaced: Callable[[str], None] = lambda reason: None) -> None:
        self.size = size
        self.on_replaced = on_replaced  # told why each killed or lost worker ended (metrics)
        self._idle: list[_Worker] = []
        self._live: set[object] = set()  # workers, and places held by ones starting
        self._closed = False
        self._warming = 0  # workers warm() is starting
        self._ready = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()  # queries waiting for a worker, in order
        self.replaced = 0  # workers killed or lost mid-query (each replaced by a fresh one)

    def status(self) -> dict:
        """For /v1/status: processes running, idle, and replaced so far."""
        with self._ready:
            return {"workers": sum(isinstance(w, _Worker) for w in self._live), "idle": len(self._idle),
                    "max_workers": self.size, "replaced": self.replaced}

    def query(self, request: dict, fds: list[int], limit: str) -> pa.RecordBatchReader:
        """Run `request` (see engine.query.datafusion_worker) in a worker and stream its answer.
        The current task's deadline and cancel scope stop it; `limit` names the deadline's setting."""
        caller = CALLER.get()
        worker = self._acquire(caller.deadline, limit, caller.scope)
        run = _Run(self, worker, limit)
        run.arm(caller.deadline, caller.scope)
        try:
            worker.send(request, fds)
            header = read_frame(worker.answers)
            if "error" in header:
                run.finish(clean=True)
                raise PlanningError(header["error"])
            reader = pa.ipc.open_stream(worker.answers)
        except (OSError, EOFError, pa.ArrowException) as e:
            error = run.failure(e)
            run.finish(clean=False)
            raise error from None
        return pa.RecordBatchReader.from_batches(reader.schema, run.batches(reader))

    def warm(self) -> None:
        """Start a worker in the background when none is idle, so the next query need not wait
        for one to start (about 0.3 s; more on a loaded machine)."""
        with self._ready:
            if self._closed or self._idle or self._warming or len(self._live) >= self.size:
                return
            placeholder = _Starting()
            self._live.add(placeholder)
            self._warming += 1
        threading.Thread(target=self._start_idle, args=(placeholder,), name="satchel-datafusion-warm",
                         daemon=True).start()

    def _start_idle(self, placeholder: "_Starting") -> None:
        try:
            worker = self._spawn(placeholder)
        except Exception:  # noqa: BLE001 - a query starting one will report why
            log.exception("could not start a federated engine worker")
            return
        finally:
            with self._ready:
                self._warming -= 1
                self._ready.notify_all()  # its waiters may now take it, or start their own
        self._release(worker)

    def forget(self, keep: list[str]) -> None:
        """Idle workers drop their mappings of accelerator tables not in `keep` (replaced ones),
        so an old table's memory is freed now, not at their next query. They stay idle meanwhile:
        a query arriving now must not find none and start another process."""
        with self._ready:
            for worker in self._idle:
                try:  # a few bytes to an idle reader: never blocks the pool's lock
                    worker.send({"keep": keep}, [], socket.MSG_DONTWAIT)
                except OSError:  # dead, or not reading: its next query finds out, or sends `keep` itself
                    pass

    def close(self) -> None:
        """Kill every worker: idle ones now, busy ones' queries fail as cancelled."""
        with self._ready:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = [w for w in self._live if isinstance(w, _Worker) and w not in idle]
            self._ready.notify_all()
        for worker in busy:
            worker.kill()
        for worker in idle:
            self._end(worker)

    def _acquire(self, deadline: float | None, limit: str, scope: CancelScope | None = None) -> _Worker:
        """An idle worker, or a new one; queries waiting for one are served in arrival order (a
        free-for-all let some wait several turns under load: p99 3.6x p50 with 32 clients). A
        query cancelled while it waits (`scope`: its client went away) leaves the line at once."""
        turn = object()
        if scope is not None:
            scope.add(self._wake)
        with self._ready:
            self._queue.append(turn)
            try:
                while True:
                    if self._closed:
                        raise RequestCancelled("the server is stopping")
                    if scope is not None and scope.cancelled:
                        raise RequestCancelled("the query was cancelled while it waited for the federated engine")
                    if self._queue[0] is turn:
                        while self._idle:
                            worker = self._idle.pop()
                            if worker.proc.poll() is None:
                                return worker
                            self._discard(worker, "lost")  # it died while idle (e.g. the out-of-memory killer)
                        if len(self._live) < self.size and not self._warming:  # else the one starting will do
                            placeholder = _Starting()
                            self._live.add(placeholder)
                            break
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise QueryTimeout(f"the query exceeded its deadline ({limit}) waiting for the federated "
                                           f"engine ({self.size} queries run at once)")
                    self._ready.wait(left)
            finally:
                self._queue.remove(turn)
                self._ready.notify_all()  # the next in line may go now
        try:
            return self._spawn(placeholder)
        except OSError as e:
            raise InternalError(f"could not start the federated engine's worker process ({e.strerror or e})") from None

    def _wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def _spawn(self, placeholder: "_Starting") -> _Worker:
        """Start a worker in the place `placeholder` holds in the pool (given back if it fails)."""
        try:
            worker = _Worker()
        except BaseException:
            self._gone(placeholder)
            raise
        with self._ready:
            self._live.discard(placeholder)
            self._live.add(worker)
        return worker

    def _release(self, worker: _Worker) -> None:
        with self._ready:
            if not self._closed:
                self._idle.append(worker)
                self._ready.notify_all()
                return
        self._end(worker)

    def _end(self, worker: _Worker) -> None:
        worker.end()
        self._gone(worker)

    def _discard(self, worker: _Worker, reason: str) -> None:
        self.replaced += 1
        self.on_replaced(reason)
        threading.Thread(target=worker.end, name="satchel-datafusion-reap", daemon=True).start()
        self._gone(worker)
        self.warm()

    def _gone(self, worker: object) -> None:
        with self._ready:
            self._live.discard(worker)
            self._ready.notify_all()


class _Starting:
    """Holds a worker's place in the pool while its process starts."""


class _Run:
    """One query in one worker: its deadline and cancel hooks kill the worker."""

    def __init__(self, pool: WorkerPool, worker: _Worker, limit: str) -> None:
        self._pool, self._worker, self._limit = pool, worker, limit
        self._lock = threading.Lock()
        self._error: SatchelError | None = None  # why the sidecar stopped it, once it did
        self._done = False
        self._timer: int | None = None

    def arm(self, deadline: float | None, scope) -> None:
        """The deadline and the task's cancel scope (its client gone, the runtime stopping) kill the worker."""
        ref = weakref.ref(self)
        if deadline is not None:
            limit = self._limit
            self._timer = TIMERS.schedule(deadline - time.monotonic(), lambda: _stop(ref, QueryTimeout(
                f"the query exceeded its deadline ({limit}) and was stopped")))
        if scope is not None:
            scope.add(lambda: _stop(ref, RequestCancelled(
                "the query was cancelled (its client went away or the server is stopping)")))

    def stop(self, error: SatchelError) -> None:
        with self._lock:
            if self._done or self._error is not None:
                return
            self._error = error
            self._worker.kill()

    def batches(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        clean = False
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                yield batch
            trailer = read_frame(self._worker.answers)
            clean = True
            if "error" in trailer:
                raise WorkerQueryError(trailer["error"])
        except (OSError, EOFError, pa.ArrowException) as e:
            raise self.failure(e) from None
        finally:
            self.finish(clean)

    def finish(self, clean: bool) -> None:
        """The worker goes back to the pool after a complete answer; otherwise it is killed."""
        with self._lock:
            if self._done:
                return
            self._done = True
            stopped = self._error is not None
        if self._timer is not None:
            TIMERS.cancel(self._timer)
        if clean and not stopped:
            self._pool._release(self._worker)
            return
        if stopped:
            reason = "stopped"  # its deadline, its client gone, the runtime stopping
        elif self._worker.proc.poll() is not None and not self._worker.killed:
            reason = "lost"  # it died by itself: a crash, the out-of-memory killer
        else:
            reason = "dropped"  # its result was dropped before its end
        self._worker.kill()
        self._pool._discard(self._worker, reason)

    def failure(self, error: Exception) -> Exception:
        """The error for a worker that stopped answering: the sidecar's reason, or its exit."""
        if self._error is not None:
            return self._error
        if self._worker.killed:
            return RequestCancelled("the query was cancelled (the server is stopping)")
        reason = self._worker.exit_reason()
        log.error("federated engine worker %s ended mid-query (%s)", self._worker.proc.pid, reason)
        if reason == "killed by SIGKILL":  # not by the sidecar: most likely the kernel's out-of-memory killer
            return ResourceExhausted("the federated engine's worker process was killed (SIGKILL, as the kernel's "
                                     "out-of-memory killer does) while running this query; it is replaced for "
                                     "the next query")
        return InternalError(f"the federated engine's worker process ended ({reason}) while running this "
                             f"query; it is replaced for the next query")


def _log_stderr(stream, pid: int) -> None:
    for line in stream:
        log.warning("federated engine worker %s: %s", pid, line.decode("utf-8", "replace").rstrip())


def _stop(ref: "weakref.ref[_Run]", error: SatchelError) -> None:
    run = ref()
    if run is not None:
        run.stop(error)
