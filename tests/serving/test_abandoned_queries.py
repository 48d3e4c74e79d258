"""Abandoned queries never starve the process: clients that give up on queries waiting for a
silent source release their work (the disconnect cancels it down to the source's socket), and
/health, /v1/ready and /v1/status answer throughout, on no thread at all. Real `satchel run`; the
source is a SilentServerDouble (accepts, never answers); no query deadline, so only the
disconnects can end the work."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.integration.waiting import wait_for
from tests.silent_server import SilentServerDouble, silent_server  # noqa: F401 - fixture

CLIENTS = 45  # more than AnyIO's default pool of 40 threads


def _pod(silent: SilentServerDouble) -> str:
    return f"""
version: v1
kind: Spicepod
name: abandoned
runtime:
  params:
    query_timeout: 0s
datasets:
  - from: {silent.url('/never.parquet')}
    name: never
    params:
      http_timeout: 600s
  - from: file:ok.csv
    name: ok
    acceleration:
      engine: arrow
"""


def _abandon(url: str) -> str:
    """POST a query on the silent source and give up after 2 s, as an impatient agent does."""
    try:
        httpx.post(f"{url}/v1/sql", content="SELECT * FROM never", timeout=2)
    except httpx.TimeoutException:
        return "gave up"
    return "answered"


def test_clients_giving_up_release_their_work_and_liveness_never_waits(satchel_server, silent_server):
    server = satchel_server(_pod(silent_server), files={"ok.csv": "a\n1\n"})
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        for round_ in range(2):  # a second flood finds every thread of the first one released
            flood = [pool.submit(_abandon, server.http_url) for _ in range(CLIENTS)]
            for path in ("/health", "/v1/ready", "/v1/status"):  # answered while the flood waits
                assert httpx.get(f"{server.http_url}{path}", timeout=2).status_code == 200, path
            assert [f.result(timeout=60) for f in flood] == ["gave up"] * CLIENTS
            for path in ("/health", "/v1/ready", "/v1/status"):
                assert httpx.get(f"{server.http_url}{path}", timeout=2).status_code == 200, path
            assert server.sql("SELECT a FROM ok").json() == [{"a": 1}], round_
            # the disconnects cancelled the work down to the source: no connection is left open
            # (http_timeout is 600 s, so nothing else could have closed them)
            assert wait_for(lambda: silent_server.open_connections() == 0, timeout=20), \
                (round_, silent_server.open_connections())
    assert silent_server.accepted >= 2  # the queries did reach the source
