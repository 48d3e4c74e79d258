"""A sidecar must not hammer its sources: on-demand refreshes coalesce and are rate limited,
statements per source are capped with a short queue, and every statement names who sent it.
Real PostgreSQL (statements counted in its log and seen in pg_stat_activity), real sidecars."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.integration.postgres_server import PgServer, postgres_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration


def _slow_view(pg: PgServer, name: str, rows: int, sleep_s: float) -> None:
    """A table `<name>_t` and a view `<name>` reading it that takes `sleep_s` per statement."""
    pg.execute(f"DROP TABLE IF EXISTS public.{name}_t CASCADE",
               f"CREATE TABLE public.{name}_t AS SELECT g AS id, 'v' || g AS v FROM generate_series(1, {rows}) g",
               f"CREATE VIEW public.{name} AS SELECT t.id, t.v FROM public.{name}_t t, (SELECT pg_sleep({sleep_s})) s",
               f"GRANT SELECT ON public.{name}_t, public.{name} TO satchel")


def test_hammered_refresh_endpoint_coalesces_and_rate_limits(postgres_server: PgServer, satchel_server) -> None:
    pg = postgres_server
    _slow_view(pg, "hammered", 100, 0.3)
    server = satchel_server(f"""
version: v1
kind: Spicepod
name: hammer
datasets:
  - from: postgres:public.hammered
    name: hammered
    params:
{pg.params_yaml(6)}
    acceleration:
      engine: arrow
      params:
        refresh_min_interval: 2s
""")
    offset = pg.log_offset()
    url = f"{server.http_url}/v1/datasets/hammered/acceleration/refresh"
    statuses: Counter = Counter()
    started: list[float] = []
    refused: list[httpx.Response] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            while time.monotonic() - t0 < 6:
                r = client.post(url)
                with lock:
                    statuses[r.status_code] += 1
                    if r.status_code == 201 and not r.json()["joined"]:
                        started.append(time.monotonic() - t0)
                    elif r.status_code == 429 and len(refused) < 50:
                        refused.append(r)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_for(lambda: all(not d["status"].startswith("refresh") for d in
                                httpx.get(f"{server.http_url}/v1/datasets", timeout=10).json()), timeout=10)
    total = sum(statuses.values())
    history = server.sql("SELECT count(*) AS n FROM runtime.task_history WHERE task = 'refresh'").json()[0]["n"]
    statements = [s for s in pg.statements_since(offset) if "hammered" in s]
    print(f"{total} requests in 6s: {dict(statuses)}; refreshes started at {started}; "
          f"{history - 1} refreshes after the first load; {len(statements)} statements on the source")
    assert total > 100 and statuses[429] > 50, statuses
    # each accepted refresh ran once; requests during one joined it; the next came >= 2 s after it ended
    assert 2 <= len(started) <= 3, started
    assert all(b - a >= 2.3 for a, b in zip(started, started[1:])), started
    assert history - 1 == len(started)
    assert 0 < len(statements) <= 2 * len(started), statements
    first = refused[0]
    body = first.json()["error"]
    assert body["code"] == "overloaded" and "'hammered'" in body["message"] and "retry in" in body["message"]
    assert all(1 <= int(r.headers["Retry-After"]) <= 2 for r in refused), [r.headers.get("Retry-After") for r in refused]
