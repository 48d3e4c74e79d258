"""`satchel run` shuts down cleanly on SIGTERM (Kubernetes) and SIGINT (Ctrl-C)."""

from __future__ import annotations

import signal

import pytest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_servers_and_runtime(satchel_server, demo_pod_dir, sig):
    server = satchel_server(pod_dir=demo_pod_dir)
    assert server.sql("SELECT count(*) FROM orders").json() == [{"count": 6000}]
    server.process.send_signal(sig)
    code = server.process.wait(timeout=20)
    assert "satchel: shutting down" in server.log()
    assert code in (0, 130), server.log()
