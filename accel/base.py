"""The Accelerator protocol: a local copy of datasets that can be swapped, appended and queried."""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import pyarrow as pa

from connectors.base import Filter


class Accelerator(Protocol):
    """One accelerator instance (an Arrow store, or one DuckDB database) holding many tables."""

    engine: str  # "arrow" | "duckdb"
    instance_id: str  # datasets with equal instance ids can be joined inside this engine

    def has_table(self, name: str) -> bool: ...

    def schema(self, name: str) -> pa.Schema: ...

    def row_count(self, name: str) -> int: ...

    def replace(self, name: str, reader: pa.RecordBatchReader, primary_key: Sequence[str] = ()) -> int:
        """Load `reader` as the new content of `name`, atomically; return the row count."""

    def append(
        self,
        name: str,
        reader: pa.RecordBatchReader,
        primary_key: Sequence[str],
        on_conflict: Mapping[str, str],
    ) -> int:
        """Add rows; with a primary key, conflicting rows are dropped or upserted. Returns rows added or changed."""

    def delete_older_than(self, name: str, column: str, cutoff: object) -> int:
        """Retention: delete rows whose `column` < cutoff; return rows deleted."""

    def max_value(self, name: str, column: str) -> object:
        """The largest value of `column` (the append watermark), None when empty."""

    def scan(
        self, name: str, columns: Sequence[str] | None, filters: Sequence[Filter], limit: int | None
    ) -> pa.RecordBatchReader: ...

    def close(self) -> None: ...
