"""Catalog listings never wait on a silent source. A dataset's schema that only its source can
tell is asked for once, in the background, bounded by a deadline and cancelled when the runtime
stops. Listings wait for an ask until LIST_WAIT_S after it started (so one listing waits that
long at most, and the next ones while the ask goes on not at all), and leave out the datasets
whose source has not answered yet; a later listing has them."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from datetime import timedelta
from typing import Sequence

import pyarrow as pa

from connectors.base import CALLER, Caller, CancelScope

from .cancel import LiveScopes, guarded
from .refresh.dataset import DatasetRuntime

log = logging.getLogger("satchel.datasets")

LIST_WAIT_S = 2.0  # how long after an ask started listings wait for it
ASK_S = 30.0  # an ask's deadline when the runtime sets no query_timeout


class SchemaAsks:
    """The schemas of datasets for a listing, asking each source at most once at a time."""

    def __init__(self, scopes: LiveScopes, query_timeout: timedelta | None) -> None:
        self._scopes = scopes
        self._ask_s = query_timeout.total_seconds() if query_timeout else ASK_S
        self._asks: dict[str, tuple[Future, float]] = {}  # by dataset: the latest ask, when it started
        self._lock = threading.Lock()

    def schemas(self, datasets: Sequence[DatasetRuntime]) -> list[pa.Schema | None]:
        """Each dataset's schema, or None when it is not known: a first load is still inferring
        it, the source did not answer in time, or asking failed (logged once per ask)."""
        out: list[pa.Schema | None] = []
        waiting: dict[int, tuple[Future, float]] = {}
        for i, ds in enumerate(datasets):
            try:
                out.append(ds.known_schema())
            except Exception as e:  # noqa: BLE001 - one dataset's copy never fails a listing
                log.warning("dataset %s: schema unavailable: %s", ds.name, e)
                out.append(None)
                continue
            if out[i] is None and ds.status != "loading":  # a first load infers it from its own download
                waiting[i] = self._ask(ds)
        for i, (future, started) in waiting.items():
            try:
                out[i] = future.result(timeout=max(0.0, started + LIST_WAIT_S - time.monotonic()))
            except Exception:  # noqa: BLE001 - not yet (FutureTimeout), or the ask failed and logged it
                pass
        return out

    def _ask(self, ds: DatasetRuntime) -> tuple[Future, float]:
        with self._lock:
            ask = self._asks.get(ds.name)
            if ask is None or ask[0].done():
                ask = self._asks[ds.name] = (Future(), time.monotonic())
                threading.Thread(target=self._run, args=(ds, ask[0]), name="satchel-schema-ask", daemon=True).start()
            return ask

    def _run(self, ds: DatasetRuntime, future: Future) -> None:
        scope = self._scopes.track(CancelScope())
        deadline = time.monotonic() + self._ask_s
        CALLER.set(Caller("runtime", "schema", deadline, scope))  # this thread's own context
        try:
            future.set_result(guarded(ds.schema, scope, deadline))
        except BaseException as e:  # noqa: BLE001 - the listings waiting on it go on without
            log.warning("dataset %s: left out of the catalog, its source did not tell its schema: %s", ds.name, e)
            future.set_exception(e)
