"""One timer thread for many short deadlines (a `threading.Timer` starts a thread per call:
tens of microseconds of GIL-held work for every accelerated query)."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable


class Timers:
    """Runs `callback()` at its time on one daemon thread, unless cancelled first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._pending: set[int] = set()  # scheduled, not cancelled, not run yet
        self._ids = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, seconds: float, callback: Callable[[], None]) -> int:
        """Call `callback` in `seconds`; returns a handle for `cancel`."""
        handle = next(self._ids)
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + seconds, handle, callback))
            self._pending.add(handle)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="satchel-timers", daemon=True)
                self._thread.start()
            if self._heap[0][1] == handle:
                self._wake.notify()
        return handle

    def cancel(self, handle: int) -> None:
        """Make sure `callback` will not run (no-op once it ran)."""
        with self._wake:
            self._pending.discard(handle)
            if len(self._heap) > 2 * len(self._pending) + 64:  # drop cancelled entries
                self._heap = [entry for entry in self._heap if entry[1] in self._pending]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, handle, callback = heapq.heappop(self._heap)
                if handle not in self._pending:
                    continue
                self._pending.discard(handle)
            try:
                callback()
            except Exception:  # noqa: BLE001 - a failing callback never stops the others
                pass


TIMERS = Timers()
