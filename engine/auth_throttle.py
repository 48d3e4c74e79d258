"""Back off clients that keep sending wrong API keys (per client address)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Client:
    failures: int = 0
    blocked_until: float = 0.0
    last_failure: float = 0.0


class AuthThrottle:
    """Consecutive wrong keys per client, with exponential backoff.

    A client's first `free` wrong keys in a row are answered at once; each further one blocks the
    client for `base * 2**k` seconds (at most `cap`). While blocked, its requests are refused before
    their key is even checked, so guessing costs time. A valid key resets the client; a client with
    no wrong key for `forget_after` seconds starts afresh. At most `max_clients` are remembered.
    """

    def __init__(self, free: int = 5, base: float = 1.0, cap: float = 30.0, forget_after: float = 600.0,
                 max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.base, self.cap, self.forget_after = free, base, cap, forget_after
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def retry_after(self, client: str) -> float | None:
        """Seconds `client` must still wait before a key of its is checked, or None."""
        with self._lock:
            state = self._clients.get(client)
            left = state.blocked_until - self._clock() if state else 0.0
        return left if left > 0 else None

    def failed(self, client: str) -> None:
        """Count a wrong key from `client` (blocking it once past the free allowance)."""
        now = self._clock()
        with self._lock:
            state = self._clients.pop(client, None) or _Client()
            if now - state.last_failure > self.forget_after:
                state = _Client()
            state.failures += 1
            state.last_failure = now
            over = state.failures - self.free
            if over > 0:
                state.blocked_until = now + min(self.cap, self.base * 2 ** min(over - 1, 32))
            self._clients[client] = state
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """A valid key from `client`: forget its failures."""
        with self._lock:
            self._clients.pop(client, None)
