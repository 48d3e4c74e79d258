"""Execution slots handed out strictly in arrival order.

`threading.Semaphore` lets a thread that arrives just as a slot frees take it ahead of the
threads already waiting (it wakes one waiter, but any caller of acquire() may win the race), so
under load some queries wait for several turns: a long latency tail. Here a released slot goes
straight to the longest waiter."""

from __future__ import annotations

import collections
import threading


class FifoSlots:
    """A counting semaphore whose waiters are served first come, first served."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._lock = threading.Lock()
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a slot, waiting up to `timeout` seconds (None: no limit); False on timeout."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        if gate.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return True  # release() handed this waiter its slot
        with self._lock:
            if gate in self._waiters:
                self._waiters.remove(gate)
                return False
        return True  # handed over just as the wait ran out: the slot is this caller's

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1
