"""A sidecar must not hammer its sources: on-demand refreshes coalesce and are rate limited,
statements per source are capped with a short queue, and every statement names who sent it.
Real PostgreSQL (statements counted in its log and seen in pg_stat_activity), real sidecars."""

from __future__ import annotations

import datetime as dt
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
    assert history - 1 == len(started)
    # when each began and ended, as the sidecar recorded it (the responses' arrival jitters)
    runs = server.sql("SELECT started_at, duration_ms FROM runtime.task_history WHERE task = 'refresh' "
                      "ORDER BY started_at").json()[1:]  # after the first load
    spans = [(dt.datetime.fromisoformat(r["started_at"]).timestamp(), r["duration_ms"] / 1000) for r in runs]
    gaps = [b[0] - (a[0] + a[1]) for a, b in zip(spans, spans[1:])]
    assert all(gap >= 2 - 0.05 for gap in gaps), gaps
    assert 0 < len(statements) <= 2 * len(started), statements
    first = refused[0]
    body = first.json()["error"]
    assert body["code"] == "overloaded" and "'hammered'" in body["message"] and "retry in" in body["message"]
    assert all(1 <= int(r.headers["Retry-After"]) <= 2 for r in refused), [r.headers.get("Retry-After") for r in refused]


def _runtime(pg: PgServer, tmp_path, datasets: str, name: str = "capped"):
    from engine.config import load_pod
    from engine.runtime import Runtime

    (tmp_path / "spicepod.yaml").write_text(f"version: v1\nkind: Spicepod\nname: {name}\ndatasets:\n{datasets}")
    return Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))


def _dataset(pg: PgServer, name: str, view: str, extra: str = "", accelerated: bool = False, **params: str) -> str:
    lines = [f"  - from: postgres:public.{view}", f"    name: {name}", "    params:", pg.params_yaml(6)]
    lines += [f"      {k}: {v}" for k, v in params.items()]
    if accelerated:
        lines += ["    acceleration:", "      engine: arrow"]
    return "\n".join(lines) + "\n" + extra


