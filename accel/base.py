"""The accelerator protocol as the accelerators (accel/arrow.py, accel/duckdb.py) really are:
a local copy of datasets that is swapped, appended, trimmed and scanned; optional capabilities
are named Protocols the engine asks for with isinstance()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

import pyarrow as pa

from connectors.base import Filter


@runtime_checkable
class Accelerator(Protocol):
    """One accelerator instance (an Arrow store, or one DuckDB database) holding many tables."""

    engine: str  # "arrow" | "duckdb"
    instance_id: str  # datasets with equal instance ids can be joined inside this engine

    def has_table(self, name: str) -> bool: ...

    def schema(self, name: str) -> pa.Schema: ...

    def row_count(self, name: str) -> int: ...

    def replace(self, name: str, reader: pa.RecordBatchReader, primary_key: Sequence[str] = (),
                source: str | None = None, version: str | None = None) -> int:
        """Load `reader` as the new content of `name` atomically (readers never see a partial
        table), recording the `source` and source `version` it came from; return the row count."""

    def append(self, name: str, reader: pa.RecordBatchReader, primary_key: Sequence[str],
               on_conflict: Mapping[str, str], source: str | None = None) -> int:
        """Add rows; with a primary key, conflicting rows are dropped or upserted. Returns rows added or changed."""

    def delete_keys(self, name: str, keys: pa.Table) -> int:
        """Delete the rows whose key (the columns of `keys`) is one of `keys`' rows."""

    def delete_older_than(self, name: str, column: str, cutoff: object) -> int:
        """Retention: delete rows whose `column` < cutoff; return rows deleted."""

    def max_value(self, name: str, column: str) -> object:
        """The largest value of `column` (the append watermark), None when empty."""

    def loaded_version(self, name: str) -> str | None:
        """The source version recorded by the last load of `name`."""

    def scan(self, name: str, columns: Sequence[str] | None, filters: Sequence[Filter],
             limit: int | None) -> pa.RecordBatchReader: ...

    def close(self) -> None: ...


@runtime_checkable
class AltersColumns(Protocol):
    """Follows a source's column changes in place (add, rename, drop) instead of reloading."""

    def alter_columns(self, name: str, changes: Sequence[tuple]) -> None: ...


@dataclass(frozen=True)
class TableIndex:
    """An index a dataset's table carries (`acceleration.indexes`): its columns, and whether
    their values must be unique."""

    columns: tuple[str, ...]
    unique: bool = False


@runtime_checkable
class KeepsIndexes(Protocol):
    """Builds the declared indexes of a table with each load, in the load's own transaction
    (a load whose data breaks a unique index fails and leaves the last good data)."""

    def declare_indexes(self, name: str, indexes: Sequence[TableIndex]) -> None: ...

    def has_declared_indexes(self, name: str) -> bool:
        """True when the stored table carries exactly the declared indexes (a file-mode
        restart may serve it as it is)."""


@runtime_checkable
class RemembersLoads(Protocol):
    """Keeps its tables across restarts (file mode) with the source each was loaded from."""

    def loaded_source(self, name: str) -> str | None: ...

    def loaded_version(self, name: str) -> str | None: ...
