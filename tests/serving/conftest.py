"""Fixtures for the Flight SQL server tests.

Two kinds of server:

* the REAL `satchel run` subprocess (session-scoped, started through `start_satchel` from
  tests/conftest.py) over a pod with `trips`, `cities`, the view `trip_cities` and the
  runtime table `runtime.task_history`: `satchel_flight` (no auth), `satchel_flight_auth`
  (API key), `satchel_flight_tls` (TLS + API key), `satchel_flight_not_ready` (a dataset
  that never finishes loading);
* an in-process server over the DuckDB runtime TEST DOUBLE (`start_double_flight`,
  `double_endpoint`), only for tests that look inside the server (handle counts, TTLs,
  injected failures) or need behaviour the engine cannot be made to show on demand.

TLS uses a self-signed certificate made with the openssl CLI."""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

_ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"
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


def _load_root_conftest():
    """tests/conftest.py as a module (for `start_satchel`, which session fixtures need)."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(_ROOT_CONFTEST) and hasattr(module, "start_satchel"):
            return module
    name = "satchel_tests_root_conftest"
    spec = importlib.util.spec_from_file_location(name, _ROOT_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------- the real server

TRIPS_ROWS = 10_000
CITIES = (("paris", "FR"), ("oslo", "NO"), ("lima", "PE"))


def trips_table() -> pa.Table:
    """`trips`: id 1..10000, city cycling oslo/lima/paris, fare = 1.5 * id, hourly starts."""
    ids = list(range(1, TRIPS_ROWS + 1))
    start = dt.datetime(2024, 1, 1)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "city": pa.array([CITIES[i % 3][0] for i in ids], pa.string()),
            "fare": pa.array([i * 1.5 for i in ids], pa.float64()),
            "started_at": pa.array([start + dt.timedelta(hours=i) for i in ids], pa.timestamp("us")),
        }
    )


def pod_files() -> dict[str, bytes | str]:
    buffer = io.BytesIO()
    pq.write_table(trips_table(), buffer)
    cities = "name,country\n" + "".join(f"{name},{country}\n" for name, country in CITIES)
    return {"trips.parquet": buffer.getvalue(), "cities.csv": cities}


_DATASETS = """\
datasets:
  - from: file:trips.parquet
    name: trips
    description: One row per taxi trip.
    acceleration:
      engine: duckdb
      primary_key: id
  - from: file:cities.csv
    name: cities
    description: Cities (read live from the CSV file).
views:
  - name: trip_cities
    sql: SELECT t.id, c.country FROM trips t JOIN cities c ON t.city = c.name
"""


def pod_yaml(name: str, runtime: str = "", datasets: str = _DATASETS) -> str:
    return f"version: v1\nkind: Spicepod\nname: {name}\n{runtime}{datasets}"


def _auth_runtime(tls: TlsFiles | None = None) -> str:
    text = (
        "runtime:\n"
        "  auth:\n"
        "    api_key:\n"
        "      enabled: true\n"
        '      keys: ["${env:SATCHEL_TEST_API_KEY}"]\n'
    )
    if tls is not None:
        text += (
            "  tls:\n"
            "    enabled: true\n"
            f"    certificate_file: {tls.cert_file}\n"
            f"    key_file: {tls.key_file}\n"
        )
    return text


@dataclass
class RealFlightEndpoint:
    """A real `satchel run` subprocess as the Flight SQL tests see it."""

    uri: str
    host: str
    port: int
    api_key: str | None
    ca_cert: bytes | None
    satchel: object  # tests/conftest.py SatchelServer: .log(), .http_url, .stop()


def _start_real(folder: Path, yaml_text: str, **kwargs) -> tuple[object, RealFlightEndpoint]:
    for name, content in pod_files().items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    tls = kwargs.pop("ca_cert", None)
    server = _load_root_conftest().start_satchel(folder, yaml_text, tls=tls is not None, **kwargs)
    scheme = "grpc+tls" if tls is not None else "grpc+tcp"
    endpoint = RealFlightEndpoint(
        uri=f"{scheme}://127.0.0.1:{server.flight_port}",
        host="127.0.0.1",
        port=server.flight_port,
        api_key=server.api_key,
        ca_cert=tls,
        satchel=server,
    )
    return server, endpoint


@pytest.fixture(scope="session")
def satchel_flight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealFlightEndpoint]:
    """The real server, no auth, no TLS."""
    server, endpoint = _start_real(tmp_path_factory.mktemp("flight_pod"), pod_yaml("flight_tests"))
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def satchel_flight_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealFlightEndpoint]:
    """The real server with API key `k-123`."""
    server, endpoint = _start_real(
        tmp_path_factory.mktemp("flight_auth_pod"),
        pod_yaml("flight_auth_tests", _auth_runtime()),
        api_key="k-123",
    )
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def satchel_flight_tls(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[RealFlightEndpoint]:
    """The real server with TLS (self-signed certificate) and API key `k-tls`."""
    server, endpoint = _start_real(
        tmp_path_factory.mktemp("flight_tls_pod"),
        pod_yaml("flight_tls_tests", _auth_runtime(tls_files)),
        api_key="k-tls",
        ca_cert=tls_files.cert,
    )
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def satchel_flight_not_ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealFlightEndpoint]:
    """The real server where `cities` (ready_state: on_load, missing file) never loads."""
    datasets = _DATASETS.replace(
        "  - from: file:cities.csv\n    name: cities\n",
        "  - from: file:missing/cities.csv\n    name: cities\n    ready_state: on_load\n"
        "    acceleration:\n      engine: arrow\n",
    )
    assert datasets != _DATASETS
    server, endpoint = _start_real(
        tmp_path_factory.mktemp("flight_not_ready_pod"),
        pod_yaml("flight_not_ready_tests", datasets=datasets),
        wait_ready=False,
    )
    yield endpoint
    server.stop()


# ---------------------------------------------------------------------- the test double


@dataclass
class DoubleFlightEndpoint:
    """An in-process Flight SQL server over the runtime TEST DOUBLE, as tests see it."""

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
def start_double_flight(tls_files: TlsFiles) -> Iterator[Callable[..., DoubleFlightEndpoint]]:
    """Factory of in-process servers over the runtime TEST DOUBLE:
    start_double_flight(api_key=None, tls=False, handle_ttl_seconds=600, not_ready=())."""
    from serving.flight_sql.server import SatchelFlightSqlServer

    double = _load_double()
    started: list[tuple[object, threading.Thread]] = []

    def start(
        api_key: str | None = None,
        tls: bool = False,
        handle_ttl_seconds: float = 600,
        not_ready: tuple[str, ...] = (),
        max_handles: int = 10_000,
    ) -> DoubleFlightEndpoint:
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
        return DoubleFlightEndpoint(
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
def double_endpoint(start_double_flight: Callable[..., DoubleFlightEndpoint]) -> DoubleFlightEndpoint:
    """An in-process server over the runtime TEST DOUBLE: no auth, no TLS."""
    return start_double_flight()
