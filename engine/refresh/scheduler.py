"""Refresh scheduling: intervals or cron, jitter, one run per job at a time."""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from croniter import croniter

log = logging.getLogger("satchel.refresh")


@dataclass(frozen=True)
class Schedule:
    """When a dataset refreshes: every `interval`, or at `cron` times; plus up to `jitter` delay."""

    interval: dt.timedelta | None = None
    cron: str | None = None
    jitter: dt.timedelta | None = None

    def next_after(self, now: float) -> float | None:
        """Epoch seconds of the next run after `now`, jitter included; None for load-once."""
        if self.interval:
            base = now + self.interval.total_seconds()
        elif self.cron:
            base = croniter(self.cron, dt.datetime.fromtimestamp(now, dt.timezone.utc)).get_next(float)
        else:
            return None
        if self.jitter:
            base += random.uniform(0, self.jitter.total_seconds())
        return base


@dataclass(order=True)
class _Entry:
    due: float
    name: str = field(compare=False)


class RefreshScheduler:
    """Runs each registered job at its schedule, one run per job at a time, each run on a thread
    of its own: a job stuck on its source never delays another job."""

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[Schedule, Callable[[], None]]] = {}
        self._heap: list[_Entry] = []
        self._next: dict[str, float] = {}  # the one valid due time per job; other heap entries are stale
        self._running: set[str] = set()
        self._retry: dict[str, float] = {}  # earlier next runs asked for by the jobs themselves
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._thread = threading.Thread(target=self._loop, name="satchel-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, name: str, schedule: Schedule, job: Callable[[], None], first_run: float | None = None) -> None:
        """Register `job`; it first runs at `first_run` (epoch seconds) or its next scheduled time."""
        with self._cond:
            self._jobs[name] = (schedule, job)
            due = first_run if first_run is not None else schedule.next_after(time.time())
            self._push(name, due)
            self._cond.notify()

    def _push(self, name: str, due: float | None) -> None:
        if due is None:
            self._next.pop(name, None)
            return
        self._next[name] = due
        heapq.heappush(self._heap, _Entry(due, name))

    def run_now(self, name: str) -> bool:
        """Queue an immediate run; False when the job is already running."""
        with self._cond:
            if name in self._running:
                return False
            self._push(name, time.time())
            self._cond.notify()
            return True

    def retry_at(self, name: str, due: float) -> None:
        """Run `name` again at `due` (epoch seconds) if that is sooner than its schedule says.
        Called from inside the job (e.g. a failed first load); applies when the run ends."""
        with self._cond:
            self._retry[name] = due

    def next_run(self, name: str) -> float | None:
        """Epoch seconds of the job's next scheduled run (None: not scheduled, e.g. load-once)."""
        with self._cond:
            return self._next.get(name)

    def is_running(self, name: str) -> bool:
        with self._cond:
            return name in self._running

    def stop(self, timeout: float | None = None) -> bool:
        """Run nothing more; wait up to `timeout` seconds (None: for ever) for running jobs to
        end (cancel their work first). False when some are still running."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if self._stop.is_set():
                    return
                now = time.time()
                if not self._heap or self._heap[0].due > now:
                    timeout = (self._heap[0].due - now) if self._heap else None
                    self._cond.wait(timeout=timeout if timeout is None else max(0.01, timeout))
                    continue
                entry = heapq.heappop(self._heap)
                if self._next.get(entry.name) != entry.due or entry.name in self._running:
                    continue  # stale entry, or a run in progress (it reschedules itself when done)
                self._running.add(entry.name)
                thread = threading.Thread(target=self._run, args=(entry.name,), name=f"satchel-refresh-{entry.name}",
                                          daemon=True)
                self._threads.add(thread)
            thread.start()

    def _run(self, name: str) -> None:
        schedule, job = self._jobs[name]
        try:
            job()
        except Exception:  # jobs report their own failures; the schedule goes on
            log.exception("refresh job %s failed", name)
        finally:
            with self._cond:
                self._running.discard(name)
                self._threads.discard(threading.current_thread())
                if not self._stop.is_set():
                    due = schedule.next_after(time.time())
                    retry = self._retry.pop(name, None)
                    if retry is not None and (due is None or retry < due):
                        due = retry
                    self._push(name, due)
                self._cond.notify()
