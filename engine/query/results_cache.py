"""The results cache (`runtime.results_cache`): agents repeat themselves, so a query's result is
kept and served again while it is still right.

An entry is keyed by the caller's principal, the SQL text and its parameters, so no principal is
ever served another's result. It is valid until `item_ttl` passes and, for data from
accelerators, while every dataset it read keeps the same data generation (a refresh, retention
or reopen changes it): a refresh invalidates at once, not after the TTL. Results that read live
sources are served until the TTL (that is the point for an agent looping on a source: the source
sees one query per TTL). Never cached: `runtime.task_history`, queries calling now(), random()
and the like, and results larger than an eighth of the cache. Bounded by `cache_max_size`, least
recently used first out.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator

import pyarrow as pa
from sqlglot import exp

DEFAULT_MAX_BYTES = 128 << 20  # Spice's default cache_max_size
DEFAULT_TTL_S = 1.0  # Spice's default item_ttl
_VOLATILE = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.Rand)
_VOLATILE_NAMES = {"now", "random", "uuid", "gen_random_uuid", "current_timestamp", "get_current_timestamp",
                   "clock_timestamp", "statement_timestamp", "transaction_timestamp", "localtimestamp"}


@dataclass
class CacheUse:
    """One request's dealings with the cache: `bypass` (Cache-Control: no-cache) in, `status`
    (HIT, MISS, BYPASS or UNCACHEABLE: the Results-Cache-Status header) out."""

    bypass: bool = False
    status: str = "MISS"


@dataclass
class _Entry:
    table: pa.Table
    generations: tuple
    expires: float
    nbytes: int


def kept(reader: pa.RecordBatchReader, max_bytes: int, store: Callable[[pa.Table], None]) -> pa.RecordBatchReader:
    """`reader`, passed through; when it has been read to its end without error and held at most
    `max_bytes`, `store(table)` gets all of it."""

    def batches() -> Iterator[pa.RecordBatch]:
        held: list[pa.RecordBatch] | None = []
        size = 0
        for batch in reader:
            if held is not None:
                size += batch.nbytes
                held = held + [batch] if size <= max_bytes else None
            yield batch
        if held is not None:
            store(pa.Table.from_batches(held, reader.schema))

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def cacheable(tree: exp.Expression) -> bool:
    """Whether a query's result depends only on its data (no clock, no randomness)."""
    for node in tree.walk():
        if isinstance(node, _VOLATILE):
            return False
        if isinstance(node, exp.Anonymous) and str(node.this).lower() in _VOLATILE_NAMES:
            return False
    return True


class ResultsCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.max_bytes, self.ttl_s = max_bytes, ttl_s
        self.item_max_bytes = max(1, max_bytes // 8)
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, generations: tuple) -> pa.RecordBatchReader | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.expires < time.monotonic() or entry.generations != generations:
                if entry is not None:
                    self._drop(key)
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            table = entry.table
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())

    def recording(self, key: Hashable, generations: tuple, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        """`reader`, passed through; a result read to its end is stored unless it outgrows an
        item's share of the cache."""
        return kept(reader, self.item_max_bytes, lambda table: self.put(key, generations, table))

    def put(self, key: Hashable, generations: tuple, table: pa.Table) -> None:
        nbytes = table.nbytes
        if nbytes > self.item_max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = _Entry(table, generations, time.monotonic() + self.ttl_s, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.nbytes

    @property
    def size_bytes(self) -> int:
        return self._bytes
