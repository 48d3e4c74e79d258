"""Execution slots handed out strictly in arrival order.

`threading.Semaphore` lets a thread that arrives just as a slot frees take it ahead of the
threads already waiting (it wakes one waiter, but any caller of acquire() may win the race), so
under load some queries wait for several turns: a long latency tail. Here a released slot goes
straight to the longest waiter, and a waiter whose query is cancelled (its client went away)
leaves the line at once instead of holding its place until its deadline."""

from __future__ import annotations

import collections
import threading

from connectors.base import CancelScope


class _Waiter:
    __slots__ = ("gate", "granted")

    def __init__(self) -> None:
        self.gate = threading.Lock()
        self.gate.acquire()  # released once: when handed a slot, or withdrawn
        self.granted = False


class FifoSlots:
    """A counting semaphore whose waiters are served first come, first served."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._lock = threading.Lock()
        self._waiters: collections.deque[_Waiter] = collections.deque()

    def acquire(self, timeout: float | None = None, scope: CancelScope | None = None) -> bool:
        """Take a slot, waiting up to `timeout` seconds (None: no limit); False on timeout, or
        when `scope` is (or is meanwhile) cancelled."""
        if scope is not None and scope.cancelled:
            return False
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            waiter = _Waiter()
            self._waiters.append(waiter)
        if scope is not None:
            scope.add(lambda: self._withdraw(waiter))  # at once when already cancelled
        waiter.gate.acquire(timeout=-1 if timeout is None else max(timeout, 0))
        with self._lock:
            if waiter.granted:  # also when handed over just as the wait ran out: the slot is this caller's
                return True
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return False

    def _withdraw(self, waiter: _Waiter) -> None:
        with self._lock:
            if waiter.granted or waiter not in self._waiters:
                return
            self._waiters.remove(waiter)
        waiter.gate.release()

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True
                waiter.gate.release()
            else:
                self._free += 1
