"""Handle registry: idle expiry, refresh on use, bounded size."""

from __future__ import annotations

import pytest

from engine.errors import NotFound
from serving.flight_sql.handles import HandleRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_handles_expire_when_idle():
    clock = Clock()
    reg: HandleRegistry[str] = HandleRegistry("prepared statement", 10, clock=clock)
    handle = reg.add("select 1")
    assert len(handle) == 16
    clock.now = 9
    assert reg.get(handle) == "select 1"  # use refreshes the idle timer
    clock.now = 18
    assert reg.get(handle) == "select 1"
    clock.now = 28.5
    with pytest.raises(NotFound, match="expired prepared statement handle"):
        reg.get(handle)
    assert len(reg) == 0


def test_sweep_drops_only_expired_entries():
    clock = Clock()
    reg: HandleRegistry[int] = HandleRegistry("ticket", 5, clock=clock)
    old = reg.add(1)
    clock.now = 3
    young = reg.add(2)
    clock.now = 6
    assert reg.sweep() == 1
    assert reg.get(young) == 2
    with pytest.raises(NotFound):
        reg.pop(old)


def test_size_is_bounded_by_evicting_the_least_recently_used():
    reg: HandleRegistry[int] = HandleRegistry("ticket", 60, max_entries=2)
    a, b = reg.add(1), reg.add(2)
    reg.get(a)  # b is now the least recently used
    c = reg.add(3)
    assert len(reg) == 2
    assert reg.get(a) == 1 and reg.get(c) == 3
    with pytest.raises(NotFound):
        reg.get(b)


def test_pop_and_discard():
    reg: HandleRegistry[str] = HandleRegistry("ticket", 60)
    h = reg.add("x")
    assert reg.pop(h) == "x"
    assert reg.discard(h) is False
    with pytest.raises(NotFound):
        reg.pop(h)


def test_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        HandleRegistry("ticket", 0)
    with pytest.raises(ValueError):
        HandleRegistry("ticket", 1, max_entries=0)
