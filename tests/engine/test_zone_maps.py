"""accel.zone_maps and accel.top_rows: the batches a lookup skips, or stops before, are exactly
ones that cannot hold a row of its answer."""

from __future__ import annotations

import datetime as dt
import decimal
import random
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from accel.arrow import ArrowAccelerator
from accel.top_rows import top_rows
from accel.zone_maps import ZoneMaps
from connectors.arrow_filters import compile_filters
from connectors.base import CALLER, CancelScope, Caller, Filter, SortKey
from engine.errors import QueryTimeout, RequestCancelled


class _Version:
    """Stands for the object owning a table version (a SharedTable in the accelerator)."""


_DAY0, _T0 = dt.date(2026, 1, 1), dt.datetime(2026, 3, 1)
KINDS = {  # a key column's type, and the value standing for the integer i in it
    "int32": (pa.int32(), lambda i: i),
    "date": (pa.date32(), lambda i: _DAY0 + dt.timedelta(days=i)),
    "timestamp_ns": (pa.timestamp("ns"), lambda i: _T0 + dt.timedelta(seconds=i)),
    "timestamp_utc": (pa.timestamp("us", "UTC"), lambda i: (_T0 + dt.timedelta(seconds=i)).replace(tzinfo=dt.timezone.utc)),
    "decimal": (pa.decimal128(10, 2), lambda i: decimal.Decimal(i) / 4),
}


def _table(ids: list[int | None], names: list[str | None], batch: int, kind: str = "int32") -> pa.Table:
    typ, value = KINDS[kind]
    table = pa.table({"id": pa.array([None if i is None else value(i) for i in ids], typ),
                      "name": pa.array(names, pa.string())})
    return pa.Table.from_batches(table.to_batches(max_chunksize=batch), table.schema)


def _kept(zones: ZoneMaps, owner: object, table: pa.Table, filters: list[Filter]) -> list[pa.RecordBatch]:
    batches = table.to_batches()
    return [batches[i] for i in zones.candidates(owner, table, filters)]


def _matching(table: pa.Table, filters: list[Filter]) -> list[dict]:
    expr, _ = compile_filters(filters, table.schema)
    return table.filter(expr).to_pylist() if table.num_rows else []


def test_batches_that_cannot_match_are_skipped_and_no_other() -> None:
    table = _table(list(range(100)), [f"n{i:03d}" for i in range(100)], 10)
    zones, version = ZoneMaps(), _Version()
    kept = lambda *filters: [b.column(0)[0].as_py() for b in _kept(zones, version, table, list(filters))]  # noqa: E731
    assert kept(Filter("id", "=", 42)) == [40]
    assert kept(Filter("id", "in", (5, 93, 500))) == [0, 90]
    assert kept(Filter("id", "<", 20)) == [0, 10]
    assert kept(Filter("id", "<=", 20)) == [0, 10, 20]
    assert kept(Filter("id", ">", 89)) == [90]
    assert kept(Filter("id", ">=", 89)) == [80, 90]
    assert kept(Filter("id", ">=", 30), Filter("id", "<", 50)) == [30, 40]  # filters are a conjunction
    assert kept(Filter("name", "=", "n057")) == [50]
    assert kept(Filter("id", "=", 1000)) == []
    # what cannot tell keeps every batch: other operators, other value types, composites
    assert len(kept(Filter("id", "!=", 42))) == 10
    assert len(kept(Filter("id", "=", "42"))) == 10
    assert len(kept(Filter("name", "=", 42))) == 10
    assert len(kept(Filter("", "or", (Filter("id", "=", 1), Filter("id", "=", 99))))) == 10
    assert len(kept(Filter("nope", "=", 1))) == 10


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "int32"])
def test_dates_timestamps_and_decimals_prune_as_integers_do(kind: str) -> None:
    value = KINDS[kind][1]
    table = _table(list(range(100)), [None] * 100, 10, kind)
    zones, version = ZoneMaps(), _Version()
    kept = lambda *filters: [i * 10 for i in zones.candidates(version, table, list(filters))]  # noqa: E731
    assert kept(Filter("id", "=", value(42))) == [40]
    assert kept(Filter("id", "in", (value(5), value(93)))) == [0, 90]
    assert kept(Filter("id", ">=", value(30)), Filter("id", "<", value(50))) == [30, 40]
    assert kept(Filter("id", ">", value(1000))) == []
    assert len(kept(Filter("id", "=", 42 if kind != "decimal" else "42"))) == 10  # another type: keeps all


def test_a_batch_of_nulls_matches_no_comparison() -> None:
    table = _table([None] * 10 + list(range(10)), [None] * 20, 10)
    zones = ZoneMaps()
    assert [b.column(0)[0].as_py() for b in _kept(zones, _Version(), table, [Filter("id", ">=", 0)])] == [0]
    assert len(_kept(zones, _Version(), table, [Filter("id", "is_null")])) == 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(12))
