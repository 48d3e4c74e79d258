"""The engine's contract for embedding models, and the one place it calls them.

Models run in the serving layer (`serving.llm`: supervised worker processes, remote endpoints),
which the engine must not import. The engine owns this contract instead: serving hands the
Runtime an `EmbedderLookup` (name -> Embedder) at start-up, and refreshes (embedding columns) and
searches (the query's vector) call models only through `Embedders.embed`, which batches, waits
for a model that is still loading, keeps the deadline and records every call in task history.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from .errors import ModelUnavailable, QueryTimeout, RequestCancelled
from .task_history import Task, TaskHistory

TOKEN_SINK: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar("satchel_token_sink",
                                                                                         default=None)
"""Where the tokens of the embedding calls a query makes are counted (set around a query's searches)."""

BATCH = 32  # texts per model call: one call holds the model's queue for a short while only
LOAD_WAIT = 600.0  # a refresh waits this long at most for a model that is still loading


@dataclass
class Vectors:
    """Embeddings of n texts: an (n, dim) float32 array of unit-length rows, and the tokens used."""

    values: np.ndarray
    tokens: int


class Embedder(Protocol):
    """One embedding model as the serving layer runs it."""

    name: str

    @property
    def status(self) -> str:
        """loading | ready | restarting | error | stopped."""

    def embed_vectors(self, texts: list[str], deadline: float | None = None,
                      cancel: threading.Event | None = None) -> Vectors: ...


EmbedderLookup = Callable[[str], Embedder]
"""name -> the Embedder; raises NotFound for an unknown name."""


def unit_rows(values: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity is then a dot product); zero rows stay zero."""
    values = np.asarray(values, dtype=np.float32)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.where(norms == 0, 1, norms)


class Embedders:
    """The pod's embedding models as the engine sees them (empty until serving attaches them)."""

    def __init__(self, history: TaskHistory, capture_text: bool = False) -> None:
        self.history = history
        self.capture_text = capture_text  # runtime.task_history.captured_output: truncated
        self._lookup: EmbedderLookup | None = None

    def attach(self, lookup: EmbedderLookup) -> None:
        self._lookup = lookup

    def get(self, name: str) -> Embedder:
        if self._lookup is None:
            raise ModelUnavailable(f"embedding model '{name}' is not running (models are served by `satchel run`)")
        return self._lookup(name)

    def embed(self, name: str, texts: Sequence[str], *, dataset: str | None = None, principal: str = "runtime",
              protocol: str = "internal", deadline: float | None = None, cancel: threading.Event | None = None,
              wait_loading: bool = False) -> np.ndarray:
        """Unit vectors of `texts` with model `name`, in batches; each batch is one task-history
        row (task `embeddings`, with the dataset it was for; the text as a sha256 unless the pod
        captures text)."""
        model = self.get(name)
        if wait_loading:
            self._wait_ready(model, deadline, cancel)
        out: list[np.ndarray] = []
        for start in range(0, len(texts), BATCH):
            batch = list(texts[start:start + BATCH])
            began = time.monotonic()
            text = "\n".join(batch)
            digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
            task = Task("embeddings", protocol, principal, text[:4096] if self.capture_text else f"sha256:{digest}",
                        datasets=[dataset] if dataset else [], model=name, prompt_hash=digest)
            try:
                vectors = model.embed_vectors(batch, deadline, cancel)
            except Exception as e:
                task.duration_ms = (time.monotonic() - began) * 1000
                task.error = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
                task.error_code = getattr(e, "code", None) or "internal_error"
                self.history.record(task)
                raise
            task.duration_ms = (time.monotonic() - began) * 1000
            task.input_tokens, task.output_tokens, task.rows = vectors.tokens, 0, len(batch)
            sink = TOKEN_SINK.get()
            if sink is not None:  # the caller's model token budget (a principal's policy)
                sink(vectors.tokens)
            self.history.record(task)
            out.append(unit_rows(vectors.values))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    @staticmethod
    def _wait_ready(model: Embedder, deadline: float | None, cancel: threading.Event | None) -> None:
        """A refresh that starts while the model is still loading waits for it (bounded)."""
        limit = time.monotonic() + LOAD_WAIT if deadline is None else deadline
        while model.status in ("loading", "restarting"):
            if cancel is not None and cancel.is_set():
                raise RequestCancelled(f"embedding model '{model.name}': cancelled while it was loading")
            if time.monotonic() >= limit:
                raise QueryTimeout(f"embedding model '{model.name}' did not finish loading in time")
            time.sleep(0.1)
