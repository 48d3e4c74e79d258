"""accel.zone_maps: the batches a lookup skips are exactly ones that cannot hold a matching row."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from accel.arrow import ArrowAccelerator
from accel.zone_maps import ZoneMaps
from connectors.arrow_filters import compile_filters
from connectors.base import Filter


class _Version:
    """Stands for the object owning a table version (a SharedTable in the accelerator)."""


def _table(ids: list[int | None], names: list[str | None], batch: int) -> pa.Table:
    table = pa.table({"id": pa.array(ids, pa.int32()), "name": pa.array(names, pa.string())})
    return pa.Table.from_batches(table.to_batches(max_chunksize=batch))


def _matching(table: pa.Table, filters: list[Filter]) -> list[dict]:
    expr, _ = compile_filters(filters, table.schema)
    return table.filter(expr).to_pylist() if table.num_rows else []


def test_batches_that_cannot_match_are_skipped_and_no_other() -> None:
    table = _table(list(range(100)), [f"n{i:03d}" for i in range(100)], 10)
    zones, version = ZoneMaps(), _Version()
    kept = lambda *filters: [b.column(0)[0].as_py() for b in zones.batches(version, table, list(filters))]  # noqa: E731
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


def test_a_batch_of_nulls_matches_no_comparison() -> None:
    table = _table([None] * 10 + list(range(10)), [None] * 20, 10)
    zones = ZoneMaps()
    assert [b.column(0)[0].as_py() for b in zones.batches(_Version(), table, [Filter("id", ">=", 0)])] == [0]
    assert len(zones.batches(_Version(), table, [Filter("id", "is_null")])) == 2


@pytest.mark.parametrize("seed", range(40))
def test_pruned_batches_give_the_same_rows_as_the_whole_table(seed: int) -> None:
    rng = random.Random(seed)
    rows = rng.randrange(0, 400)
    clustered = rng.random() < 0.5  # loaded in key order (zones prune) or not (they keep all)
    ids = sorted(rng.randrange(-50, 50) for _ in range(rows)) if clustered else [rng.randrange(-50, 50) for _ in range(rows)]
    ids = [None if rng.random() < 0.1 else i for i in ids]
    names = [None if rng.random() < 0.1 else rng.choice(["a", "ab", "b", "ba", "é", "z"]) for _ in range(rows)]
    table = _table(ids, names, rng.choice([1, 7, 50, 1000]))
    zones, version = ZoneMaps(), _Version()
    for _ in range(25):
        filters = []
        for _ in range(rng.randrange(1, 3)):
            if rng.random() < 0.7:
                op = rng.choice(["=", "<", "<=", ">", ">=", "in", "!="])
                value = tuple(rng.randrange(-60, 60) for _ in range(3)) if op == "in" else rng.randrange(-60, 60)
                filters.append(Filter("id", op, value))
            else:
                op = rng.choice(["=", "<", ">=", "in"])
                pick = lambda: rng.choice(["a", "ab", "b", "c", "é", ""])  # noqa: E731
                filters.append(Filter("name", op, (pick(), pick()) if op == "in" else pick()))
        pruned = pa.Table.from_batches(zones.batches(version, table, filters), table.schema)
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