class _Active:
    """Samples how many statements on `view` PostgreSQL runs at once (pg_stat_activity)."""

    def __init__(self, pg: PgServer, view: str) -> None:
        self.pg, self.view, self.peak = pg, view, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self.pg.fetch("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                              f"AND query LIKE '%{self.view}%' AND query NOT LIKE '%pg_stat_activity%'")[0][0]
            self.peak = max(self.peak, n)
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def test_statements_per_source_are_capped_with_a_short_queue(postgres_server: PgServer, tmp_path) -> None:
    from engine.errors import Overloaded

    pg = postgres_server
    _slow_view(pg, "capped_v", 10, 1.0)
    rt = _runtime(pg, tmp_path, _dataset(pg, "capped", "capped_v", max_concurrent_statements="2",
                                         statement_queue_size="2", statement_queue_timeout="5s"))
    try:
        rt.datasets["capped"].schema()  # the catalog lookup, before the clock starts
        active = _Active(pg, "capped_v")
        results: dict[int, object] = {}

        def run(i: int) -> None:
            t = time.monotonic()
            try:  # distinct texts: identical queries at once would share one statement (coalescing)
                rt.query(f"SELECT count(*) AS n, {i} AS i FROM capped").read_all()
                results[i] = ("ok", time.monotonic() - t)
            except Overloaded as e:
                results[i] = (e, time.monotonic() - t)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(30)
        peak = active.stop()
    finally:
        rt.stop()
    done = sorted(d for r, d in results.values() if r == "ok")
    refused = [(r, d) for r, d in results.values() if r != "ok"]
    print(f"peak {peak} statements at once; done after {[round(d, 2) for d in done]} s; "
          f"refused after {[round(d, 2) for _, d in refused]} s")
    assert peak == 2, peak
    assert len(done) == 4 and done[-1] > 1.5  # two ran, two waited their turn
    assert len(refused) == 4 and all(d < 0.5 for _, d in refused)  # refused at once, not after a wait
    e = refused[0][0]
    assert e.http_status == 429 and e.code == "overloaded"
    assert f"port={pg.port}" in e.message and "saturated" in e.message and "max_concurrent_statements" in e.message
    assert "pw=" not in e.message and pg.password not in e.message
    history = {r["error"] for r in rt.task_history.table().to_pylist() if r["task"] == "query" and r["error"]}
    assert len(history) == 1 and "saturated" in history.pop()


def test_refreshes_and_queries_take_turns_at_a_saturated_source(postgres_server: PgServer, tmp_path) -> None:
    """One slot: a query holds it, a second query waits, a third is refused (query queue full);
    a refresh still gets in (its own queue) and goes before the waiting query (turns)."""
    from engine.errors import Overloaded

    pg = postgres_server
    _slow_view(pg, "turns_v", 10, 1.0)
    caps = {"max_concurrent_statements": "1", "statement_queue_size": "1", "statement_queue_timeout": "10s"}
    rt = _runtime(pg, tmp_path, _dataset(pg, "live", "turns_v", **caps)
                  + _dataset(pg, "copy", "turns_v", accelerated=True, **caps), name="turns")
    try:
        for ds in rt.datasets.values():
            ds.schema()
        ended: dict[str, float] = {}
        t0 = time.monotonic()

        def query(tag: str) -> None:  # distinct texts: identical queries at once would share one statement
            rt.query(f"SELECT count(*) AS n, '{tag}' AS tag FROM live").read_all()
            ended[tag] = time.monotonic() - t0

        def refresh() -> None:
            rt.refresh("copy", wait=True)
            ended["refresh"] = time.monotonic() - t0

        threads = [threading.Thread(target=query, args=("q0",)), threading.Thread(target=query, args=("q1",))]
        threads[0].start()
        time.sleep(0.2)
        threads[1].start()
        time.sleep(0.2)
        with pytest.raises(Overloaded, match="query queue of 1"):
            rt.query("SELECT count(*) AS n, 'q2' AS tag FROM live")
        threads.append(threading.Thread(target=refresh))
        threads[-1].start()
        for t in threads:
            t.join(30)
    finally:
        rt.stop()
    print(f"ended at {ended}")
    assert ended["q0"] < ended["refresh"] < ended["q1"], ended
    assert rt.datasets["copy"].rows_loaded == 10


def test_every_statement_names_the_pod_and_the_principal(postgres_server: PgServer, satchel_server) -> None:
    pg = postgres_server
    _slow_view(pg, "whoami_v", 10, 1.5)
    server = satchel_server(f"""
version: v1
kind: Spicepod
name: dba-visible pod
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${{env:SATCHEL_TEST_API_KEY}}"]
datasets:
{_dataset(pg, "whoami", "whoami_v")}{_dataset(pg, "whoami_copy", "whoami_v", accelerated=True)}""", api_key="k-1")

    def seen() -> list[tuple]:
        return pg.fetch("SELECT application_name, query FROM pg_stat_activity WHERE state = 'active' "
                        "AND query LIKE '%whoami_v%' AND query NOT LIKE '%pg_stat_activity%'")

    query = threading.Thread(target=server.sql, args=("SELECT count(*) FROM whoami",))
    query.start()
    assert wait_for(seen, timeout=10)
    (app, text), = seen()
    query.join()
    assert app == "satchel/dba-visible_pod"
    assert text.removeprefix("COPY (").startswith("/* satchel pod=dba-visible_pod principal=api_key_1 task=query */"), text
    r = httpx.post(f"{server.http_url}/v1/datasets/whoami_copy/acceleration/refresh", headers=server.headers(), timeout=10)
    assert r.status_code == 201, r.text
    assert wait_for(seen, timeout=10)
    (app, text), = seen()
    assert app == "satchel/dba-visible_pod" and "/* satchel pod=dba-visible_pod principal=runtime task=refresh */" in text
