"""engine.cancel.ClientWatch: a query's client asked whether it is still there while the query
works toward its first batch, cheaply (asking a Flight call holds the GIL for 70-350 us)."""

from __future__ import annotations

import time

from connectors.base import CancelScope
from engine.cancel import CLIENT_POLL_S, ClientWatch
from engine.errors import RequestCancelled


class _Client:
    """Counts how often it is asked; `gone` as told."""

    def __init__(self, gone: bool = False) -> None:
        self.gone, self.asked = gone, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.gone


def test_a_client_that_is_gone_cancels_the_query_within_two_polls() -> None:
    client, scope = _Client(gone=True), CancelScope()
    watch = ClientWatch(client, scope)
    started = time.monotonic()
    while not scope.cancelled and time.monotonic() - started < 5:
        time.sleep(0.01)
    assert scope.cancelled and watch.fired
    assert time.monotonic() - started < 3 * CLIENT_POLL_S + 0.5
    assert isinstance(watch.reason(RuntimeError("interrupted")), RequestCancelled)


def test_a_query_answered_before_the_first_poll_never_asks_its_client() -> None:
    clients, live = [], []
    ends = time.monotonic() + 6 * CLIENT_POLL_S
    while time.monotonic() < ends:  # a steady stream of queries, each with its first batch after half a poll
        client = _Client()
        live.append((time.monotonic(), ClientWatch(client, CancelScope())))
        clients.append(client)
        while live and time.monotonic() - live[0][0] >= CLIENT_POLL_S / 2:
            live.pop(0)[1].stop()
        time.sleep(0.01)
    for _, w in live:
        w.stop()
    slow, slow_scope = _Client(), CancelScope()
    watch = ClientWatch(slow, slow_scope)
    time.sleep(CLIENT_POLL_S * 0.5)
    assert slow.asked == 0  # not yet: too young to be asked
    time.sleep(CLIENT_POLL_S * 3)
    assert slow.asked >= 1 and not slow_scope.cancelled  # a slow query's client is asked, and is there
    watch.stop()
    asked = slow.asked
    time.sleep(CLIENT_POLL_S * 2)
    assert slow.asked == asked  # never after stop()
    assert sum(c.asked for c in clients) == 0
    assert watch.reason(ValueError("x")).__class__ is ValueError
