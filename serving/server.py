"""Wires a Runtime to its servers: Flight SQL, HTTP (uvicorn) and Prometheus metrics.

Up first: every server listens before any dataset loads, so `/health` and Flight answer whatever
the sources do. Down within a bound: SIGTERM/SIGINT cancels all source work and the process
exits within `shutdown_timeout` seconds (`--shutdown-timeout`, default 10), whatever is still
running then."""

from __future__ import annotations

import errno
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable

import pyarrow as pa
import uvicorn
from prometheus_client import start_http_server

from engine.config import load_pod
from engine.errors import StartupError
from engine.runtime import Runtime

from .flight_sql.server import SatchelFlightSqlServer
from .http.app import create_app
from .llm.providers import ModelRegistry

log = logging.getLogger("satchel.server")
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0
# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms). A
# request thread coming back from DuckDB, gRPC or a socket (each of which releases the GIL)
# otherwise waits up to 5 ms for a busy Python thread to let go. bench/concurrency.py, alternating
# 0.5 ms with the default: +8-18% queries/s at 1 client and +8-15% at 32 (bench notes, issue 16).
GIL_SWITCH_INTERVAL_S = 0.0005


def listen(host: str, port: int, flag: str, keep: bool = False) -> socket.socket | None:
    """Bind `host:port` (the address of option `flag`); StartupError naming both when that fails.
    With `keep`, the listening socket (for uvicorn); else a probe, closed at once (gRPC and the
    metrics server bind their own: a probe without SO_REUSEPORT sees a port a gRPC server holds)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise StartupError(f"cannot listen on {host}:{port} ({flag}): {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} is already in use ({flag})") from None
        raise StartupError(f"cannot listen on {host}:{port} ({flag}): {e.strerror or e}") from None
    if keep:
        return sock
    sock.close()
    return None


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`, or `:port`) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _address(value: str, default_port: int, flag: str) -> tuple[str, int]:
    try:
        return split_address(value, default_port)
    except ValueError:
        raise StartupError(f"invalid address {value!r} ({flag}); expected host:port") from None


class _Deadline:
    """The shutdown bound, armed by the first SIGTERM/SIGINT. Its backstop is faulthandler's C
    thread (it needs no GIL): past the bound it prints every thread's stack and exits (code 1)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at: float | None = None
        self.on_arm: list[Callable[[], None]] = []  # run at once, e.g. cancelling all source work

    def arm(self) -> None:
        if self.at is None:
            self.at = time.monotonic() + self.seconds
            log.info("satchel: stopping (at most %gs)", self.seconds)
            faulthandler.dump_traceback_later(self.seconds + 0.5, exit=True)
            for hook in self.on_arm:  # before servers drain: their requests wait on this work
                hook()

    def left(self) -> float:
        return self.seconds if self.at is None else max(0.0, self.at - time.monotonic())


class _Server(uvicorn.Server):
    """uvicorn that calls `on_listening` once its sockets accept, and arms the shutdown deadline
    at the first signal it captures."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None], deadline: _Deadline) -> None:
        super().__init__(config)
        self._on_listening, self._deadline = on_listening, deadline

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await super().startup(sockets)
        if self.started:
            self._on_listening()

    def handle_exit(self, sig: int, frame: object) -> None:
        self._deadline.arm()
        super().handle_exit(sig, frame)


def serve(pod_path: str, http: str, flight: str, metrics: str | None, data_dir: str | None,
          shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    deadline = _Deadline(shutdown_timeout)
    signal.signal(signal.SIGTERM, lambda signum, frame: _exit_on_signal(deadline, SystemExit(0)))
    signal.signal(signal.SIGINT, lambda signum, frame: _exit_on_signal(deadline, KeyboardInterrupt()))
    flight_host, flight_port = _address(flight, 50051, "--flight")
    h_host, h_port = _address(http, 8090, "--http")
    m_host, m_port = _address(metrics, 9090, "--metrics") if metrics else ("", 0)
    http_socket = listen(h_host, h_port, "--http", keep=True)  # before anything: a port in use is one line
    assert http_socket is not None
    h_port = http_socket.getsockname()[1]  # the port chosen, for `--http 127.0.0.1:0`
    if flight_port:
        listen(flight_host, flight_port, "--flight")
    if metrics and m_port:
        listen(m_host, m_port, "--metrics")
    pod = load_pod(pod_path)
    runtime = Runtime(pod, data_dir=data_dir)  # builds connectors: no source is contacted yet
    deadline.on_arm.append(runtime.scopes.cancel_all)
    tls = pod.runtime.tls
    cert, key = (tls.certificate_file, tls.key_file) if tls.enabled else (None, None)
    scheme = "grpc+tls" if cert else "grpc+tcp"
    ttl = float(os.environ.get("SATCHEL_FLIGHT_HANDLE_TTL", "600"))
    try:
        flight_server = SatchelFlightSqlServer(runtime, f"{scheme}://{flight_host}:{flight_port}", cert, key,
                                               handle_ttl_seconds=ttl)
    except pa.ArrowException:  # taken between the probe and now (gRPC says no more than that)
        raise StartupError(f"cannot listen on {flight_host}:{flight_port} (--flight); is the port in use?") from None
    threading.Thread(target=flight_server.serve, name="satchel-flight", daemon=True).start()
    if metrics:
        try:
            start_http_server(m_port, addr=m_host, registry=runtime.metrics.registry)
        except OSError:  # taken between the probe and now
            raise StartupError(f"port {m_port} is already in use (--metrics)") from None
    models = ModelRegistry(pod, runtime.task_history, runtime.metrics, cache_dir=str(runtime.data_dir / "models"))
    runtime.embedders.attach(models.embedder)  # the engine's contracts: it never imports serving
    runtime.ai.attach(models.get)

    def start_work() -> None:  # servers listen: now load models and datasets, in the background
        log.info("satchel %s: flight %s://%s:%d, http %s:%d, metrics %s", pod.name, scheme, flight_host,
                 flight_server.port, h_host, h_port, metrics or "off")
        if deadline.at is None:
            models.start()
            runtime.start()

    config = uvicorn.Config(create_app(runtime, models), host=h_host, port=h_port, log_level="warning",
                            loop="uvloop", http="httptools",
                            ssl_certfile=cert, ssl_keyfile=key,
                            timeout_graceful_shutdown=max(1, int(deadline.seconds / 2)))
    server = _Server(config, lambda: threading.Thread(target=start_work, name="satchel-start", daemon=True).start(),
                     deadline)
    try:
        server.run(sockets=[http_socket])
    finally:
        deadline.arm()
        log.info("satchel: shutting down")
        _bounded(flight_server.shutdown, deadline)
        _bounded(models.stop, deadline)
        runtime.stop(timeout=deadline.left())
    return 0


def _bounded(fn: Callable[[], None], deadline: _Deadline) -> None:
    """`fn()`, waited for until the shutdown deadline (it may wait on work that does not end)."""
    thread = threading.Thread(target=fn, name=f"satchel-stop-{getattr(fn, '__name__', 'step')}", daemon=True)
    thread.start()
    thread.join(deadline.left())


def _exit_on_signal(deadline: _Deadline, error: BaseException) -> None:
    """A signal outside uvicorn's own handling (before it serves, or after): arm the bound and
    unwind through serve()'s cleanup. uvicorn re-raises the signal it handled once it stopped."""
    deadline.arm()
    raise error
