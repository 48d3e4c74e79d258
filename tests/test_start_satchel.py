"""The server fixture survives the race it cannot avoid: a port probed as free and taken by
another process before satchel binds it is retried on fresh ports (it once failed CI)."""

from __future__ import annotations

import socket

import httpx

import tests.conftest as fixtures


def test_a_port_taken_after_the_probe_is_retried_on_fresh_ports(tmp_path, monkeypatch) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    handed = iter([taken.getsockname()[1]])  # the first probe returns a port someone holds
    real = fixtures.free_port
    monkeypatch.setattr(fixtures, "free_port", lambda: next(handed, None) or real())
    pod = "version: v1\nkind: Spicepod\nname: ports\n"
    server = fixtures.start_satchel(tmp_path / "pod", pod, wait_ready=False)
    try:
        assert taken.getsockname()[1] not in (server.http_port, server.flight_port, server.metrics_port)
        assert httpx.get(f"{server.http_url}/health", timeout=10).status_code == 200
    finally:
        server.stop()
        taken.close()