def test_pruned_batches_give_the_same_rows_as_the_whole_table(seed: int, kind: str) -> None:
    rng = random.Random(seed)
    value = KINDS[kind][1]
    rows = rng.randrange(0, 400)
    clustered = rng.random() < 0.5  # loaded in key order (zones prune) or not (they keep all)
    ids = sorted(rng.randrange(-50, 50) for _ in range(rows)) if clustered else [rng.randrange(-50, 50) for _ in range(rows)]
    ids = [None if rng.random() < 0.1 else i for i in ids]
    names = [None if rng.random() < 0.1 else rng.choice(["a", "ab", "b", "ba", "é", "z"]) for _ in range(rows)]
    table = _table(ids, names, rng.choice([1, 7, 50, 1000]), kind)
    zones, version = ZoneMaps(), _Version()
    for _ in range(25):
        filters = []
        for _ in range(rng.randrange(1, 3)):
            if rng.random() < 0.7:
                op = rng.choice(["=", "<", "<=", ">", ">=", "in", "!="])
                values = tuple(value(rng.randrange(-60, 60)) for _ in range(3))
                filters.append(Filter("id", op, values if op == "in" else values[0]))
            else:
                op = rng.choice(["=", "<", ">=", "in"])
                pick = lambda: rng.choice(["a", "ab", "b", "c", "é", ""])  # noqa: E731
                filters.append(Filter("name", op, (pick(), pick()) if op == "in" else pick()))
        pruned = pa.Table.from_batches(_kept(zones, version, table, filters), table.schema)
        assert _matching(pruned, filters) == _matching(table, filters), filters


def test_the_accelerator_keeps_zones_per_table_version() -> None:
    accel = ArrowAccelerator()
    first = pa.table({"id": pa.array(range(1000), pa.int64())}).to_batches(max_chunksize=100)
    accel.replace("t", pa.RecordBatchReader.from_batches(first[0].schema, first))
    lookup = lambda v: accel.exact_scan("t", ["id"], [Filter("id", "=", v)], None).read_all().column("id").to_pylist()  # noqa: E731
    assert lookup(555) == [555]
    second = pa.table({"id": pa.array(range(5000, 6000), pa.int64())}).to_batches(max_chunksize=100)
    accel.replace("t", pa.RecordBatchReader.from_batches(second[0].schema, second))
    assert lookup(555) == [] and lookup(5555) == [5555]  # the new version's zones, not the old one's
    assert pc.sum(accel.table("t").column("id")).as_py() == sum(range(5000, 6000))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(15))
def test_the_first_rows_in_an_order_are_those_of_a_whole_sort(seed: int, kind: str) -> None:
    rng = random.Random(1000 + seed)
    typ, value = KINDS[kind]
    rows = rng.randrange(0, 300)
    a = sorted(rng.randrange(-20, 20) for _ in range(rows)) if rng.random() < 0.5 else [rng.randrange(-20, 20) for _ in range(rows)]
    table = pa.table({
        "a": pa.array([None if rng.random() < 0.1 else value(v) for v in a], typ),
        "s": pa.array([None if rng.random() < 0.1 else rng.choice(["a", "b", "ab", "é"]) for _ in range(rows)], pa.string()),
        "id": pa.array(range(rows), pa.int64()),
    })
    table = pa.Table.from_batches(table.to_batches(max_chunksize=rng.choice([1, 9, 40, 500])), table.schema)
    zones, version = ZoneMaps(), _Version()
    for _ in range(10):
        keys = [SortKey(c, rng.random() < 0.5, rng.random() < 0.5) for c in rng.sample(["a", "s"], rng.randrange(1, 3))]
        order = [*keys, SortKey("id", rng.random() < 0.5)]  # unique last key: one right answer
        limit = rng.choice([0, 1, 5, 50, 1000])
        filters = [Filter("a", ">=", value(rng.randrange(-25, 10)))] if rng.random() < 0.5 else []
        expr, _ = compile_filters(filters, table.schema)
        kept = zones.candidates(version, table, filters)
        batches = [table.to_batches()[i] for i in kept]
        first = order[0].column
        usable = not order[0].nulls_first or all(b.column(first).null_count == 0 for b in batches)
        zone_list = [zones.zones(version, table, first)[i] for i in kept] if usable else None
        got = top_rows(batches, table.schema, ["id", "a"], expr, limit, order, zone_list).to_pylist()
        whole = table.filter(expr) if expr is not None else table
        ranked = whole.take(pc.sort_indices(whole, sort_keys=[
            (k.column, "descending" if k.descending else "ascending", "at_start" if k.nulls_first else "at_end")
            for k in order])).select(["id", "a"]).to_pylist()[:limit]
        assert got == ranked, (order, limit, filters)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(8))
