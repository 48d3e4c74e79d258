"""Primary-key merges for append refreshes (Arrow side), done with Arrow joins, not Python loops.

Joins run on the key columns plus a row index only, so payload columns of any type (lists,
structs) are carried with `take`, which every Arrow type supports.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

_ROW = "__satchel_row"


def _row_numbers(n: int) -> pa.Array:
    """0..n-1 built in Arrow (no Python loop): the running sum of n ones, minus one."""
    ones = pc.fill_null(pa.nulls(n, pa.int64()), 1)
    return pc.subtract(pc.cumulative_sum(ones), 1)


def _indexed_keys(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.select(keys).append_column(_ROW, _row_numbers(table.num_rows))


def _ascending(rows: pa.ChunkedArray) -> pa.Array:
    rows = rows.combine_chunks()
    return rows.take(pc.sort_indices(rows))


def dedupe_last(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Keep the last row of each key (a later row of the same batch is the newer version)."""
    if table.num_rows == 0:
        return table
    last = _indexed_keys(table, list(keys)).group_by(list(keys), use_threads=False).aggregate([(_ROW, "max")])
    return table.take(_ascending(last[f"{_ROW}_max"]))


def rows_without_keys(table: pa.Table, other: pa.Table, keys: list[str]) -> pa.Table:
    """Rows of `table` whose key does not appear in `other`."""
    if table.num_rows == 0 or other.num_rows == 0:
        return table
    anti = _indexed_keys(table, keys).join(other.select(keys), keys=keys, join_type="left anti", use_threads=False)
    return table.take(_ascending(anti[_ROW]))


def merge_by_key(
    old: pa.Table, new: pa.Table, primary_key: Sequence[str], on_conflict: Mapping[str, str]
) -> tuple[pa.Table, int]:
    """Merge `new` into `old`: without a key, plain append; with one, `upsert` (the default when
    a key is set and no policy says `drop`) replaces old rows, `drop` keeps them."""
    new = new.select(old.schema.names).cast(old.schema)
    if not primary_key:
        return pa.concat_tables([old, new]), new.num_rows
    keys = list(primary_key)
    new = dedupe_last(new, keys)
    if on_conflict and all(v == "drop" for v in on_conflict.values()):
        fresh = rows_without_keys(new, old, keys)
        return pa.concat_tables([old, fresh]), fresh.num_rows
    kept = rows_without_keys(old, new, keys)
    return pa.concat_tables([kept, new]), new.num_rows
