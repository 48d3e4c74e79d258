"""Retries of idempotent GETs: which failures are transient, how long to wait, Retry-After.

Transient: HTTP 429, 500, 502, 503, 504, connection errors and timeouts. The wait before
retry n (1-based) is the server's `Retry-After` when it sends one (delta-seconds or an
HTTP-date), else `backoff * 2**(n-1)` with +-25% jitter. A wait longer than `max_wait` is not
slept through: the request fails with an error saying what the server asked for.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` (seconds, or an HTTP-date) -> seconds to wait from `now` (epoch), or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse is not one
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one request."""

    max_retries: int = 3
    backoff: float = 1.0  # seconds before the first retry without Retry-After; doubles per retry
    max_wait: float = 60.0  # longest single wait, whether from backoff or Retry-After

    def backoff_wait(self, attempt: int) -> float:
        """The wait before retry `attempt` (1-based) when the server gave no Retry-After."""
        base = self.backoff * (2 ** (attempt - 1))
        return min(self.max_wait, base * random.uniform(0.75, 1.25))
