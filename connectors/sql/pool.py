"""Pooled ADBC connections, the running statements that borrow them, and the per-source cap on
concurrent statements (PostgreSQL, Flight SQL peers, any ADBC driver)."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from engine.errors import ConnectorError, Overloaded

from ..base import CALLER
from ..params import parse_duration

GATE_PARAMS = ("max_concurrent_statements", "statement_queue_size", "statement_queue_timeout")


@dataclass(frozen=True)
class GateSettings:
    """A dataset's wish for its source's cap (params `max_concurrent_statements`, default 8;
    `statement_queue_size`, default 8 waiting per kind; `statement_queue_timeout`, default 10s)."""

    limit: int = 8
    queue: int = 8
    wait_s: float = 10.0

    @classmethod
    def from_params(cls, dataset: str, params: Mapping[str, str]) -> "GateSettings":
        def count(key: str, default: int, least: int) -> int:
            text = str(params.get(key, default))
            if not text.isdigit() or int(text) < least:
                raise ConnectorError(f"dataset '{dataset}': param {key} must be an integer >= {least}, got '{text}'")
            return int(text)

        wait = params.get("statement_queue_timeout")
        return cls(count("max_concurrent_statements", cls.limit, 1), count("statement_queue_size", cls.queue, 0),
                   parse_duration(dataset, "statement_queue_timeout", wait) if wait is not None else cls.wait_s)


class StatementGate:
    """At most `limit` statements at once on one source. Up to `queue` more of each kind (query,
    refresh) wait at most `wait_s`; when both kinds wait they take turns, each in arrival order,
    so neither starves the other. Beyond that: Overloaded, naming the source."""

    KINDS = ("query", "refresh")

    def __init__(self, source: str) -> None:
        self.source = source
        self._users: dict[int, GateSettings] = {}  # datasets using the gate; the smallest settings apply
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: dict[str, deque[object]] = {k: deque() for k in self.KINDS}
        self._turn = "query"

    @property
    def settings(self) -> GateSettings:
        s = list(self._users.values()) or [GateSettings()]
        return GateSettings(min(x.limit for x in s), min(x.queue for x in s), min(x.wait_s for x in s))

    def acquire(self) -> None:
        caller = CALLER.get()
        kind = caller.kind if caller.kind in self.KINDS else "query"
        with self._cond:
            s = self.settings
            if self._running < s.limit and not any(self._waiting.values()):
                self._grant(kind)
                return
            waiting = self._waiting[kind]
            if len(waiting) >= s.queue:
                raise self._overloaded(kind, s, "queue full")
            ticket = object()
            waiting.append(ticket)
            wait = min(s.wait_s, caller.seconds_left() or s.wait_s)  # never past the task's own deadline
            deadline = time.monotonic() + wait
            try:
                while not (self._running < self.settings.limit and self._next() is ticket):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._overloaded(kind, s, f"waited {wait:.3g}s")
                    self._cond.wait(left)
                waiting.popleft()
                self._grant(kind)
            finally:
                if ticket in waiting:
                    waiting.remove(ticket)
                    self._cond.notify_all()

    def try_acquire(self) -> bool:
        """A slot if one is free and nobody waits for it, else False at once (never queued)."""
        with self._cond:
            if self._running < self.settings.limit and not any(self._waiting.values()):
                self._running += 1
                return True
            return False

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def _grant(self, kind: str) -> None:
        self._running += 1
        self._turn = "refresh" if kind == "query" else "query"

    def _next(self) -> object | None:
        """The waiter served next: the first of the kind whose turn it is, else of the other kind."""
        other = "refresh" if self._turn == "query" else "query"
        for k in (self._turn, other):
            if self._waiting[k]:
                return self._waiting[k][0]
        return None

    def _overloaded(self, kind: str, s: GateSettings, why: str) -> Overloaded:
        return Overloaded(f"source {self.source} is saturated: {s.limit} statements running and {kind} queue "
                          f"of {s.queue} ({why}); retry shortly (params max_concurrent_statements, "
                          f"statement_queue_size, statement_queue_timeout)", retry_after=1.0)


_GATES: dict[str, StatementGate] = {}
_GATES_LOCK = threading.Lock()


def join_gate(source_id: str, user: object, settings: GateSettings) -> StatementGate:
    """The gate of a source (one per source_id, shared by its datasets), with `user`'s settings."""
    source = re.sub(r";(pw|auth)=[0-9a-f]+", "", source_id)  # credential digests say nothing to a reader
    with _GATES_LOCK:
        gate = _GATES.setdefault(source, StatementGate(source))
        with gate._cond:
            gate._users[id(user)] = settings
        return gate


