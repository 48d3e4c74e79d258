"""A client-side request rate limit: at most `rate` request starts per second.

Requests are spaced evenly (one every 1/rate seconds) rather than allowed in bursts: a burst
is what makes an API answer 429. Thread-safe, so concurrent scans of one dataset share it.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class RateLimiter:
    """Spaces calls to `wait()` at least 1/rate seconds apart (monotonic clock)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = 0.0  # the earliest time the next request may start
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until the next request may start; returns the seconds waited."""
        with self._lock:  # reserve a slot, then sleep outside the lock
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        delay = start - now
        if delay > 0:
            self._sleep(delay)
        return max(delay, 0.0)

    def hold(self, seconds: float) -> None:
        """Push the next slot at least `seconds` into the future (a server's Retry-After)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)
