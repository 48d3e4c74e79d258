"""Local files of one format behind the Connector semantics; shared by `file:` and `http(s):`.

The schema is inferred once (first `infer`) and frozen: later scans read with exactly that
schema, so a refresh never sees types flip. Scans stream batches; projection, the exact filters
and (when every filter is exact) the limit are pushed into the format reader.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConnectorError, SatchelError

from ..arrow_filters import compile_filters
from ..base import DatasetSpec, Filter, FilterSupport, checked_projection, filter_columns, with_descriptions
from ..source_types import resolve_unsupported
from .arrowscan import ArrowFormat
from .json_reader import JsonFormat

log = logging.getLogger("satchel.connectors")


@dataclass(frozen=True)
class ReadOptions:
    """Format options from the dataset params."""

    has_header: bool = True
    delimiter: str = ","


class FileSource:
    """Schema inference and scans over local files (paths supplied per call)."""

    def __init__(self, spec: DatasetSpec, options: ReadOptions):
        self.spec = spec
        self.options = options
        self._reader: ArrowFormat | JsonFormat | None = None
        self._physical: pa.Schema | None = None
        self._schema: pa.Schema | None = None
        self._text: frozenset[str] = frozenset()

    @property
    def inferred(self) -> bool:
        return self._schema is not None

    def infer(self, paths: Sequence[str], fmt: str) -> pa.Schema:
        """Infer and freeze the schema from `paths` (a no-op once inferred)."""
        if self._schema is not None:
            return self._schema
        name = self.spec.name
        reader = JsonFormat(name, fmt) if fmt in ("json", "ndjson") else ArrowFormat(
            name, fmt, self.options.has_header, self.options.delimiter)
        inferred = reader.infer(paths)
        decisions = resolve_unsupported(name, self.spec.unsupported_type_action, inferred.unsupported)
        fields = [f.with_type(pa.string()) if decisions.get(f.name) == "string" else f
                  for f in inferred.schema if decisions.get(f.name) != "drop"]
        if not fields:
            raise ConnectorError(f"dataset '{name}': no columns to serve")
        unknown = sorted(set(self.spec.column_descriptions) - {f.name for f in fields})
        if unknown:
            log.warning("dataset '%s': descriptions given for unknown column(s): %s", name, ", ".join(unknown))
        self._reader, self._physical = reader, inferred.schema
        self._text = frozenset(c for c, d in decisions.items() if d == "string")
        self._schema = with_descriptions(pa.schema(fields), self.spec.column_descriptions)
        return self._schema

    def schema(self) -> pa.Schema:
        if self._schema is None:
            raise RuntimeError("FileSource.schema() before infer()")
        return self._schema

    def classify(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        return compile_filters(filters, self.schema(), self._text)[1]

    def scan(self, paths: Sequence[str], columns: Sequence[str] | None, filters: Sequence[Filter],
             limit: int | None, cleanup: Callable[[], None] | None = None) -> pa.RecordBatchReader:
        """Stream `paths` projected to `columns`; `cleanup` runs when the reader is done or dropped."""
        try:
            schema = self.schema()
            names = self._projection(columns)
            expression, support = compile_filters(filters, schema, self._text)
            if limit is not None and (limit < 0 or any(s is not FilterSupport.EXACT for s in support)):
                if limit < 0:
                    raise ConnectorError(f"dataset '{self.spec.name}': limit must be >= 0, got {limit}")
                limit = None  # a limit under a filter we do not apply would drop matching rows
            filtered = sorted(set().union(*(filter_columns(f) for f, s in zip(filters, support) if s is FilterSupport.EXACT)))
            try:
                reader, closer = self._reader.open(paths, self._physical, names, filtered, expression, limit)
            except SatchelError:
                raise
            except Exception as e:  # e.g. a file removed between listing and opening
                raise ConnectorError(f"dataset '{self.spec.name}': cannot read: {e}") from e
        except BaseException:
            if cleanup:
                cleanup()
            raise
        out = pa.schema([schema.field(n) for n in names])
        release = _Once([reader.close, closer, cleanup])
        batches = self._stream(reader, out, limit, release)
        weakref.finalize(batches, release)  # also when the reader is dropped before its first batch
        return pa.RecordBatchReader.from_batches(out, batches)

    def _projection(self, columns: Sequence[str] | None) -> list[str]:
        return checked_projection(self.spec.name, self.schema(), columns)

    def _stream(self, reader: pa.RecordBatchReader, out: pa.Schema, limit: int | None,
                release: Callable[[], None]) -> Iterator[pa.RecordBatch]:
        remaining = limit
        try:
            while remaining is None or remaining > 0:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                batch = self._conform(batch, out)
                if remaining is not None:
                    if batch.num_rows >= remaining:
                        batch = batch.slice(0, remaining)
                    remaining -= batch.num_rows
                yield batch
        except SatchelError:
            raise
        except Exception as e:  # pyarrow / DuckDB / OS errors while reading
            raise ConnectorError(f"dataset '{self.spec.name}': error while reading: {e}") from e
        finally:
            release()

    def _conform(self, batch: pa.RecordBatch, out: pa.Schema) -> pa.RecordBatch:
        """The reader's batch as `out`: column order, text conversion, field metadata."""
        if batch.schema.names != out.names:
            batch = batch.select(out.names)
        if not out.names:
            return batch
        arrays = []
        for array, field in zip(batch.columns, out):
            if array.type != field.type:
                array = pc.cast(array, field.type)  # unsupported_type_action: string, or a reader's variant
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, schema=out)


class _Once:
    """Calls each callable once, however many times it is invoked; errors are logged."""

    def __init__(self, callables: list[Callable[[], None] | None]):
        self._callables = [c for c in callables if c is not None]

    def __call__(self) -> None:
        callables, self._callables = self._callables, []
        for call in callables:
            try:
                call()
            except Exception as e:  # cleanup must not mask the real outcome
                log.warning("cleanup after a scan failed: %s", e)
