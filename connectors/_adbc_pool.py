"""Pooled ADBC connections and the running statements that borrow them (PostgreSQL, Flight SQL
peers, any ADBC driver)."""

from __future__ import annotations

import threading
from typing import Any, Callable


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

    def __init__(self, pool: ConnectionPool, conn: Any, cur: Any) -> None:
        self.pool, self.conn, self.cur = pool, conn, cur
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


def close_quietly(obj: Any) -> None:
    try:
        obj.close()
    except Exception:  # noqa: BLE001 - closing a broken handle may fail; nothing to do
        pass


class ConnectFailed(Exception):
    """No connection could be opened (the cause is chained)."""


def execute_pooled(pool: ConnectionPool, sql: str, prepare: Callable[[Any], None],
                   is_statement_error: Callable[[BaseException], bool]) -> tuple[RunningStatement, Any]:
    """Run `sql` on a pooled connection: (its RunningStatement, the driver's batch reader).

    A reused connection that fails for another reason than the statement itself (the server
    closed it while idle) is dropped and the statement runs once more on a fresh one. Raises
    ConnectFailed when no connection opens, else the driver's error."""
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
            cur.execute(sql)
            return RunningStatement(pool, conn, cur), cur.fetch_record_batch()
        except Exception as e:
            if cur is not None:
                close_quietly(cur)
            pool.release(conn, False)
            if not reused or is_statement_error(e):
                raise
            fresh = True