def leave_gate(gate: StatementGate, user: object) -> None:
    """`user` no longer uses `gate`; a gate nobody uses is forgotten."""
    with _GATES_LOCK:
        with gate._cond:
            gate._users.pop(id(user), None)
            if not gate._users and _GATES.get(gate.source) is gate:
                del _GATES[gate.source]


class ConnectionPool:
    """Idle connections to one source, at most `size` kept; `connect()` opens a new one."""

    def __init__(self, connect: Callable[[], Any], size: int = 4) -> None:
        self._connect, self.size = connect, size
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def acquire(self, fresh: bool = False) -> tuple[Any, bool]:
        """(connection, reused): an idle one unless `fresh`, else a new one."""
        if not fresh:
            with self._lock:
                if self._idle:
                    return self._idle.pop(), True
        return self._connect(), False

    def release(self, conn: Any, healthy: bool) -> None:
        if healthy:
            with self._lock:
                if len(self._idle) < self.size:
                    self._idle.append(conn)
                    return
        close_quietly(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            close_quietly(conn)


class RunningStatement:
    """One statement's connection: back to the pool when read to the end; a reader dropped or
    closed early cancels the statement on the remote first (PQcancel for PostgreSQL)."""

    def __init__(self, pool: ConnectionPool, conn: Any, cur: Any, gate: StatementGate | None = None) -> None:
        self.pool, self.conn, self.cur, self.gate = pool, conn, cur, gate
        self._done = False
        self._lock = threading.Lock()

    def finish(self, complete: bool) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        if not complete:
            try:
                self.cur.adbc_cancel()
            except Exception:  # noqa: BLE001 - a driver without cancel: closing ends it
                pass
        close_quietly(self.cur)
        self.pool.release(self.conn, complete)
        if self.gate is not None:
            self.gate.release()


def close_quietly(obj: Any) -> None:
    try:
        obj.close()
    except Exception:  # noqa: BLE001 - closing a broken handle may fail; nothing to do
        pass


class ConnectFailed(Exception):
    """No connection could be opened (the cause is chained)."""


def execute_pooled(pool: ConnectionPool, sql: str, prepare: Callable[[Any], None],
                   is_statement_error: Callable[[BaseException], bool],
                   gate: StatementGate | None = None, held: bool = False) -> tuple[RunningStatement, Any]:
    """Run `sql` on a pooled connection, within `gate`'s cap: (its RunningStatement, the driver's
    batch reader); the gate's slot (taken here, or already by the caller: `held`) is held until
    the statement finishes.

    A reused connection that fails for another reason than the statement itself (the server
    closed it while idle) is dropped and the statement runs once more on a fresh one. Raises
    Overloaded when the gate is saturated, ConnectFailed when no connection opens, else the
    driver's error."""
    if gate is not None and not held:
        gate.acquire()
    try:
        return _execute_pooled(pool, sql, prepare, is_statement_error, gate)
    except BaseException:
        if gate is not None:
            gate.release()
        raise


def _execute_pooled(pool: ConnectionPool, sql: str, prepare: Callable[[Any], None],
                    is_statement_error: Callable[[BaseException], bool],
                    gate: StatementGate | None) -> tuple[RunningStatement, Any]:
    fresh = False
    while True:
        try:
            conn, reused = pool.acquire(fresh)
        except Exception as e:  # noqa: BLE001 - drivers raise their own error classes
            raise ConnectFailed() from e
        cur = None
        try:
            cur = conn.cursor()
            prepare(cur)
            scope = CALLER.get().scope
            if scope is not None:  # a client that goes away cancels the statement, even mid-execute
                scope.add(cur.adbc_cancel)
            cur.execute(sql)
            return RunningStatement(pool, conn, cur, gate), cur.fetch_record_batch()
        except Exception as e:
            if cur is not None:
                close_quietly(cur)
            pool.release(conn, False)
            if not reused or is_statement_error(e):
                raise
            fresh = True
