"""Trace and span ids for task-history rows: one trace per request, one span per task, and a
task started inside another (a tool's query inside a chat, an ai() call inside a query, the
embeddings of a refresh) names that task's span as its parent. Ids have OpenTelemetry's
shapes (32 and 16 hex digits), so rows and exported spans join on them."""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None = None


_CURRENT: ContextVar[Span | None] = ContextVar("satchel_span", default=None)


def new_span(parent: Span | None = None) -> Span:
    """A span under `parent` (default: the current one), or the root of a new trace."""
    parent = parent if parent is not None else _CURRENT.get()
    if parent is None:
        ids = os.urandom(24).hex()  # what secrets.token_hex does, in one call for both ids
        return Span(ids[:32], ids[32:])
    return Span(parent.trace_id, os.urandom(8).hex(), parent.span_id)


def enter(span: Span) -> Token:
    """Make `span` the parent of the tasks started in this context until `leave(token)`."""
    return _CURRENT.set(span)


def leave(token: Token) -> None:
    _CURRENT.reset(token)


@contextlib.contextmanager
def within(span: Span) -> Iterator[Span]:
    """`enter(span)` for a block."""
    token = enter(span)
    try:
        yield span
    finally:
        leave(token)
