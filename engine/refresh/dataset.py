"""One dataset at run time: its connector, its accelerator, its status and its refreshes."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.dataset as pads

from accel.base import AltersColumns, KeepsIndexes, RemembersLoads
from connectors.base import (CALLER, ChangeFeed, DatasetSpec, KnowsRowCount, VersionedSnapshots, description_of,
                             with_descriptions)
from connectors.registry import create_connector

from ..config import Dataset
from ..embedders import Embedders
from ..search.indexes import SearchIndexes
from ..errors import ConnectorError, QueryTimeout, RequestCancelled, SatchelError
from ..metrics import Metrics
from ..redact import redact
from .backoff import retry
from .snapshots import Manifest, SnapshotStore

log = logging.getLogger("satchel.datasets")

SourceReader = Callable[["DatasetRuntime", str | None], pa.RecordBatchReader]
"""(dataset, extra WHERE condition in public SQL or None) -> the rows to load, from the source."""


@dataclass
class RefreshResult:
    rows: int
    mode: str
    duration_s: float


def connector_for(config: Dataset, base_dir: str, pod: str = ""):  # -> Connector
    """The connector of dataset `config` (built only: no source is contacted)."""
    return create_connector(DatasetSpec(
        name=config.name, path=config.connector_path, prefix=config.connector_prefix,
        params=dict(config.params), unsupported_type_action=config.unsupported_type_action,
        base_dir=base_dir, column_descriptions=config.column_descriptions, description=config.description,
        column_types=config.column_types, pod=pod,
    ))


class DatasetRuntime:
    """Status and refresh logic for one dataset. Thread-safe: one refresh at a time."""

    def __init__(self, config: Dataset, base_dir: str, accelerator, metrics: Metrics, secrets: frozenset[str],
                 pod: str = "", embedders: Embedders | None = None, snapshots: SnapshotStore | None = None,
                 max_staleness: float | None = None, fallback_to_source: bool = False) -> None:
        self.config = config
        self.snapshots = snapshots if accelerator is not None and config.acceleration \
            and config.acceleration.snapshots != "disabled" else None
        self.snapshot: Manifest | None = None  # the newest snapshot this dataset published or loaded
        self.snapshot_error: str | None = None
        self._max_staleness = max_staleness
        self._fallback_to_source = fallback_to_source
        self.serving_source = False  # a follower that fell back: its data came from its own source
        self.name = config.name
        self.accelerator = accelerator  # None when not accelerated
        self.search = SearchIndexes(config, accelerator, embedders)  # embedding and full-text columns
        if isinstance(accelerator, KeepsIndexes) and config.acceleration:
            accelerator.declare_indexes(self.name, config.acceleration.table_indexes)
        self.metrics = metrics
        self._secrets = secrets
        self.connector = connector_for(config, base_dir, pod)
        self._schema: pa.Schema | None = None
        self._lock = threading.Lock()
        self.status = "initializing" if accelerator is not None else "ready (federated)"
        self.loaded_once = accelerator is None
        self.last_refresh_at: dt.datetime | None = None
        self.last_refresh_duration_s: float | None = None
        self.last_error: str | None = None
        self.rows_loaded = 0
        self.rows_in_flight = 0  # rows streamed so far by the running load (progress)
        self.bytes_in_flight = 0  # their Arrow bytes
        self.rows_expected: int | None = None  # rows the running load brings, when the source can tell
        self.refresh_count = 0
        self.generation = 0  # changes whenever the accelerated data may have (the results cache's check)
        # The source version (e.g. an Iceberg snapshot + schema id) the accelerated copy holds,
        # for sources that report one (see _refresh_by_version); None: unknown, load in full.
        self.source_version: str | None = None

    @property
    def load_id(self) -> str:
        """What a file-mode accelerator records about a load, to decide whether a restart may
        serve it: a digest of the source and the working set, never the resolved `from:` itself
        (which may hold a secret) in the database file."""
        acc = self.acceleration
        parts = [self.config.from_, (acc.refresh_sql or "") if acc else "", str(sorted(self.config.params.items()))]
        return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()

    # -- description -------------------------------------------------------------------------

    @property
    def accelerated(self) -> bool:
        return self.accelerator is not None

    @property
    def acceleration(self):
        return self.config.acceleration

    def schema(self) -> pa.Schema:
        """The dataset's schema with descriptions (pod descriptions win over the source's)."""
        if self._schema is None:
            if self._in_copy():
                base = self.accelerator.schema(self.name)
            else:
                base = self.connector.schema()
            source_desc = {f.name: description_of(f) for f in base if description_of(f)}
            self._schema = with_descriptions(base, {**source_desc, **self.config.column_descriptions})
        return self._schema

    def known_schema(self) -> pa.Schema | None:
        """The schema when it is at hand (known, or in the accelerated copy); None when only
        the source can tell (a catalog listing never waits on it: engine.schema_asks)."""
        if self._schema is None and not self._in_copy():
            return None
        return self.schema()

    def _in_copy(self) -> bool:
        return self.accelerated and self.loaded_once and self.accelerator.has_table(self.name)

    def info(self) -> dict:
        acc = self.acceleration if self.accelerated else None
        return {
            "name": self.name,
            "from": redact(self.config.from_, self._secrets),
            "description": self.config.description,
            "status": self.status,
            "ready": self.loaded_once,
            "accelerated": self.accelerated,
            "engine": acc.engine if acc else None,
            "mode": acc.mode if acc else None,
            "refresh_mode": acc.refresh_mode if acc else None,
            "rows": self.rows_loaded if self.accelerated else None,
            "last_refresh_at": self.last_refresh_at.isoformat() if self.last_refresh_at else None,
            "last_refresh_duration_s": self.last_refresh_duration_s,
            "last_error": self.last_error,
            "refresh_count": self.refresh_count,
            **self._progress(),
            **(self._search_info() if self.search else {}),
            **self._snapshot_info(),
        }

    def _search_info(self) -> dict:
        try:
            return self.search.info()
        except Exception as e:  # status never fails because of an index
            return {"search_error": self._describe(e)}

    # -- loading -----------------------------------------------------------------------------

    def adopt_existing(self) -> bool:
        """File mode restart: serve the data a previous run loaded, at once."""
        acc = self.accelerator
        if not isinstance(acc, RemembersLoads) or not acc.has_table(self.name):
            return False
        if acc.loaded_source(self.name) != self.load_id:
            return False  # another source or working set (or a file from an older version): reload
        if isinstance(acc, KeepsIndexes) and not acc.has_declared_indexes(self.name):
            return False  # acceleration.indexes changed: the reload builds them
        if self.search:
            if not self.search.in_sync():
                return False  # a new or changed embedding/full-text column: refresh (it embeds only what lacks vectors)
            self.search.ready = True
        self.loaded_once = True
        self.status = "ready"
        self.rows_loaded = acc.row_count(self.name)
        self.source_version = acc.loaded_version(self.name)
        self._publish_gauges()
        log.info("dataset %s: reopened %d accelerated rows from a previous run", self.name, self.rows_loaded)
        return True

    def refresh(self, source_reader: SourceReader, stop: threading.Event) -> RefreshResult:
        """Refresh (full or append) with retries; on failure the last good data stays."""
        acc = self.acceleration
        with self._lock:
            self.status = "refreshing" if self.loaded_once else "loading"
            started = time.monotonic()
            attempts = acc.refresh_retry_max_attempts if acc.refresh_retry_enabled else 1
            try:
                rows, mode = retry(lambda: self._refresh_and_index(source_reader), attempts, stop,
                                   on_failure=lambda n, e: self._on_attempt_failure(n, e, final=n == attempts))
            except Exception as e:
                self.generation += 1  # a failed append or change batch may have landed in part
                self.last_error = self._describe(self._cancelled() or e)
                self.status = "error" if not self.loaded_once else "ready (last refresh failed)"
                self.metrics.refresh_errors.labels(self.name).inc()
                raise
            duration = time.monotonic() - started
            self.last_error = None
            self.loaded_once = True
            self.status = "ready"
            self.last_refresh_at = dt.datetime.now(dt.timezone.utc)
            self.last_refresh_duration_s = duration
            self.refresh_count += 1
            self.generation += 1
            if self.snapshots is not None and acc.snapshots in ("enabled", "create_only") \
                    and mode not in ("snapshot", "unchanged"):
                self._publish_snapshot()
            self._schema = None
            self.metrics.refresh_duration.labels(self.name).observe(duration)
            self.metrics.refresh_last.labels(self.name).set(time.time())
            self._publish_gauges()
            return RefreshResult(rows, mode, duration)

    def apply_retention(self) -> int:
        acc = self.acceleration
        if not (self.accelerated and acc.retention_check_enabled and acc.retention_period and self.config.time_column):
            return 0
        with self._lock:
            return self._apply_retention_locked()

    def _apply_retention_locked(self) -> int:
        """Retention with `self._lock` already held (a refresh applies it before releasing the lock)."""
        acc = self.acceleration
        if not (self.accelerated and acc.retention_check_enabled and acc.retention_period and self.config.time_column):
            return 0
        if not self.accelerator.has_table(self.name):
            return 0
        cutoff = time_cutoff(self.config.time_format, acc.retention_period)
        deleted = self.accelerator.delete_older_than(self.name, self.config.time_column, cutoff)
        self.generation += 1
        self.rows_loaded = self.accelerator.row_count(self.name)
        self._publish_gauges()
        if deleted:
            log.info("dataset %s: retention removed %d rows", self.name, deleted)
        return deleted

    # -- snapshots (engine/refresh/snapshots.py) ---------------------------------------------------

    def _load_snapshot(self, manifest: Manifest) -> tuple[int, str]:
        """Swap in the published snapshot `manifest` (checked file by file) unless it is the one held."""
        if manifest.snapshot_id == self.source_version and self.accelerator.has_table(self.name):
            self.snapshot = manifest
            return self.rows_loaded, "unchanged"
        with tempfile.TemporaryDirectory(prefix="satchel-snapshot-") as tmp:
            files = self.snapshots.download(manifest, Path(tmp))
            data = pads.dataset([str(f) for f in files], format="parquet", schema=manifest.schema)
            reader = self._with_progress(data.scanner().to_reader())
            self.accelerator.replace(self.name, reader, self.acceleration.primary_key or (), source=self.load_id,
                                     version=manifest.snapshot_id)
        self.source_version = manifest.snapshot_id
        self.snapshot = manifest
        # evaluated at each scrape: the age grows between polls without anyone asking
        self.metrics.snapshot_age.labels(self.name).set_function(lambda: self.snapshot.age_s)
        self.rows_loaded = self.accelerator.row_count(self.name)
        log.info("dataset %s: loaded snapshot %s (%d rows, refreshed %s)", self.name, manifest.snapshot_id,
                 self.rows_loaded, manifest.refreshed_at)
        return self.rows_loaded, "snapshot"

    def _publish_snapshot(self) -> None:
        """Publish the accelerated rows; a failure is reported, never fails the refresh."""
        try:
            reader = self.accelerator.scan(self.name, None, [], None)
            self.snapshot = self.snapshots.publish(self.name, reader, self.last_refresh_at)
            self.snapshot_error = None
            log.info("dataset %s: published snapshot %s (%d rows)", self.name, self.snapshot.snapshot_id,
                     self.snapshot.rows)
        except Exception as e:  # noqa: BLE001 - the refresh itself succeeded
            self.snapshot_error = self._describe(e)
            log.warning("dataset %s: publishing a snapshot failed: %s", self.name, self.snapshot_error)

    @property
    def snapshot_stale(self) -> bool:
        """A follower whose newest snapshot is older than `max_staleness` (not ready: it serves old data)."""
        if self.snapshot is None or not self._max_staleness or self.acceleration.snapshots != "follow" \
                or self.serving_source:
            return False
        return self.snapshot.age_s > self._max_staleness

    def _snapshot_info(self) -> dict:
        if self.snapshot is None and self.snapshot_error is None and not self.serving_source:
            return {}
        age = self.snapshot.age_s if self.snapshot else None
        stale = self.snapshot_stale
        return {"snapshot": {"id": self.snapshot.snapshot_id if self.snapshot else None,
                             "refreshed_at": self.snapshot.refreshed_at if self.snapshot else None,
                             "age_s": round(age, 1) if age is not None else None, "stale": stale,
                             "error": self.snapshot_error,
                             "serving": "source (fallback)" if self.serving_source else "snapshot"}}

    def _refresh_and_index(self, source_reader: SourceReader) -> tuple[int, str]:
        """One refresh attempt, then the search indexes brought up to date with what it loaded."""
        result = self._refresh_once(source_reader)
        if self.search:
            self.status = "indexing"
            self.search.sync()
        return result

    def _refresh_once(self, source_reader: SourceReader) -> tuple[int, str]:
        acc = self.acceleration
        if self.snapshots is not None and (acc.snapshots == "follow" or acc.snapshots in ("enabled", "bootstrap_only")
                                           and not self.accelerator.has_table(self.name)):
            manifest = self.snapshots.latest(self.name)
            stale = manifest is not None and self._max_staleness is not None \
                and manifest.age_s > self._max_staleness
            if manifest is not None and not (stale and self._fallback_to_source and acc.snapshots == "follow"):
                self.serving_source = False
                return self._load_snapshot(manifest)
            if acc.snapshots == "follow":
                if not self._fallback_to_source:
                    raise ConnectorError(f"dataset '{self.name}': no snapshot has been published yet; a follower "
                                         f"never reads the source (unless runtime.snapshots.fallback: source)")
                log.warning("dataset %s: %s; loading from the source (runtime.snapshots.fallback: source)",
                            self.name, "the newest snapshot is stale" if stale else "no snapshot is published")
                self.serving_source = True
        mode = acc.refresh_mode
        if mode == "changes":
            return self._refresh_changes(source_reader)
        if isinstance(self.connector, VersionedSnapshots):
            return self._refresh_by_version(source_reader)
        if mode == "append" and self.accelerator.has_table(self.name):
            condition = self._append_condition()
            reader = self._with_progress(source_reader(self, condition))
            self.accelerator.append(self.name, reader, acc.primary_key or (), dict(acc.on_conflict),
                                    source=self.load_id)
        else:
            mode = "full"
            condition = self._window_condition()
            expected = self.connector.expected_rows() if isinstance(self.connector, KnowsRowCount) \
                and condition is None and acc.refresh_sql is None else None
            reader = self._with_progress(source_reader(self, condition), expected)
            self.accelerator.replace(self.name, reader, acc.primary_key or (), source=self.load_id)
        self.rows_loaded = self.accelerator.row_count(self.name)
        if acc.retention_check_enabled:
            self._apply_retention_locked()  # called under self._lock (refresh holds it)
        return self.rows_loaded, mode

    def _refresh_changes(self, source_reader: SourceReader) -> tuple[int, str]:
        """refresh_mode: changes: apply the source's changed rows (upserts by primary key, and
        deletes); the first load, or one after a TRUNCATE, is a full load."""
        acc = self.acceleration
        keys = list(acc.primary_key or ())
        conn = self.connector
        if not isinstance(conn, ChangeFeed):
            raise ConnectorError(f"dataset '{self.name}': refresh_mode: changes is not supported by this source")
        if self.accelerator.has_table(self.name):
            changes = conn.read_changes(keys)
            if changes is not None:
                reader = self._with_progress(changes.upserts())
                self.accelerator.append(self.name, reader, keys, {k: "upsert" for k in keys}, source=self.load_id)
                self.accelerator.delete_keys(self.name, changes.deleted())
                conn.commit_changes(changes.position)
                self.rows_loaded = self.accelerator.row_count(self.name)
                if acc.retention_check_enabled:
                    self._apply_retention_locked()
                return self.rows_loaded, "changes"
        position = conn.start_changes()  # before the full load: no change can fall between
        reader = self._with_progress(source_reader(self, self._window_condition()))
        self.accelerator.replace(self.name, reader, keys, source=self.load_id)
        conn.commit_changes(position)  # what the full load already holds
        self.rows_loaded = self.accelerator.row_count(self.name)
        if acc.retention_check_enabled:
            self._apply_retention_locked()
        return self.rows_loaded, "full"

    # -- version-aware refresh (sources with snapshots, e.g. Iceberg) ---------------------------
    #
    # A connector opts in by being a VersionedSnapshots (connectors/base.py).

    def _refresh_by_version(self, source_reader: SourceReader) -> tuple[int, str]:
        """Nothing to do when the source version is unchanged; follow column changes and load
        only the added rows when possible (append mode, or a columns-only change); else load
        in full, pinned to the version recorded with it."""
        acc, conn = self.acceleration, self.connector
        current = conn.source_version()
        have = self.accelerator.has_table(self.name)
        last = self.source_version if have else None
        windowed = bool(acc.refresh_data_window and self.config.time_column)
        if last is not None and current == last and not windowed:
            log.info("dataset %s: source version %s unchanged; nothing loaded", self.name, current)
            return self._finish_refresh(), "unchanged"
        if last is not None and not windowed and acc.refresh_sql is None \
                and (acc.refresh_mode == "append" or conn.same_data(last, current)):
            mode = self._load_changes(last)
            if mode is not None:
                return self._finish_refresh(), mode
        if last is not None:
            log.info("dataset %s: source version %s -> %s; full reload", self.name, last, current)
        # the load's query binds the source's current columns, not the copy's old ones
        base = conn.schema()
        source_desc = {f.name: description_of(f) for f in base if description_of(f)}
        self._schema = with_descriptions(base, {**source_desc, **self.config.column_descriptions})
        conn.pin_version(current)
        try:
            reader = self._with_progress(source_reader(self, self._window_condition()))
            self.accelerator.replace(self.name, reader, acc.primary_key or (), source=self.load_id, version=current)
        finally:
            conn.pin_version(None)
        self.source_version = current
        return self._finish_refresh(), "full"

    def _load_changes(self, last: str) -> str | None:
        """Apply column changes and added rows since `last`; the refresh mode to report, or
        None when a full reload is needed."""
        acc, conn = self.acceleration, self.connector
        changes = conn.schema_changes_since(last)
        if changes is None:
            log.info("dataset %s: a column change cannot be applied in place; full reload", self.name)
            return None
        keys = set(acc.primary_key or ())
        if changes and (not isinstance(self.accelerator, AltersColumns)
                        or any(c[0] in ("rename", "drop") and c[1] in keys for c in changes)):
            log.info("dataset %s: column changes touch the primary key; full reload", self.name)
            return None
        got = conn.scan_changes_since(last, None)
        if got is None:
            return None
        reader, new_version = got
        try:
            if changes:
                log.info("dataset %s: applying column changes %s", self.name,
                         ", ".join(f"{c[0]} {c[1]}" + (f" -> {c[2]}" if c[0] == "rename" else "") for c in changes))
                self.accelerator.alter_columns(self.name, changes)
            self.accelerator.append(self.name, self._with_progress(reader), acc.primary_key or (),
                                    dict(acc.on_conflict), source=self.load_id, version=new_version)
        except Exception:
            self.source_version = None  # the copy may hold part of the change: reload in full next time
            raise
        self.source_version = new_version
        return "append" if not conn.same_data(last, new_version) else ("schema" if changes else "unchanged")

    def _finish_refresh(self) -> int:
        self.rows_loaded = self.accelerator.row_count(self.name)
        if self.acceleration.retention_check_enabled:
            self._apply_retention_locked()  # called under self._lock (refresh holds it)
        return self.rows_loaded

    def _window_condition(self) -> str | None:
        window = self.acceleration.refresh_data_window
        if not window or not self.config.time_column:
            return None
        return f'"{self.config.time_column}" >= {sql_literal(time_cutoff(self.config.time_format, window))}'

    def _append_condition(self) -> str | None:
        column = self.config.time_column
        watermark = self.accelerator.max_value(self.name, column)
        parts = []
        if watermark is not None:
            overlap = self.acceleration.refresh_append_overlap or dt.timedelta(0)
            start = shift(watermark, -overlap, self.config.time_format)
            # `>=` (not `>`): rows sharing the watermark timestamp that arrived after the last
            # refresh are read again; the primary key merge keeps them single.
            parts.append(f'"{column}" >= {sql_literal(start)}')
        window = self._window_condition()
        if window:
            parts.append(window)
        return " AND ".join(parts) or None

    def _cancelled(self) -> SatchelError | None:
        """Why this refresh was cancelled (its refresh_timeout, or the runtime stopping), if it was."""
        caller = CALLER.get()
        if caller.scope is None or not caller.scope.cancelled:
            return None
        if caller.deadline is not None and time.monotonic() >= caller.deadline:
            return QueryTimeout(f"refresh of '{self.name}' exceeded its refresh_timeout of "
                                f"{self.acceleration.refresh_timeout.total_seconds():g}s "
                                f"(acceleration.params.refresh_timeout) and was cancelled")
        return RequestCancelled(f"refresh of '{self.name}' was cancelled: the runtime is stopping")

    def _progress(self) -> dict:
        """The running load's progress: rows and Arrow bytes so far, and a percentage when the
        source said how many rows to expect."""
        if self.status not in ("loading", "refreshing"):
            return {"rows_loading": None}
        percent = None
        if self.rows_expected:
            percent = round(min(99.9, 100 * self.rows_in_flight / self.rows_expected), 1)
        return {"rows_loading": self.rows_in_flight, "bytes_loading": self.bytes_in_flight,
                "rows_expected": self.rows_expected, "percent_loaded": percent}

    def _with_progress(self, reader: pa.RecordBatchReader, expected: int | None = None) -> pa.RecordBatchReader:
        """`reader` counting rows and bytes as they load (logged every 5 s), and stopping between
        batches once the refresh is cancelled (a source that still trickles rows past the deadline)."""
        self.rows_in_flight = self.bytes_in_flight = 0
        self.rows_expected = expected
        name = self.name
        scope = CALLER.get().scope  # the accelerator may pull batches on its own threads

        def batches() -> Iterator[pa.RecordBatch]:
            last_log = time.monotonic()
            for batch in reader:
                if scope is not None and scope.cancelled:
                    raise RequestCancelled(f"refresh of '{name}' was cancelled")
                self.rows_in_flight += batch.num_rows
                self.bytes_in_flight += batch.nbytes
                if time.monotonic() - last_log > 5:
                    last_log = time.monotonic()
                    share = f", {self._progress()['percent_loaded']}%" if expected else ""
                    log.info("dataset %s: loading... %d rows, %.1f MiB so far%s", name, self.rows_in_flight,
                             self.bytes_in_flight / 2**20, share)
                yield batch

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def _on_attempt_failure(self, attempt: int, e: BaseException, final: bool) -> None:
        if not final:  # seen at once, not only when the retries are spent (the last one: refresh())
            self.last_error = self._describe(e)
        log.warning("dataset %s: refresh attempt %d failed: %s", self.name, attempt, self._describe(e))

    def _describe(self, e: BaseException) -> str:
        text = e.message if isinstance(e, SatchelError) else f"{type(e).__name__}: {e}"
        return redact(text, self._secrets)

    def _publish_gauges(self) -> None:
        self.metrics.dataset_rows.labels(self.name).set(self.rows_loaded)
        self.metrics.dataset_ready.labels(self.name).set(1 if self.loaded_once else 0)

    def close(self) -> None:
        try:
            self.connector.close()
        except ConnectorError:
            pass


def time_cutoff(time_format: str | None, age: dt.timedelta) -> object:
    """now - age, expressed in the time column's format."""
    now = dt.datetime.now(dt.timezone.utc)
    return shift(now, -age, time_format)


def shift(value: object, delta: dt.timedelta, time_format: str | None) -> object:
    """`value + delta` in the time column's representation."""
    if isinstance(value, dt.datetime):
        moved = value + delta
        if time_format == "unix_seconds":
            return int(moved.timestamp())
        if time_format == "unix_millis":
            return int(moved.timestamp() * 1000)
        if time_format == "date":
            return moved.date()
        if time_format == "ISO8601":
            return moved.isoformat()
        return moved
    if isinstance(value, dt.date):
        return value + delta
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        scale = 1000 if time_format == "unix_millis" else 1
        return type(value)(value + delta.total_seconds() * scale)
    if isinstance(value, str):
        return (dt.datetime.fromisoformat(value) + delta).isoformat()
    raise ConnectorError(f"cannot use a value of type {type(value).__name__} as a time_column watermark")


def sql_literal(value: object) -> str:
    """A public-dialect SQL literal for a cutoff value."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return f"TIMESTAMPTZ '{value.astimezone(dt.timezone.utc).isoformat(sep=' ')}'"
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)
