"""Waiting in tests for something another thread or process does."""

from __future__ import annotations

import time
from typing import Callable


def until(ok: Callable[[], object], timeout: float = 30, step: float = 0.01) -> None:
    """Return once `ok()` is true; fail the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < end, f"timed out after {timeout:g}s"
        time.sleep(step)
