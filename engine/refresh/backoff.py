"""The one backoff policy of refreshes: exponential, capped, optionally jittered."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Wait `base_s * 2^(failures-1)` seconds, at most `max_s`; with `jitter`, a uniform draw
    from the upper half of that (so retries of many datasets do not line up)."""

    base_s: float
    max_s: float
    jitter: bool = True

    def delay(self, failures: int) -> float:
        delay = min(self.max_s, self.base_s * 2 ** (max(1, failures) - 1))
        return random.uniform(delay / 2, delay) if self.jitter else delay


ATTEMPTS = Backoff(0.5, 30.0)  # between the attempts of one refresh (refresh_retry_max_attempts)
FIRST_LOAD = Backoff(1.0, 60.0, jitter=False)  # a dataset never loaded is retried after 1s, 2s, 4s ... 60s


def retry(fn: Callable[[], T], attempts: int, stop: threading.Event, backoff: Backoff = ATTEMPTS,
          on_failure: Callable[[int, BaseException], None] | None = None) -> T:
    """Call `fn` up to `attempts` times, waiting `backoff` between tries; `stop` ends the waiting."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:  # the last failure propagates to the caller
            if on_failure:
                on_failure(attempt, e)
            if attempt == attempts or stop.is_set() or stop.wait(backoff.delay(attempt)):
                raise
    raise AssertionError("unreachable")