def test_counts_and_extremes_in_the_sidecar_are_those_of_the_whole_table(seed: int, kind: str) -> None:
    rng = random.Random(2000 + seed)
    value = KINDS[kind][1]
    rows = rng.randrange(0, 300)
    ids = sorted(rng.randrange(-40, 40) for _ in range(rows)) if rng.random() < 0.5 else \
        [rng.randrange(-40, 40) for _ in range(rows)]
    table = _table([None if rng.random() < 0.1 else i for i in ids],
                   [None if rng.random() < 0.2 else rng.choice(["a", "b", "é"]) for _ in range(rows)],
                   rng.choice([1, 9, 40, 500]), kind)
    accel = ArrowAccelerator()
    accel.replace("t", pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
    aggregates = [("count", None), ("count", "name"), ("min", "id"), ("max", "id"), ("max", "name")]
    for _ in range(10):
        filters = [Filter("id", rng.choice([">=", "<", "="]), value(rng.randrange(-45, 45)))] if rng.random() < 0.7 else []
        got = accel.exact_scan("t", [], filters, None, (), aggregates).read_all().to_pylist()
        expr, _ = compile_filters(filters, table.schema)
        whole = table.filter(expr) if expr is not None else table
        want = {"count_0": whole.num_rows, "count_1": pc.count(whole["name"]).as_py(),
                "min_2": pc.min(whole["id"]).as_py(), "max_3": pc.max(whole["id"]).as_py(),
                "max_4": pc.max(whole["name"]).as_py()}
        assert got == [want], filters


class _Watched(list):
    """The batches, noting which are read."""

    def __init__(self, items) -> None:
        super().__init__(items)
        self.read: list[int] = []

    def __getitem__(self, i):
        self.read.append(i)
        return super().__getitem__(i)


def test_a_table_in_key_order_is_read_only_as_far_as_the_first_rows_go() -> None:
    table = pa.Table.from_batches(pa.table({"id": pa.array(range(10_000), pa.int64())}).to_batches(max_chunksize=1000))
    zones, version = ZoneMaps(), _Version()
    filters = [Filter("id", ">=", 4500)]
    kept = zones.candidates(version, table, filters)
    assert kept == list(range(4, 10))
    batches = _Watched(table.to_batches()[i] for i in kept)
    all_zones = zones.zones(version, table, "id")
    expr, _ = compile_filters(filters, table.schema)
    top = top_rows(batches, table.schema, ["id"], expr, 700, [SortKey("id")], [all_zones[i] for i in kept])
    assert top.column("id").to_pylist() == list(range(4500, 5200))
    assert batches.read == [0, 1]  # 4000-4999 and 5000-5999; the batches after them hold no better rows
    batches = _Watched(table.to_batches())
    top = top_rows(batches, table.schema, ["id"], None, 3, [SortKey("id", descending=True, nulls_first=True)],
                   zones.zones(version, table, "id"))
    assert top.column("id").to_pylist() == [9999, 9998, 9997] and batches.read == [9]


@pytest.mark.parametrize("form", ["streamed", "ordered", "counted"])
def test_a_scan_in_the_sidecar_stops_at_its_deadline_and_when_cancelled(form: str) -> None:
    # A lookup that matches nothing yields no batch, so the checks above it (between batches
    # handed on) never run: the scan itself must stop at the deadline or a cancel.
    accel = ArrowAccelerator()
    batches = pa.table({"id": pa.array(range(100_000), pa.int64())}).to_batches(max_chunksize=1000)
    accel.replace("t", pa.RecordBatchReader.from_batches(batches[0].schema, batches))
    nothing = Filter("", "or", (Filter("id", "<", -1), Filter("id", ">", 10**9)))  # no zone map rules it out
    ordered, counted = form == "ordered", form == "counted"
    filters, order = [nothing], [SortKey("id")] if ordered else []
    aggregates = [("count", None), ("max", "id")] if counted else []
    scan = lambda: accel.exact_scan("t", ["id"], filters, 5 if ordered else None, order, aggregates).read_all()  # noqa: E731
    assert scan().num_rows == (1 if counted else 0)  # no deadline, no cancel: it runs to its end
    token = CALLER.set(Caller(deadline=time.monotonic() - 1))
    try:
        with pytest.raises(QueryTimeout, match="deadline"):
            scan()
    finally:
        CALLER.reset(token)
    scope = CancelScope()
    token = CALLER.set(Caller(scope=scope))
    try:
        reader = accel.exact_scan("t", ["id"], filters, None) if form == "streamed" else None
        scope.cancel()  # the client went away (after the scan was opened, for the streamed form)
        with pytest.raises(RequestCancelled):
            reader.read_all() if reader is not None else scan()
    finally:
        CALLER.reset(token)
