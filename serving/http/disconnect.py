"""Blocking work for an HTTP request, cancelled when its client disconnects."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request


async def until_disconnect(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args, cancel=<threading.Event>)` in the thread pool; the event is set when the
    client disconnects (checked every 0.2 s) and when the call ends."""
    cancel = threading.Event()
    task = asyncio.ensure_future(run_in_threadpool(fn, *args, cancel=cancel))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.2)
            if not task.done() and await request.is_disconnected():
                cancel.set()
        return task.result()
    finally:
        cancel.set()
