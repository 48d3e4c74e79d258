"""The refresh jobs of a runtime: scheduling each accelerated dataset, first-load retries,
on-demand refreshes (coalesced, at most one per `refresh_min_interval`) and their audit rows."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Mapping

from connectors.base import CALLER, Caller, CancelScope

from .. import tracing
from ..cancel import LiveScopes
from ..errors import ConnectorError, Overloaded, SatchelError, SqlError
from ..task_history import Task, TaskHistory, started_at
from .backoff import FIRST_LOAD
from .dataset import DatasetRuntime, RefreshResult, SourceReader
from .scheduler import RefreshScheduler, Schedule

log = logging.getLogger("satchel.runtime")


class RefreshJobs:
    """Refreshes the accelerated datasets of `datasets` on their schedules and on demand."""

    def __init__(self, datasets: Mapping[str, DatasetRuntime], source_reader: SourceReader,
                 task_history: TaskHistory, scopes: LiveScopes) -> None:
        self.datasets = datasets
        self.scheduler = RefreshScheduler()
        self._source_reader = source_reader
        self._task_history = task_history
        self._scopes = scopes
        self._first_load_failures: dict[str, int] = {}
        self._demand_lock = threading.Lock()
        self._demanded: set[str] = set()  # datasets with an on-demand refresh queued, not started
        self._demand_ended: dict[str, float] = {}  # time.monotonic() the last on-demand refresh ended
        self._ended = threading.Condition()  # notified when a job's run ends
        self._runs_ended: dict[str, int] = {}  # runs of each dataset's job that ended
        self._outcomes: dict[str, dict] = {}  # each dataset's last run: rows, duration_s or error

    def start(self) -> None:
        """Reopen file-mode data, then load the rest and schedule refreshes in the background."""
        now = time.time()
        for ds in self.datasets.values():
            if not ds.accelerated:
                continue
            acc = ds.acceleration
            schedule = Schedule(acc.refresh_check_interval, acc.refresh_cron,
                                acc.refresh_jitter_max if acc.refresh_jitter_enabled else None)
            reopened = ds.adopt_existing()
            self.scheduler.add(ds.name, schedule, lambda ds=ds: self._job(ds), None if reopened else now)
            if acc.retention_check_enabled and acc.retention_check_interval:
                self.scheduler.add(f"{ds.name}#retention", Schedule(acc.retention_check_interval),
                                   ds.apply_retention)
        self.scheduler.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Cancel running refreshes (the runtime's LiveScopes do) and wait up to `timeout`
        seconds for them to end; False when some are still running."""
        return self.scheduler.stop(timeout)

    def refresh(self, ds: DatasetRuntime, wait: bool = False) -> dict:
        """Trigger a refresh of `ds` now; with `wait`, block until it finishes and raise its error."""
        if not ds.accelerated:
            raise SqlError(f"dataset '{ds.name}' is not accelerated; there is nothing to refresh")
        if not wait:
            return self._on_demand(ds)
        started, span = time.monotonic(), tracing.new_span()
        try:
            result = self._run(ds, span)
        except Exception as e:
            # visible in task history like a scheduled refresh's failure, and a clean public error
            self._record(ds, span, started, None, ds.last_error or str(e), _error_code(e))
            if isinstance(e, SatchelError):
                raise
            raise ConnectorError(f"refresh of '{ds.name}' failed: {ds.last_error}") from None
        self._record(ds, span, started, result.rows, None)
        return {"dataset": ds.name, "status": "done", "rows": result.rows, "mode": result.mode,
                "duration_s": result.duration_s}

    def refresh_and_wait(self, ds: DatasetRuntime, timeout: float | None = None) -> dict:
        """Trigger a refresh of `ds` as a client does (joining one queued or running) and wait up to
        `timeout` seconds for it to end; its outcome: status done (rows, duration_s) or failed (error)."""
        with self._ended:
            before = self._runs_ended.get(ds.name, 0)
        if not ds.accelerated:
            raise SqlError(f"dataset '{ds.name}' is not accelerated; there is nothing to refresh")
        self._on_demand(ds)
        with self._ended:
            if not self._ended.wait_for(lambda: self._runs_ended.get(ds.name, 0) > before, timeout):
                return {"dataset": ds.name, "status": "still running"}
            return {"dataset": ds.name, **self._outcomes[ds.name]}

    def _on_demand(self, ds: DatasetRuntime) -> dict:
        """A refresh asked for by a client: it joins one pending or running, else one starts, at
        most once per `refresh_min_interval` after the last on-demand one ended (Overloaded)."""
        with self._demand_lock:
            if ds.name in self._demanded:
                return {"dataset": ds.name, "status": "queued", "joined": True}
            if self.scheduler.is_running(ds.name):
                return {"dataset": ds.name, "status": "already running", "joined": True}
            interval = ds.acceleration.refresh_min_interval.total_seconds()
            wait = self._demand_ended.get(ds.name, -math.inf) + interval - time.monotonic()
            if wait > 0:
                raise Overloaded(f"dataset '{ds.name}' was refreshed on demand less than {interval:g}s ago "
                                 f"(acceleration.params.refresh_min_interval); retry in {math.ceil(wait)}s",
                                 retry_after=wait)
            if not self.scheduler.run_now(ds.name):  # it started meanwhile
                return {"dataset": ds.name, "status": "already running", "joined": True}
            self._demanded.add(ds.name)
        return {"dataset": ds.name, "status": "queued", "joined": False}

    def _job(self, ds: DatasetRuntime) -> None:
        started, span = time.monotonic(), tracing.new_span()
        with self._demand_lock:  # this run serves the on-demand request pending, if any
            demanded = ds.name in self._demanded
            self._demanded.discard(ds.name)
        outcome: dict = {"status": "failed", "error": "the refresh did not end"}
        try:
            result = self._run(ds, span)
            log.info("dataset %s: %s refresh loaded %d rows in %.2fs", ds.name, result.mode, result.rows,
                     result.duration_s)
            outcome = {"status": "done", "rows": result.rows, "mode": result.mode, "duration_s": result.duration_s}
            self._record(ds, span, started, result.rows, None)
        except Exception as e:
            outcome = {"status": "failed", "error": ds.last_error, "duration_s": time.monotonic() - started}
            self._record(ds, span, started, None, ds.last_error, _error_code(e))
            if ds.loaded_once:
                log.error("dataset %s: refresh failed, keeping the last good data: %s", ds.name, ds.last_error)
                return
            # Never loaded: do not wait for the next scheduled refresh (or forever, for a
            # load-once dataset) -- try the first load again with a growing delay.
            failures = self._first_load_failures.get(ds.name, 0) + 1
            self._first_load_failures[ds.name] = failures
            delay = FIRST_LOAD.delay(failures)
            self.scheduler.retry_at(ds.name, time.time() + delay)
            log.error("dataset %s: first load failed (%d time(s)); retrying in %.0fs: %s", ds.name, failures, delay,
                      ds.last_error)
        else:
            self._first_load_failures.pop(ds.name, None)
        finally:
            if demanded:
                with self._demand_lock:
                    self._demand_ended[ds.name] = time.monotonic()
            with self._ended:
                self._outcomes[ds.name] = outcome
                self._runs_ended[ds.name] = self._runs_ended.get(ds.name, 0) + 1
                self._ended.notify_all()

    def _run(self, ds: DatasetRuntime, span: tracing.Span) -> RefreshResult:
        """Refresh `ds` now, within its refresh_timeout: at the deadline, or when the runtime
        stops, its source work is cancelled. Its source statements are the runtime's, of kind
        refresh, and get the time left as their own limit."""
        timeout = ds.acceleration.refresh_timeout.total_seconds() or None  # 0s: no deadline
        scope = self._scopes.track(CancelScope())
        stop = threading.Event()
        scope.add(stop.set)  # no retry after a cancel
        deadline = time.monotonic() + timeout if timeout else None  # before the timer: it fires past it
        timer = threading.Timer(timeout, scope.cancel) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        caller = CALLER.set(Caller("runtime", "refresh", deadline, scope))
        traced = tracing.enter(span)  # the refresh's embedding calls are its children
        try:
            return ds.refresh(self._source_reader, stop)
        finally:
            if timer is not None:
                timer.cancel()
            tracing.leave(traced)
            CALLER.reset(caller)

    def _record(self, ds: DatasetRuntime, span: tracing.Span, started: float, rows: int | None,
                error: str | None, error_code: str | None = None) -> None:
        """One task-history row for a refresh that began at `started` (time.monotonic()) and just ended."""
        self._task_history.record(Task("refresh", "internal", "runtime", f"refresh {ds.name}", [ds.name], "source",
                                       started_at=started_at(started),
                                       duration_ms=(time.monotonic() - started) * 1000, rows=rows,
                                       error=error, error_code=error_code).in_span(span))


def _error_code(e: BaseException) -> str:
    """A failed refresh's stable code in task history (what a client waiting on it is told)."""
    return e.code if isinstance(e, SatchelError) else ConnectorError.code
