"""Server-side handles (statement tickets, prepared statements) with idle expiry.

A client that creates a handle and never uses it again must not leak server memory: each
entry expires after `ttl_seconds` without use, expired entries are swept lazily on every
access, and the registry never holds more than `max_entries` (the least recently used entry
makes room for a new one).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from engine.errors import NotFound

V = TypeVar("V")


class HandleRegistry(Generic[V]):
    """Opaque random handles -> values, thread-safe, LRU-bounded, expiring when idle."""

    def __init__(
        self,
        kind: str,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if ttl_seconds <= 0:
            raise ValueError("handle TTL must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.kind = kind
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            self._sweep_locked(self._clock())
            return len(self._entries)

    def add(self, value: V) -> bytes:
        """Store `value` under a new unguessable handle and return the handle."""
        handle = secrets.token_bytes(16)
        with self._lock:
            now = self._clock()
            self._sweep_locked(now)
            while len(self._entries) >= self.max_entries:
                self._entries.popitem(last=False)
            self._entries[handle] = (value, now)
        return handle

    def get(self, handle: bytes) -> V:
        """The value of a live handle (refreshing its idle timer); NotFound otherwise."""
        with self._lock:
            now = self._clock()
            self._sweep_locked(now)
            entry = self._entries.get(handle)
            if entry is None:
                raise self._not_found()
            self._entries[handle] = (entry[0], now)
            self._entries.move_to_end(handle)
            return entry[0]

    def pop(self, handle: bytes) -> V:
        """Remove a live handle and return its value; NotFound if unknown or expired."""
        with self._lock:
            self._sweep_locked(self._clock())
            entry = self._entries.pop(handle, None)
        if entry is None:
            raise self._not_found()
        return entry[0]

    def discard(self, handle: bytes) -> bool:
        """Remove a handle if present; True when something was removed."""
        with self._lock:
            return self._entries.pop(handle, None) is not None

    def sweep(self) -> int:
        """Drop expired entries now; returns how many were dropped."""
        with self._lock:
            return self._sweep_locked(self._clock())

    def _sweep_locked(self, now: float) -> int:
        # Entries are kept in last-use order, so expired ones are all at the front.
        dropped = 0
        deadline = now - self.ttl_seconds
        while self._entries:
            handle, (_, last_used) = next(iter(self._entries.items()))
            if last_used > deadline:
                break
            del self._entries[handle]
            dropped += 1
        return dropped

    def _not_found(self) -> NotFound:
        return NotFound(
            f"unknown or expired {self.kind} handle "
            f"({self.kind} handles expire after {self.ttl_seconds:g} s without use)"
        )
