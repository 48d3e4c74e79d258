"""The search indexes of one accelerated dataset, brought up to date after each refresh.

Vectors are computed only for rows whose column text has none yet (new rows, or rows whose text
changed: each vector records an md5 of the text it came from), whatever the refresh mode; vectors
of rows that left the dataset or changed are deleted first. So an append or changes refresh
embeds only the rows it brought, a full refresh only the rows that really changed, and a
file-mode restart none (the vectors live in the DuckDB file). A model or chunking change
recomputes that column's vectors. Full-text (BM25) indexes are rebuilt after each refresh.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from accel.search import IndexSpec
from connectors.base import CALLER

from ..config import ColumnEmbedding, Dataset
from ..embedders import Embedders
from ..errors import RequestCancelled
from .chunking import chunks

log = logging.getLogger("satchel.search")

PENDING_SLICE = 256  # rows embedded and written per step: memory stays bounded, progress is kept


@dataclass(frozen=True)
class VectorIndex:
    spec: IndexSpec
    model: str
    config: ColumnEmbedding


def vector_indexes(ds: Dataset) -> list[VectorIndex]:
    out = []
    for col in ds.columns:
        for emb in col.embeddings:
            chunking = emb.chunking.model_dump() if emb.chunking and emb.chunking.enabled else None
            fingerprint = hashlib.sha256(f"{emb.from_}|{chunking}".encode()).hexdigest()[:16]
            out.append(VectorIndex(IndexSpec("vector", ds.name, col.name, ds.row_id(emb.row_id), fingerprint),
                                   emb.from_, emb))
    return out


def text_indexes(ds: Dataset) -> list[IndexSpec]:
    return [IndexSpec("text", ds.name, col.name, ds.row_id(col.full_text_search.row_id))
            for col in ds.columns if col.full_text_search is not None and col.full_text_search.enabled]


class SearchIndexes:
    """Embedding columns and full-text columns of one dataset, in its accelerator's SearchStore."""

    def __init__(self, config: Dataset, accelerator, embedders: Embedders | None) -> None:
        self.dataset = config.name
        self.accelerator = accelerator
        self.embedders = embedders
        self.vectors = vector_indexes(config) if accelerator is not None else []
        self.texts = text_indexes(config) if accelerator is not None else []
        self.embedded_rows = 0  # rows embedded by the last sync
        self.ready = not (self.vectors or self.texts)

    def __bool__(self) -> bool:
        return bool(self.vectors or self.texts)

    def vector(self, column: str | None) -> VectorIndex | None:
        return _pick(self.vectors, column, lambda v: v.spec.column)

    def text(self, column: str | None) -> IndexSpec | None:
        return _pick(self.texts, column, lambda t: t.column)

    def sync(self) -> int:
        """Bring every index up to date with the accelerated table; returns the rows embedded.
        Runs inside a refresh (its deadline and cancel scope apply to the model calls)."""
        store = self.accelerator.search
        caller = CALLER.get()
        cancel = threading.Event()
        if caller.scope is not None:
            caller.scope.add(cancel.set)
        embedded = 0
        for index in self.vectors:
            store.prepare_vectors(index.spec)
            store.remove_stale_vectors(index.spec)
            while True:
                if cancel.is_set():
                    raise RequestCancelled(f"refresh of '{self.dataset}' was cancelled while embedding")
                pending = store.pending_vectors(index.spec, PENDING_SLICE)
                if pending.num_rows == 0:
                    break
                store.write_vectors(index.spec, self._embedded(index, pending, caller.deadline, cancel))
                embedded += pending.num_rows
        for spec in self.texts:
            store.rebuild_text(spec)
        if embedded:
            log.info("dataset %s: embedded %d rows", self.dataset, embedded)
        self.embedded_rows = embedded
        self.ready = True
        return embedded

    def in_sync(self) -> bool:
        """Whether every index already matches the accelerated table (a file-mode restart)."""
        store = self.accelerator.search
        return all(store.indexed(v.spec) for v in self.vectors) and all(store.indexed(t) for t in self.texts)

    def _embedded(self, index: VectorIndex, pending: pa.Table, deadline: float | None,
                  cancel: threading.Event) -> pa.Table:
        """One side-table row per chunk of each pending row."""
        texts = pending["__text"].to_pylist()
        pieces = [chunks(t, index.config.chunking) for t in texts]  # per row: chunking is text work
        counts = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        flat = [c for p in pieces for c in p]
        assert self.embedders is not None
        vectors = self.embedders.embed(index.model, flat, dataset=self.dataset, deadline=deadline, cancel=cancel,
                                       wait_loading=True)
        take = pa.array(np.repeat(np.arange(len(texts)), counts))
        ordinal = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = {k: pending[k].take(take) for k in index.spec.row_id}
        cols["__digest"] = pending["__digest"].take(take)
        cols["__chunk"] = pa.array(ordinal.astype(np.int32))
        cols["__text"] = pa.array(flat, pa.string())
        dim = vectors.shape[1]
        cols["__vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), dim)
        return pa.table(cols)

    def info(self) -> dict:
        out: dict = {}
        if self.vectors:
            store = self.accelerator.search
            out["embeddings"] = [{"column": v.spec.column, "model": v.model,
                                  "vectors": store.vector_count(v.spec)} for v in self.vectors]
        if self.texts:
            out["full_text_search"] = [t.column for t in self.texts]
        return out


def _pick(items: list, column: str | None, name_of):  # type: ignore[no-untyped-def]
    if column is None:
        return items[0] if items else None
    low = column.lower()
    return next((i for i in items if name_of(i).lower() == low), None)
