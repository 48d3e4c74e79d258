"""Fixtures for the Flight SQL server tests: an in-process server over the DuckDB runtime
double, optionally with an API key, TLS (self-signed certificate made with the openssl CLI)
or a short handle TTL."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_DOUBLE_PATH = Path(__file__).with_name("duckdb_runtime_double.py")


def _load_double():
    """Import the runtime double by path (pytest runs with --import-mode=importlib)."""
    name = "satchel_tests_duckdb_runtime_double"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _DOUBLE_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class FlightEndpoint:
    """A running Flight SQL server as tests see it."""

    uri: str
    host: str
    port: int
    api_key: str | None
    ca_cert: bytes | None
    server: object
    runtime: object


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path
    key_file: Path

    @property
    def cert(self) -> bytes:
        return self.cert_file.read_bytes()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1/localhost, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl CLI is required to generate the test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return TlsFiles(cert, key)


@pytest.fixture
def start_flight(tls_files: TlsFiles) -> Iterator[Callable[..., FlightEndpoint]]:
    """Factory: start_flight(api_key=None, tls=False, handle_ttl_seconds=600, not_ready=())."""
    from serving.flight_sql import SatchelFlightSqlServer

    double = _load_double()
    started: list[tuple[object, threading.Thread]] = []

    def start(
        api_key: str | None = None,
        tls: bool = False,
        handle_ttl_seconds: float = 600,
        not_ready: tuple[str, ...] = (),
        max_handles: int = 10_000,
    ) -> FlightEndpoint:
        runtime = double.DuckDBRuntimeDouble(api_key=api_key, not_ready=not_ready)
        server = SatchelFlightSqlServer(
            runtime,
            "grpc://127.0.0.1:0",
            tls_cert_file=str(tls_files.cert_file) if tls else None,
            tls_key_file=str(tls_files.key_file) if tls else None,
            handle_ttl_seconds=handle_ttl_seconds,
            max_handles=max_handles,
        )
        thread = threading.Thread(target=server.serve, name="flight-sql-test", daemon=True)
        thread.start()
        started.append((server, thread))
        scheme = "grpc+tls" if tls else "grpc"
        return FlightEndpoint(
            uri=f"{scheme}://127.0.0.1:{server.port}",
            host="127.0.0.1",
            port=server.port,
            api_key=api_key,
            ca_cert=tls_files.cert if tls else None,
            server=server,
            runtime=runtime,
        )

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def endpoint(start_flight: Callable[..., FlightEndpoint]) -> FlightEndpoint:
    """A plain server: no auth, no TLS."""
    return start_flight()
