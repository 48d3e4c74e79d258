"""The first n rows of a table in an order (`ORDER BY ... LIMIT n`), holding at most n rows and
one batch. With zone maps of the first sort key, batches are visited from the most promising
on, and the visit stops at the first batch that cannot hold a row ranking before the n-th kept:
in a table loaded in key order, `WHERE id >= x ORDER BY id LIMIT 1000` reads one batch or two."""

from __future__ import annotations

from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from connectors.arrow_filters import order_key
from connectors.base import SortKey

from .zone_maps import Zone


def top_rows(batches: Sequence[pa.RecordBatch], schema: pa.Schema, columns: Sequence[str],
             expr: pc.Expression | None, limit: int, order: Sequence[SortKey],
             zones: Sequence[Zone] | None = None, check: Callable[[], None] = lambda: None) -> pa.Table:
    """The first `limit` rows of `batches` matching `expr` in `order`, as a table of `columns`.
    `zones`: each batch's (min, max) of the first key; pass them only when NULLs of that key
    rank last (`NULLS LAST`, or a key without NULLs). `check()` runs before each batch (it
    raises to stop: a deadline passed, a client gone)."""
    keys = [(k.column, "descending" if k.descending else "ascending", "at_start" if k.nulls_first else "at_end")
            for k in order]
    needed = list(dict.fromkeys([*columns, *(k.column for k in order)]))
    first = order[0]
    visits = list(range(len(batches)))
    if zones is not None:  # the batch holding the best first-key value first; batches of NULLs last
        visits.sort(key=lambda i: (zones[i] is None, _best(zones[i], first.descending)))
    top: pa.Table | None = None
    for i in visits if limit > 0 else ():
        if zones is not None and top is not None and top.num_rows >= limit \
                and _ranks_after(zones[i], order_key(top.column(first.column)[limit - 1]), first.descending):
            break
        check()
        part = ds.dataset(pa.Table.from_batches([batches[i]], schema)).scanner(columns=needed, filter=expr).to_table()
        if part.num_rows:
            top = _first(part if top is None else pa.concat_tables([top, part]), limit, keys)
    if top is None:
        return pa.Table.from_batches([], schema).select(list(columns))
    return top.select(list(columns))


def _best(zone: Zone, descending: bool) -> object:
    if zone is None:
        return 0
    return _Reversed(zone[1]) if descending else zone[0]


def _ranks_after(zone: Zone, kept: object, descending: bool) -> bool:
    """Whether every row of a batch with `zone` ranks after a row whose first key is `kept`."""
    if kept is None:  # the n-th kept row's key is NULL: any value ranks before it, and NULLs tie with it
        return False
    if zone is None:
        return True
    return zone[1] < kept if descending else zone[0] > kept


def _first(table: pa.Table, limit: int, keys: list[tuple[str, str, str]]) -> pa.Table:
    """`table`'s first `limit` rows in order (sorted, so the n-th row bounds the next visits)."""
    if table.num_rows > limit and all(table.column(k[0]).null_count == 0 for k in keys):
        # no NULLs to place: a partial selection first, then a sort of what it kept
        table = table.take(pc.select_k_unstable(table, limit, sort_keys=[k[:2] for k in keys]))
    return table.take(pc.sort_indices(table, sort_keys=keys)[:limit])


class _Reversed:
    """A value that sorts in the opposite order (a descending key's visiting order)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __lt__(self, other: "_Reversed") -> bool:
        return other.value < self.value
