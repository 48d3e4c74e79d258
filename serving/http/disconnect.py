"""Blocking query work for HTTP requests: on a bounded thread pool of its own (apart from the
routes that must always answer, which never use a thread), cancelled when the client leaves."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
import anyio.to_thread
from starlette.requests import Request

QUERY_THREADS = 32  # HTTP queries planning or streaming at once; more wait for a thread
_DONE = object()
_limiters: dict[int, anyio.CapacityLimiter] = {}  # by event loop (one in production)


def query_pool() -> anyio.CapacityLimiter:
    """The query pool of the running event loop."""
    loop = id(asyncio.get_running_loop())
    if loop not in _limiters:
        _limiters.clear()  # a new event loop (tests): the old one's limiter is useless
        _limiters[loop] = anyio.CapacityLimiter(QUERY_THREADS)
    return _limiters[loop]


async def until_disconnect(request: Request, fn: Callable[..., Any], *args: Any,
                           pool: anyio.CapacityLimiter | None = None) -> Any:
    """`fn(*args, cancel=<threading.Event>)` on `pool` (default: AnyIO's); the event is set when
    the client disconnects (checked every 0.2 s) and when the call ends."""
    cancel = threading.Event()
    task = asyncio.ensure_future(anyio.to_thread.run_sync(lambda: fn(*args, cancel=cancel), limiter=pool))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.2)
            if not task.done() and await request.is_disconnected():
                cancel.set()
        return task.result()
    finally:
        cancel.set()


async def on_query_pool(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks`, each one made on the query pool; closed there when the response ends, fails or
    its client goes away (which releases the query's source statements and cursors)."""
    try:
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, _DONE, limiter=query_pool())
            if chunk is _DONE:
                return
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close, limiter=query_pool())
