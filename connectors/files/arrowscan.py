"""Parquet and CSV through pyarrow.dataset: schema inferred once, projection and filters
pushed into the scan (Parquet prunes row groups by statistics), batches streamed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine.errors import ConnectorError

from ..source_types import normalize_type, unservable_reason

INFER_BYTES = 4 << 20  # CSV type inference reads this much of each sampled file
INFER_FILES = 16  # CSV files sampled for a directory or glob (Parquet reads every footer)
BATCH_ROWS = 64 * 1024


@dataclass(frozen=True)
class Inferred:
    """A format's schema (normalized, before unsupported_type_action) and its problem columns."""

    schema: pa.Schema
    unsupported: dict[str, str]  # column -> what Satchel cannot serve about it


class ArrowFormat:
    """Parquet or CSV files read by pyarrow.dataset with a frozen schema."""

    def __init__(self, dataset: str, fmt: str, has_header: bool = True, delimiter: str = ","):
        self.dataset, self.fmt = dataset, fmt
        self.has_header, self.delimiter = has_header, delimiter

    # -- schema ------------------------------------------------------------------------------

    def infer(self, paths: Sequence[str]) -> Inferred:
        if self.fmt == "parquet":
            schemas = [self._parquet_schema(p) for p in paths]
        else:
            schemas = [self._csv_schema(p) for p in paths[:INFER_FILES]]
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive") if len(schemas) > 1 else schemas[0]
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ConnectorError(f"dataset '{self.dataset}': the files have incompatible schemas: {e}") from e
        unit = "us" if self.fmt == "csv" else None
        schema = pa.schema([f.with_type(normalize_type(f.type, unit)) for f in schema])
        _check_names(self.dataset, schema.names)
        unsupported = {f.name: r for f in schema if (r := unservable_reason(f.type))}
        return Inferred(schema, unsupported)

    def _parquet_schema(self, path: str) -> pa.Schema:
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError) as e:
            raise ConnectorError(f"dataset '{self.dataset}': cannot read Parquet file {path}: {e}") from e
        return pa.schema([_keep_description(f) for f in schema])

    def _csv_schema(self, path: str) -> pa.Schema:
        read = pcsv.ReadOptions(block_size=INFER_BYTES, autogenerate_column_names=not self.has_header)
        try:
            with pcsv.open_csv(path, read_options=read, parse_options=self._parse_options(),
                               convert_options=self._convert_options()) as reader:
                schema = reader.schema
        except (pa.ArrowException, OSError) as e:
            raise ConnectorError(f"dataset '{self.dataset}': cannot read CSV file {path}: {e}") from e
        if not self.has_header:  # same names as Spice / DataFusion: column_1, column_2, ...
            schema = pa.schema([f.with_name(f"column_{i + 1}") for i, f in enumerate(schema)])
        return schema

    # -- scan --------------------------------------------------------------------------------

    def open(self, paths: Sequence[str], physical: pa.Schema, columns: Sequence[str], filter_columns: Sequence[str],
             expression: ds.Expression | None, limit: int | None) -> tuple[pa.RecordBatchReader, Callable[[], None] | None]:
        """A reader of `columns` (physical types) with `expression` applied in the scan."""
        dataset = ds.dataset(list(paths), schema=physical, format=self._file_format(physical))
        scanner = dataset.scanner(columns=list(columns), filter=expression, batch_size=BATCH_ROWS)
        return scanner.to_reader(), None

    def _file_format(self, physical: pa.Schema) -> ds.FileFormat:
        if self.fmt == "parquet":
            return ds.ParquetFileFormat()
        read = pcsv.ReadOptions(block_size=1 << 20, column_names=None if self.has_header else physical.names)
        return ds.CsvFileFormat(parse_options=self._parse_options(), convert_options=self._convert_options(),
                                read_options=read)

    def _parse_options(self) -> pcsv.ParseOptions:
        return pcsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True)

    @staticmethod
    def _convert_options() -> pcsv.ConvertOptions:
        # Only an empty unquoted field is NULL; "" is the empty string; "NA"/"null" are text.
        return pcsv.ConvertOptions(null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False)


def _keep_description(f: pa.Field) -> pa.Field:
    """Drop writer metadata from a field, keeping a source column description."""
    meta = f.metadata or {}
    return f.with_metadata({b"description": meta[b"description"]}) if b"description" in meta else f.remove_metadata()


def _check_names(dataset: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConnectorError(f"dataset '{dataset}': column '{name}' appears more than once")
        seen.add(name)
