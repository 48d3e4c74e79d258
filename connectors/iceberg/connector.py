"""`from: iceberg:<namespace>.<table>` — an Apache Iceberg table, read with pyiceberg.

Catalogs: REST, SQL (SQLAlchemy: SQLite, PostgreSQL ...), Glue and Hive, by `iceberg_*`
params (connectors/iceberg/catalog.py), or a REST table URL as the path. Scans push the
projection, the filters (pyiceberg prunes partitions and data files with them; the rows are
then filtered exactly in Arrow, see connectors/iceberg/filters.py) and the limit, and stream
Arrow batches file by file.

Snapshots make refresh cheap: `source_version()` is the current snapshot id and schema id
(one catalog lookup, no data read); `scan_changes_since(version)` reads only the data files
that append snapshots added since `version` (None when anything else happened in between:
the caller reloads in full); `schema_changes_since(version)` lists the column additions,
renames and drops since `version` by Iceberg field id, so an accelerated copy can follow them
without a reload.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.expressions import BooleanExpression
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema as IcebergSchema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, ancestors_between_ids

from engine.errors import ConnectorError, MissingDependency

from ..arrow_filters import compile_filters
from ..base import DatasetSpec, Filter, FilterSupport, checked_projection, filter_columns, with_descriptions
from ..params import check_params, check_type_action
from ..source_types import normalize_type, resolve_unsupported
from .catalog import ICEBERG_PARAMS, CatalogSettings, parse_settings
from .filters import NO_FILTER, RowFilter, row_filter

log = logging.getLogger("satchel.connectors.iceberg.connector")

SchemaChange = tuple  # ("add", name, pa.DataType) | ("rename", old, new) | ("drop", name)


def served_type(typ: pa.DataType) -> pa.DataType:
    """The Arrow type Satchel serves for what pyiceberg reads: large strings/binaries/lists as
    the regular ones, UTC timestamps as tz "UTC", extension types as their storage."""
    typ = normalize_type(typ)
    if pa.types.is_large_string(typ):
        return pa.string()
    if pa.types.is_large_binary(typ):
        return pa.binary()
    if pa.types.is_timestamp(typ) and typ.tz in ("+00:00", "UTC", "Etc/UTC"):
        return pa.timestamp(typ.unit, "UTC")
    if pa.types.is_large_list(typ) or pa.types.is_list(typ):
        return pa.list_(served_type(typ.value_type))
    if pa.types.is_map(typ):
        return pa.map_(served_type(typ.key_type), served_type(typ.item_type))
    if pa.types.is_struct(typ):
        return pa.struct([pa.field(f.name, served_type(f.type), f.nullable) for f in typ])
    return typ


def format_version(snapshot_id: int | None, schema_id: int) -> str:
    return f"{snapshot_id if snapshot_id is not None else 'none'}:{schema_id}"


def parse_version(version: str) -> tuple[int | None, int] | None:
    try:
        snap, schema = version.split(":")
        return (None if snap == "none" else int(snap)), int(schema)
    except (ValueError, AttributeError):
        return None


class IcebergConnector:
    """One Iceberg table."""

    def __init__(self, spec: DatasetSpec):
        check_params(spec.name, "iceberg", spec.params, ICEBERG_PARAMS)
        check_type_action(spec.name, spec.unsupported_type_action)
        self.spec = spec
        self.settings: CatalogSettings = parse_settings(spec.name, spec.path, spec.params, spec.base_dir)
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._schema: pa.Schema | None = None
        self._schema_id: int | None = None
        self._pinned: int | None = None  # snapshot id scans read while a refresh loads it
        self.files_read = 0  # data files handed to readers so far (observability, tests)

    def __repr__(self) -> str:
        return f"IcebergConnector({self.spec.name!r}, {self.settings.catalog_type} catalog, {self.settings.table_name})"

    # -- catalog -----------------------------------------------------------------------------

    def _error(self, what: str, e: BaseException) -> ConnectorError:
        text = " ".join((str(e).strip() or type(e).__name__).split())
        return ConnectorError(f"dataset '{self.spec.name}': {what}: {self.settings.scrub(text)}")

    def _open_catalog(self) -> Catalog:
        if self._catalog is None:
            s = self.settings
            try:
                self._catalog = load_catalog(s.name, **s.properties)
            except ImportError as e:
                raise MissingDependency(f"dataset '{self.spec.name}': the Iceberg {s.catalog_type} catalog needs a "
                                        f"missing dependency ({e.name}): pip install 'pyiceberg[{s.catalog_type}]'") from None
            except Exception as e:  # noqa: BLE001 - any library error becomes a clear ConnectorError
                raise self._error(f"cannot open the Iceberg {s.catalog_type} catalog", e) from None
        return self._catalog

    def table(self) -> Table:
        """The table's current metadata (one catalog lookup)."""
        catalog = self._open_catalog()
        try:
            return catalog.load_table(self.settings.identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            raise ConnectorError(f"dataset '{self.spec.name}': Iceberg table {self.settings.table_name} does not "
                                 f"exist in the catalog (or the namespace does not)") from None
        except Exception as e:  # noqa: BLE001
            raise self._error(f"cannot load Iceberg table {self.settings.table_name}", e) from None

    # -- schema ------------------------------------------------------------------------------

    def schema(self) -> pa.Schema:
        with self._lock:
            if self._schema is None:
                self._set_schema(self.table())
            return self._schema

    def _set_schema(self, table: Table) -> None:
        ice = table.schema()
        self._schema = self._arrow_schema(ice)
        self._schema_id = ice.schema_id

    def _arrow_schema(self, ice: IcebergSchema) -> pa.Schema:
        fields, problems = [], {}
        for nested in ice.fields:
            try:
                typ = served_type(schema_to_pyarrow(IcebergSchema(nested), include_field_ids=False).field(0).type)
            except Exception as e:  # noqa: BLE001 - a type pyarrow cannot express
                problems[nested.name] = f"Iceberg type {nested.field_type} ({e})"
                continue
            typ = self.spec.column_types.get(nested.name, typ)  # the pod's types win
            fields.append((nested.name, typ, nested.doc))
        decisions = resolve_unsupported(self.spec.name, self.spec.unsupported_type_action, problems)
        out, docs = [], {}
        for nested in ice.fields:
            match = next((f for f in fields if f[0] == nested.name), None)
            if match is None:
                if decisions.get(nested.name) == "string":
                    out.append(pa.field(nested.name, pa.string()))
                continue
            out.append(pa.field(match[0], match[1]))
            if match[2]:
                docs[match[0]] = match[2]
        if not out:
            raise ConnectorError(f"dataset '{self.spec.name}': Iceberg table {self.settings.table_name} has no "
                                 f"columns to serve")
        return with_descriptions(pa.schema(out), {**docs, **self.spec.column_descriptions})

    # -- filters -----------------------------------------------------------------------------

    def classify_filters(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        return compile_filters(filters, self.schema())[1]

    def pruning_filter(self, filters: Sequence[Filter]) -> BooleanExpression:
        """The pyiceberg row filter a scan with `filters` plans with (for EXPLAIN and tests)."""
        return row_filter(filters, self.schema()).expression

    # -- scans -------------------------------------------------------------------------------

    def planned_files(self, filters: Sequence[Filter] = ()) -> list[str]:
        """The data files a scan with `filters` reads, after partition and metrics pruning."""
        scan = self._data_scan(self.table(), ("*",), row_filter(filters, self.schema()), None)
        return [task.file.file_path for task in scan.plan_files()]

    def _data_scan(self, table: Table, fields: tuple[str, ...], rows: RowFilter, limit: int | None):
        return table.scan(row_filter=rows.expression, selected_fields=fields, snapshot_id=self._pinned, limit=limit)

    def scan(self, columns: Sequence[str] | None = None, filters: Sequence[Filter] = (),
             limit: int | None = None) -> pa.RecordBatchReader:
        schema = self.schema()
        names = checked_projection(self.spec.name, schema, columns)
        if limit is not None and limit < 0:
            raise ConnectorError(f"dataset '{self.spec.name}': limit must be >= 0, got {limit}")
        rows = row_filter(filters, schema)
        # pyiceberg filters each row with `rows`; only a superset needs filtering again here
        exact = None if rows.exact else compile_filters(filters, schema)[0]
        needed = list(names)
        for f in filters:
            needed += [c for c in sorted(filter_columns(f)) if c in schema.names and c not in needed]
        if not needed:
            needed = [schema.names[0]]  # a row count still needs one column read
        table = self.table()
        # pyiceberg's own limit counts rows after its filter, so it only goes down when that
        # filter is the exact one.
        scan = self._data_scan(table, tuple(needed), rows, limit if rows.exact else None)
        return self._reader(scan, needed, names, exact, limit)

    def _reader(self, scan, needed: list[str], names: list[str], exact: pc.Expression | None,
                limit: int | None) -> pa.RecordBatchReader:
        schema = self.schema()
        read_schema = pa.schema([schema.field(n) for n in needed])
        out = pa.schema([schema.field(n) for n in names])
        try:
            tasks = list(scan.plan_files())
        except Exception as e:  # noqa: BLE001
            raise self._error(f"cannot plan the scan of Iceberg table {self.settings.table_name}", e) from None
        self.files_read += len(tasks)
        log.debug("dataset %s: scanning %d data file(s)", self.spec.name, len(tasks))
        return pa.RecordBatchReader.from_batches(out, self._batches(scan, tasks, read_schema, out, exact, limit))

    def _batches(self, scan, tasks: list, read_schema: pa.Schema, out: pa.Schema, exact: pc.Expression | None,
                 limit: int | None) -> Iterator[pa.RecordBatch]:
        from pyiceberg.io.pyarrow import ArrowScan

        left = limit
        if left == 0 or not tasks:
            return
        try:
            # the current schema (by field id), also for a pinned older snapshot: pyiceberg's own
            # projection would use the snapshot's schema, with the names columns had back then
            projected = scan.table_metadata.schema().select(*read_schema.names)
            batches = ArrowScan(scan.table_metadata, scan.io, projected, scan.row_filter,
                                scan.case_sensitive, scan.limit).to_record_batches(tasks)
            for batch in batches:
                batch = _conform(batch, read_schema)
                if exact is not None:
                    batch = batch.filter(exact)
                batch = batch.select(out.names) if out.names != read_schema.names else batch
                if out.names == [] and batch.num_columns:
                    batch = batch.select([])
                if left is not None:
                    if batch.num_rows >= left:
                        yield batch.slice(0, left)
                        return
                    left -= batch.num_rows
                if batch.num_rows:
                    yield batch
        except ConnectorError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error(f"error while reading Iceberg table {self.settings.table_name}", e) from None

    def count(self, filters: Sequence[Filter] = ()) -> int:
        """Rows passing `filters` (all EXACT): from file metadata when no row needs reading."""
        if not filters:
            scan = self._data_scan(self.table(), ("*",), NO_FILTER, None)
            tasks = list(scan.plan_files())
            if all(not t.delete_files for t in tasks):
                return sum(t.file.record_count for t in tasks)
        return sum(b.num_rows for b in self.scan([], filters))

    def close(self) -> None:
        """pyiceberg holds no connections between calls."""

    # -- snapshots (refresh) -------------------------------------------------------------------

    def source_version(self) -> str:
        """The current snapshot id and schema id: equal versions mean equal data and columns.
        Reading it also makes the connector's schema the table's current one."""
        table = self.table()
        snapshot = table.current_snapshot()
        with self._lock:
            if self._schema_id != table.schema().schema_id:
                self._set_schema(table)
        return format_version(snapshot.snapshot_id if snapshot else None, table.schema().schema_id)

    @staticmethod
    def same_data(a: str, b: str) -> bool:
        """Whether two versions are the same snapshot (they may differ in schema only)."""
        pa_, pb = parse_version(a), parse_version(b)
        return pa_ is not None and pb is not None and pa_[0] == pb[0]

    def pin_version(self, version: str | None) -> None:
        """Make scans read the snapshot of `version` (None: the current one again), so a full
        load covers exactly the version recorded for it."""
        parsed = parse_version(version) if version else None
        self._pinned = parsed[0] if parsed else None

    def schema_changes_since(self, version: str) -> list[SchemaChange] | None:
        """Column additions, renames and drops since `version` (matched by field id), in an
        order that can be applied one by one; None when a change cannot be followed in place
        (a type change, a nested change, or the old schema is gone)."""
        parsed = parse_version(version)
        table = self.table()
        if parsed is None:
            return None
        old = next((s for s in table.schemas().values() if s.schema_id == parsed[1]), None)
        new = table.schema()
        if old is None:
            return None
        old_by_id = {f.field_id: f for f in old.fields}
        new_by_id = {f.field_id: f for f in new.fields}
        changes: list[SchemaChange] = []
        for fid, f in old_by_id.items():
            if fid not in new_by_id:
                changes.append(("drop", f.name))
        renames = []
        for fid, f in new_by_id.items():
            before = old_by_id.get(fid)
            if before is None:
                continue
            if before.field_type != f.field_type:
                return None  # a promotion (int -> long ...): the copy's column type must change
            if before.name != f.name:
                renames.append((before.name, f.name))
        # renames through temporary names, so swapped names never collide
        changes += [("rename", a, f"__satchel_tmp_{i}") for i, (a, _) in enumerate(renames)]
        changes += [("rename", f"__satchel_tmp_{i}", b) for i, (_, b) in enumerate(renames)]
        new_schema = self._arrow_schema(new)
        for fid, f in new_by_id.items():
            if fid not in old_by_id:
                if f.name not in new_schema.names:
                    return None
                changes.append(("add", f.name, new_schema.field(f.name).type))
        with self._lock:
            self._schema, self._schema_id = new_schema, new.schema_id
        return changes

    def scan_changes_since(self, version: str, columns: Sequence[str] | None = None
                           ) -> tuple[pa.RecordBatchReader, str] | None:
        """(rows of the data files appended since `version`, the version they bring the copy
        to), or None when the snapshots in between are not all appends (an overwrite, delete
        or compaction), or `version` is no ancestor of the current snapshot."""
        parsed = parse_version(version)
        if parsed is None:
            return None
        table = self.table()
        current = table.current_snapshot()
        new_version = format_version(current.snapshot_id if current else None, table.schema().schema_id)
        with self._lock:
            if self._schema_id != table.schema().schema_id:
                self._set_schema(table)
        if parsed[0] == (current.snapshot_id if current else None):
            return pa.RecordBatchReader.from_batches(self._projected(columns), []), new_version
        if current is None:
            return None
        between = list(ancestors_between_ids(parsed[0], current.snapshot_id, table.metadata))
        if parsed[0] is not None and (not between or between[-1].parent_snapshot_id != parsed[0]):
            log.info("dataset %s: snapshot %s is not an ancestor of the current one; full reload",
                     self.spec.name, parsed[0])
            return None
        others = [s for s in between if s.summary is None or s.summary.operation != Operation.APPEND]
        if others:
            log.info("dataset %s: %d snapshot(s) since the last refresh are not appends (%s); full reload",
                     self.spec.name, len(others), ", ".join(sorted({str(s.summary.operation.value) if s.summary else "?"
                                                                     for s in others})))
            return None
        names = checked_projection(self.spec.name, self.schema(), columns)
        scan = table.incremental_append_scan(from_snapshot_id_exclusive=parsed[0],
                                             to_snapshot_id_inclusive=current.snapshot_id,
                                             selected_fields=tuple(names))
        return self._reader(scan, names, names, None, None), new_version

    def _projected(self, columns: Sequence[str] | None) -> pa.Schema:
        schema = self.schema()
        return pa.schema([schema.field(n) for n in checked_projection(self.spec.name, schema, columns)])


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A pyiceberg batch (large types, field-id metadata) as the served schema."""
    arrays = []
    for name, field in zip(schema.names, schema):
        array = batch.column(name)
        if isinstance(array.type, pa.BaseExtensionType):
            array = array.storage
        if array.type != field.type:
            array = array.cast(field.type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
