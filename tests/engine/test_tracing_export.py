"""runtime.tracing must never cost the data plane: a collector that hangs neither slows queries
nor holds the shutdown (the OTLP export runs on the SDK's batch thread with a short timeout)."""

from __future__ import annotations

ITEMS = "id,name\n" + "".join(f"{i},item{i}\n" for i in range(1, 6))


def test_a_collector_that_never_answers_costs_no_query_and_no_shutdown_time(make_runtime) -> None:
    """runtime.tracing pointed at a server that accepts and never answers (a hung collector):
    queries answer as usual and stopping the runtime stays within a few seconds."""
    import time

    from tests.silent_server import SilentServerDouble

    silent = SilentServerDouble()
    try:
        runtime = make_runtime(f"""
version: v1
kind: Spicepod
name: hung_collector
runtime:
  tracing:
    otlp_endpoint: http://127.0.0.1:{silent.port}
datasets:
  - from: file:items.csv
    name: items
""", files={"items.csv": ITEMS}, start=True)
        started = time.monotonic()
        for _ in range(20):
            assert runtime.query("SELECT count(*) AS n FROM items").read_all().to_pylist() == [{"n": 5}]
        assert time.monotonic() - started < 5
        time.sleep(1.5)  # the batch processor is now blocked exporting to the silent server
        stopping = time.monotonic()
        runtime.stop()
        assert time.monotonic() - stopping < 8
    finally:
        silent.close()
