"""Wires a Runtime to its servers: Flight SQL, HTTP (uvicorn) and Prometheus metrics."""

from __future__ import annotations

import logging
import os
import signal
import threading

import uvicorn
from prometheus_client import start_http_server

from engine.config import load_pod
from engine.runtime import Runtime

from .flight_sql.server import SatchelFlightSqlServer
from .http.app import create_app
from .llm.providers import ModelRegistry

log = logging.getLogger("satchel.server")


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`, or `:port`) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    return (host.strip("[]") or "127.0.0.1"), int(port)


def serve(pod_path: str, http: str, flight: str, metrics: str | None, data_dir: str | None) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code."""
    pod = load_pod(pod_path)
    runtime = Runtime(pod, data_dir=data_dir)
    tls = pod.runtime.tls
    cert, key = (tls.certificate_file, tls.key_file) if tls.enabled else (None, None)
    flight_host, flight_port = split_address(flight, 50051)
    scheme = "grpc+tls" if cert else "grpc+tcp"
    ttl = float(os.environ.get("SATCHEL_FLIGHT_HANDLE_TTL", "600"))
    flight_server = SatchelFlightSqlServer(runtime, f"{scheme}://{flight_host}:{flight_port}", cert, key,
                                           handle_ttl_seconds=ttl)
    threading.Thread(target=flight_server.serve, name="satchel-flight", daemon=True).start()
    if metrics:
        m_host, m_port = split_address(metrics, 9090)
        start_http_server(m_port, addr=m_host, registry=runtime.metrics.registry)
    models = ModelRegistry(pod, runtime.task_history, runtime.metrics)
    models.start()
    runtime.start()
    h_host, h_port = split_address(http, 8090)
    log.info("satchel %s: flight %s://%s:%d, http %s:%d, metrics %s", pod.name, scheme, flight_host,
             flight_server.port, h_host, h_port, metrics or "off")
    config = uvicorn.Config(create_app(runtime, models), host=h_host, port=h_port, log_level="warning",
                            ssl_certfile=cert, ssl_keyfile=key, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: make SIGTERM
    # raise SystemExit (as SIGINT raises KeyboardInterrupt) so the cleanup below still runs.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run()
    finally:
        log.info("satchel: shutting down")
        flight_server.shutdown()
        models.stop()
        runtime.stop()
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)
