"""Supervision of one model worker process (`serving.llm.llama_worker`).

Requests wait in a bounded FIFO queue here, in the sidecar, and go to the worker one at a
time: a worker that dies (SIGSEGV, SIGKILL, out of memory) fails only the request it was
running; queued requests wait for the restart. Restarts back off (1 s doubling to 60 s, reset
after a minute of health). Every request has a deadline and a cancel event: past either, the
worker is asked to stop generating, and killed if it does not within `CANCEL_GRACE`.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator

from engine.errors import BadRequest, ModelError, ModelUnavailable, Overloaded, QueryTimeout, RequestCancelled
from engine.process_exit import describe_exit

log = logging.getLogger("satchel.models")

CANCEL_GRACE = 2.0
BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_AFTER = 1.0, 60.0, 60.0
LOAD_TIMEOUT = 600.0


@dataclass
class Call:
    """One request: its events arrive on `events` until a terminal ("done", "error")."""

    kind: str
    args: tuple
    deadline: float
    timeout: float
    cancel: threading.Event
    events: queue.Queue = field(default_factory=queue.Queue)
    id: int = 0


class ModelWorker:
    """One supervised worker process for one `file:` model.

    `on_crash(reason)` is told of every unexpected exit (for task history and metrics)."""

    def __init__(self, name: str, spec: dict, queue_size: int,
                 on_crash: Callable[[str], None] = lambda reason: None,
                 on_state: Callable[[bool], None] = lambda up: None) -> None:
        self.name = name
        self.spec = spec
        self.status = "loading"   # loading | ready | restarting | error | stopped
        self.error: str | None = None
        self.restarts = 0
        self.last_crash: str | None = None
        self.info: dict = {}
        self._on_crash, self._on_state = on_crash, on_state
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._backoff = BACKOFF_FIRST
        self._restart_at = 0.0
        self._up_since = 0.0
        self.cancelled = 0
        self._extra_buffers = spec.get("extra_buffers", "auto")
        self._thread = threading.Thread(target=self._run, name=f"satchel-model-{name}", daemon=True)

    # -- the sidecar's side ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def submit(self, kind: str, args: tuple, timeout: float, cancel: threading.Event | None = None) -> Call:
        if self.status in ("error", "stopped"):
            raise ModelUnavailable(f"model '{self.name}' is unavailable: {self.error or self.status}")
        call = Call(kind, args, time.monotonic() + timeout, timeout, cancel or threading.Event(), id=next(self._ids))
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            raise Overloaded(f"model '{self.name}' is busy: its request queue is full; retry later") from None
        return call

    def result(self, call: Call) -> Any:
        """The answer of a non-streaming call (or its error)."""
        out = None
        for kind, value in self._events(call):
            if kind == "result":
                out = value
        return out

    def stream(self, call: Call) -> Iterator[dict]:
        for kind, value in self._events(call):
            if kind == "chunk":
                yield value

    def _events(self, call: Call) -> Iterator[tuple[str, Any]]:
        limit = call.deadline + CANCEL_GRACE + 5.0  # the supervisor ends every call before this
        finished = False
        try:
            while True:
                try:
                    event = call.events.get(timeout=max(0.05, limit - time.monotonic()))
                except queue.Empty:
                    raise self._timeout(call) from None
                if event[0] in ("done", "error"):
                    finished = True
                    if event[0] == "error":
                        raise event[1]
                    return
                yield event
        finally:
            if not finished:  # a consumer that stops early (client gone) cancels the work
                call.cancel.set()

    def stop(self, grace: float = 2.0) -> None:
        self._stopping.set()
        self.status = "stopped"
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._kill(grace)
        self._thread.join(timeout=grace + 1.0)

    # -- the supervisor thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._drain()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if self._proc is None and not self._spawn_until_ready():
                return
            try:
                call = self._queue.get(timeout=0.25)
            except queue.Empty:
                if self._proc is not None and self._proc.poll() is not None:  # died while idle
                    self._crashed(None)
                continue
            if call is None:
                return
            if self._proc is None or self._proc.poll() is not None:
                self._crashed(None)
                if not self._spawn_until_ready(call):
                    self._fail(call, self._unavailable())
                    continue
            self._serve(call)

    def _serve(self, call: Call) -> None:
        if call.cancel.is_set():
            return self._fail(call, RequestCancelled(f"model '{self.name}': the client went away"))
        if time.monotonic() >= call.deadline:
            return self._fail(call, self._timeout(call))
        conn = self._conn
        assert conn is not None
        try:
            conn.send((call.kind, call.id, *call.args))
        except OSError:
            return self._lost(call)
        cancel_sent: float | None = None
        while True:
            try:
                ready = conn.poll(0.1)
                msg = conn.recv() if ready else None
            except (EOFError, OSError):
                return self._lost(call)
            if msg is not None:
                if msg[0] in ("chunk", "result"):
                    call.events.put((msg[0], msg[2]))
                elif msg[0] == "done":
                    self._backoff_reset()
                    return call.events.put(("done",))
                elif msg[0] == "error":
                    self.cancelled += msg[2] == "cancelled"
                    return self._fail(call, self._error(call, msg[2], msg[3]))
            now = time.monotonic()
            if cancel_sent is None and (call.cancel.is_set() or now >= call.deadline):
                try:
                    conn.send(("cancel", call.id))
                except OSError:
                    return self._lost(call)
                cancel_sent = now
            elif cancel_sent is not None and now - cancel_sent > CANCEL_GRACE:
                log.warning("model %s: the worker did not stop within %.0f s of a cancel; killing it",
                            self.name, CANCEL_GRACE)
                self._kill(0)
                self._crashed("unresponsive after cancel")
                return self._fail(call, self._error(call, "cancelled", ""))

    def _spawn_until_ready(self, call: Call | None = None) -> bool:
        """Start the worker once its backoff has passed; False when it cannot (or `call` expired)."""
        while not self._stopping.is_set():
            wait = self._restart_at - time.monotonic()
            if wait > 0 and self._stopping.wait(wait):
                return False
            outcome = self._spawn()
            if outcome in ("ready", "error"):
                return outcome == "ready"
            if call is not None and (call.cancel.is_set() or time.monotonic() >= call.deadline):
                return False
        return False

    def _spawn(self) -> str:
        """One start: "ready", "crashed" (retry after the backoff) or "error" (permanent)."""
        parent, child = socket.socketpair()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "serving.llm.llama_worker", str(child.fileno())],
                                    pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
        finally:
            child.close()
        threading.Thread(target=self._log_stderr, args=(proc,), name=f"satchel-model-{self.name}-log",
                         daemon=True).start()
        conn = Connection(parent.detach())
        self._proc, self._conn = proc, conn
        extra = self._extra_buffers
        try:
            conn.send({**self.spec, "extra_buffers": extra})
            deadline = time.monotonic() + LOAD_TIMEOUT
            while not conn.poll(0.2):
                if self._stopping.is_set() or time.monotonic() > deadline:
                    self._kill(0)
                    if not self._stopping.is_set():
                        self._set_error(f"the model did not load within {LOAD_TIMEOUT:.0f} s")
                    return "error"
            msg = conn.recv()
        except (EOFError, OSError):
            reason = self._exit_reason()
            self._proc, self._conn = None, None
            self._crash_event(f"{reason} while loading")
            if extra != "off":  # llama.cpp's extra buffer types (AMX, repacking) are the usual native fault
                log.warning("model %s: the worker died loading (%s); retrying without llama.cpp's extra "
                            "buffer types", self.name, reason)
                self._extra_buffers = "off"
                self._restart_at = time.monotonic()
            return "crashed"
        if msg[0] == "load_error":
            self._kill(0)
            self._set_error(f"failed to load: {msg[1]}")
            return "error"
        self.info = msg[1]
        self.status, self.error, self._up_since = "ready", None, time.monotonic()
        self._on_state(True)
        log.info("model %s ready (worker pid %s, llama.cpp extra buffer types %s)", self.name, proc.pid,
                 "on" if self.info.get("extra_buffers") else "off")
        return "ready"

    # -- helpers -----------------------------------------------------------------------------
    def _log_stderr(self, proc: subprocess.Popen) -> None:
        """llama.cpp writes to stderr even when quiet: keep it in the log at debug level."""
        assert proc.stderr is not None
        for line in proc.stderr:
            log.debug("model %s worker: %s", self.name, line.decode("utf-8", "replace").rstrip())

    def _lost(self, call: Call) -> None:
        reason = self._crashed(None)
        self._fail(call, ModelUnavailable(
            f"model '{self.name}' is unavailable: its worker process ended ({reason}) while running this "
            f"request; it restarts automatically, retry shortly"))

    def _crashed(self, reason: str | None) -> str:
        reason = reason or self._exit_reason()
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None
        if not self._stopping.is_set():
            self._crash_event(reason)
        return reason

    def _crash_event(self, reason: str) -> None:
        self.restarts += 1
        self.last_crash = reason
        self.status = "restarting"
        self._restart_at = time.monotonic() + self._backoff
        log.error("model %s: worker process ended (%s); restarting in %.0f s", self.name, reason, self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        self._on_state(False)
        self._on_crash(reason)

    def _exit_reason(self) -> str:
        proc = self._proc
        if proc is None:
            return "exited"
        try:
            code = proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self._kill(0)
            return "stopped answering"
        return describe_exit(code)

    def _kill(self, grace: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            if grace > 0 and self._conn is not None:
                self._conn.send(("stop",))
                proc.wait(timeout=grace)
                return
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def _backoff_reset(self) -> None:
        if time.monotonic() - self._up_since > HEALTHY_AFTER:
            self._backoff = BACKOFF_FIRST

    def _set_error(self, text: str) -> None:
        self.status, self.error = "error", text
        self._on_state(False)
        log.error("model %s: %s", self.name, text)

    def _unavailable(self) -> Exception:
        if self.status in ("error", "stopped"):
            return ModelUnavailable(f"model '{self.name}' is unavailable: {self.error or 'the server is stopping'}")
        return ModelUnavailable(f"model '{self.name}' is restarting after a crash ({self.last_crash}); retry shortly")

    def _drain(self) -> None:
        while True:
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                return
            if call is not None:
                self._fail(call, self._unavailable())

    def _timeout(self, call: Call) -> Exception:
        return QueryTimeout(f"model '{self.name}' did not answer within {call.timeout:g} s "
                            f"(the request's deadline; the model's params.timeout)")

    def _error(self, call: Call, kind: str, text: str) -> Exception:
        if kind == "cancelled":
            if call.cancel.is_set():
                return RequestCancelled(f"model '{self.name}': the request was cancelled")
            return self._timeout(call)
        if kind == "bad_request":
            return BadRequest(f"model '{self.name}': {text}")
        return ModelError(f"model '{self.name}' failed: {text}")

    @staticmethod
    def _fail(call: Call, error: Exception) -> None:
        call.events.put(("error", error))
