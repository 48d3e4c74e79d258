"""`from: file:<path>` — Parquet, CSV, JSON and NDJSON files on the local file system.

The path is one file, a directory (every non-hidden file of the format, recursively; names
starting with `.` or `_` are skipped) or a glob (`data/*.csv`, `logs/**/*.parquet`). Relative
paths resolve against the spicepod's directory; `file:///abs/path` is accepted too.

Params: `file_format` (parquet | csv | json | ndjson, `jsonl` = ndjson; default from the file
extension), `csv_has_header` (default true; without a header columns are column_1, column_2,
...), `csv_delimiter` (one character, `\\t` for tab).

The schema is inferred on first use and then frozen; the file list is re-read on every scan, so
a refresh sees new, changed and removed files.
"""

from __future__ import annotations

import glob
import os
import threading
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import ConnectorError

from ..base import DatasetSpec, Filter, FilterSupport
from ..params import (
    EXTENSIONS,
    check_params,
    check_type_action,
    format_of_path,
    parse_bool,
    parse_delimiter,
    parse_format,
)
from .filesource import FileSource, ReadOptions

FILE_PARAMS = ("file_format", "csv_has_header", "csv_delimiter")


def read_options(spec: DatasetSpec) -> ReadOptions:
    """The CSV options in `spec.params` (validated)."""
    params = spec.params
    return ReadOptions(
        has_header=parse_bool(spec.name, "csv_has_header", params.get("csv_has_header", "true")),
        delimiter=parse_delimiter(spec.name, params.get("csv_delimiter", ",")),
    )


def explicit_format(spec: DatasetSpec) -> str | None:
    value = spec.params.get("file_format")
    return parse_format(spec.name, value) if value is not None else None


class FileConnector:
    """Reads a file, directory or glob of one format."""

    def __init__(self, spec: DatasetSpec):
        check_params(spec.name, "file", spec.params, FILE_PARAMS)
        check_type_action(spec.name, spec.unsupported_type_action)
        self.spec = spec
        self._format = explicit_format(spec)
        self._source = FileSource(spec, read_options(spec))
        self._lock = threading.Lock()
        raw = spec.path[2:] if spec.path.startswith("//") else spec.path
        if not raw:
            raise ConnectorError(f"dataset '{spec.name}': 'from: file:' needs a path")
        path = os.path.expanduser(raw)
        self.location = os.path.normpath(path if os.path.isabs(path) else os.path.join(spec.base_dir, path))

    # -- Connector ---------------------------------------------------------------------------

    def schema(self) -> pa.Schema:
        with self._lock:
            if not self._source.inferred:
                files = self.files()
                self._source.infer(files, self._format_of(files))
            return self._source.schema()

    def classify_filters(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        self.schema()
        return self._source.classify(filters)

    def scan(self, columns: Sequence[str] | None = None, filters: Sequence[Filter] = (),
             limit: int | None = None) -> pa.RecordBatchReader:
        self.schema()
        return self._source.scan(self.files(), columns, filters, limit)

    def close(self) -> None:
        """Nothing to release: every scan opens and closes its own files."""

    def expected_rows(self) -> int | None:
        """Rows of a full load, from the Parquet footers; None for other formats and for files it
        cannot read (progress is best effort: the load itself reports what is wrong)."""
        try:
            files = self.files()
            if self._format_of(files) != "parquet":
                return None
            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        except (OSError, pa.ArrowException, ConnectorError):
            return None

    # -- files -------------------------------------------------------------------------------

    def files(self) -> list[str]:
        """The files the dataset reads now, sorted (an error if there are none)."""
        name, where = self.spec.name, self.location
        if glob.has_magic(where):
            found = sorted(p for p in glob.glob(where, recursive=True) if os.path.isfile(p))  # glob skips dot-files
            if not found:
                raise ConnectorError(f"dataset '{name}': no files match '{where}'")
            return found
        if os.path.isdir(where):
            return self._directory_files(where)
        if os.path.isfile(where):
            return [where]
        raise ConnectorError(f"dataset '{name}': file not found: {where}")

    def _directory_files(self, root: str) -> list[str]:
        found: list[str] = []
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = [d for d in subdirs if not d.startswith((".", "_"))]
            found += [os.path.join(directory, n) for n in names if not n.startswith((".", "_"))]
        found.sort()
        if self._format:
            matching = [p for p in found if format_of_path(p) == self._format]
            found = matching or found  # files without a known extension (part-00000) when the format is given
        else:
            found = [p for p in found if format_of_path(p)]
        if not found:
            raise ConnectorError(
                f"dataset '{self.spec.name}': no data files in directory {root} "
                f"(looked for {', '.join(sorted(EXTENSIONS))}; set params.file_format for other names)")
        return found

    def _format_of(self, files: list[str]) -> str:
        if self._format:
            return self._format
        formats = {format_of_path(p) for p in files}
        if None in formats:
            unknown = next(p for p in files if format_of_path(p) is None)
            raise ConnectorError(
                f"dataset '{self.spec.name}': cannot tell the format of {unknown} from its extension; "
                f"set params.file_format to one of parquet, csv, json, ndjson")
        if len(formats) > 1:
            raise ConnectorError(
                f"dataset '{self.spec.name}': {self.location} mixes formats ({', '.join(sorted(formats))}); "
                f"point it at files of one format")
        return formats.pop()

