"""Zone maps: each batch's smallest and largest value of a column, so a lookup skips the batches
that cannot hold its rows (an id looked up in a table loaded in id order reads one batch of
sixteen). Worked out per column on its first lookup and kept while the table version lives."""

from __future__ import annotations

import threading
import weakref
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from connectors.arrow_filters import comparable_scalar, order_key, orderable
from connectors.base import Filter

Zone = tuple[object, object] | None  # a batch's (min, max) of a column; None: no value but NULLs
_PRUNING_OPS = frozenset({"=", "<", "<=", ">", ">=", "in"})


class ZoneMaps:
    """The zone maps of table versions, held weakly by the object owning each version."""

    def __init__(self) -> None:
        self._maps: "weakref.WeakKeyDictionary[object, dict[str, list[Zone]]]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def candidates(self, owner: object, table: pa.Table, filters: Sequence[Filter]) -> list[int]:
        """The indexes of `table`'s batches that may hold rows matching every filter (a
        conjunction), in order. Only `column op value` filters on `orderable` columns whose values
        convert exactly to the column's type prune; any other filter keeps every batch."""
        keep = [True] * len(table.to_batches())
        for f in filters:
            if f.op not in _PRUNING_OPS or f.column not in table.schema.names or len(keep) <= 1:
                continue
            values = _keys(f, table.schema.field(f.column).type)
            if values is None:
                continue
            for i, zone in enumerate(self.zones(owner, table, f.column)):
                keep[i] = keep[i] and _may_match(zone, f.op, values)
        return [i for i, k in enumerate(keep) if k]

    def zones(self, owner: object, table: pa.Table, column: str) -> list[Zone]:
        """Each of `table`'s batches' (min, max) of `column` (None: only NULLs), worked out once
        per table version (`owner`) and column."""
        with self._lock:
            known = self._maps.setdefault(owner, {}).get(column)
        if known is not None:
            return known
        zones: list[Zone] = []
        for batch in table.to_batches():
            extremes = pc.min_max(batch.column(column))
            low, high = order_key(extremes["min"]), order_key(extremes["max"])
            zones.append(None if low is None else (low, high))
        with self._lock:
            self._maps.setdefault(owner, {})[column] = zones
        return zones


def _keys(f: Filter, typ: pa.DataType) -> list[object] | None:
    """The filter's values as zone keys, or None when it cannot prune (a type pyarrow orders
    otherwise than SQL, or a value not exactly of the column's type)."""
    if not orderable(typ):
        return None
    values = f.value if f.op == "in" else (f.value,)
    scalars = [comparable_scalar(v, typ) for v in values] if isinstance(values, (tuple, list)) else []
    if not scalars or any(s is None or s.type != typ for s in scalars):
        return None
    return [order_key(s) for s in scalars]


def _may_match(zone: Zone, op: str, values: Sequence[object]) -> bool:
    if zone is None:  # only NULLs: no comparison is true
        return False
    low, high = zone
    if op in ("=", "in"):
        return any(low <= v <= high for v in values)
    value = values[0]
    if op == "<":
        return low < value
    if op == "<=":
        return low <= value
    if op == ">":
        return high > value
    return high >= value  # ">="
