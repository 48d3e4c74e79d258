"""Aggregates the federated engine (DataFusion) lacks, as its aggregate functions over whole
batches: PostgreSQL's `mode() WITHIN GROUP (ORDER BY x [DESC])`, the most frequent non-NULL x,
the first in that order among equally frequent ones; NULL when there is none.

DataFusion's Python aggregates take fixed argument types: one function per type, named by
`mode_function`, which pg_semantics calls with x cast to that type. Each group keeps its
distinct values and their counts (memory grows with the distinct values, not the rows)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from datafusion import Accumulator, SessionContext, udaf

# a kind of x -> (the SQL type x is cast to, its Arrow type); a decimal's digits all fit in (38, 10)
# unless it has over 28 before the point or 10 after it, and it is cast back to its own type after
MODE_TYPES: dict[str, tuple[str, pa.DataType]] = {
    "BIGINT": ("BIGINT", pa.int64()), "DOUBLE": ("DOUBLE", pa.float64()), "VARCHAR": ("VARCHAR", pa.string()),
    "BOOLEAN": ("BOOLEAN", pa.bool_()), "DATE": ("DATE", pa.date32()), "TIMESTAMP": ("TIMESTAMP", pa.timestamp("ns")),
    "DECIMAL": ("DECIMAL(38, 10)", pa.decimal128(38, 10)),
}


def mode_function(kind: str) -> str:
    return f"satchel_mode_{kind.lower()}"


def _mode(kind: pa.DataType) -> type[Accumulator]:
    class Mode(Accumulator):
        def __init__(self) -> None:
            self._counts = pa.table({"v": pa.array([], kind), "n": pa.array([], pa.int64())})
            self._descending = False

        def _add(self, counted: pa.Table) -> None:
            both = pa.concat_tables([self._counts, counted])
            self._counts = both.group_by("v").aggregate([("n", "sum")]).rename_columns(["v", "n"])

        def update(self, values: pa.Array, descending: pa.Array) -> None:
            if len(descending):
                self._descending = bool(descending[0].as_py())
            counted = pc.value_counts(values.drop_null())
            self._add(pa.table({"v": counted.field("values"), "n": counted.field("counts")}))

        def merge(self, states: list[pa.Array]) -> None:
            values, counts, descending = states
            for i in range(len(values)):  # one partial state per partition
                if values[i].is_valid:
                    self._add(pa.table({"v": values[i].values, "n": counts[i].values}))
                    self._descending = self._descending or bool(descending[i].as_py())

        def state(self) -> list[pa.Scalar]:
            return [pa.scalar(self._counts.column("v").combine_chunks(), pa.list_(kind)),
                    pa.scalar(self._counts.column("n").combine_chunks(), pa.list_(pa.int64())),
                    pa.scalar(self._descending)]

        def evaluate(self) -> pa.Scalar:
            if self._counts.num_rows == 0:
                return pa.scalar(None, kind)
            counts = self._counts.column("n")
            most = self._counts.column("v").filter(pc.equal(counts, pc.max(counts)))
            return (pc.max if self._descending else pc.min)(most)

    return Mode


def register(ctx: SessionContext) -> None:
    for name, (_, kind) in MODE_TYPES.items():
        ctx.register_udaf(udaf(_mode(kind), [kind, pa.bool_()], kind,
                               [pa.list_(kind), pa.list_(pa.int64()), pa.bool_()], "immutable", mode_function(name)))
