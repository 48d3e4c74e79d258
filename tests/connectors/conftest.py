"""Fixtures for the connector tests: reference files in every format, and a real HTTP server.

The server (a ThreadingHTTPServer on 127.0.0.1, in a thread) serves `root` under:
- /public/<path>       anyone;
- /secure/<path>       only with header `X-Api-Key: <HTTP_API_KEY>` (401 otherwise);
- /bearer/<path>       only with `Authorization: Bearer <HTTP_TOKEN>`;
- /basic/<path>        only with basic auth HTTP_USER:HTTP_PASSWORD;
- /slow/<path>         after a 3 s pause (timeouts);
- /redirect?to=<url>   302 to <url>;
- /export?kind=<fmt>   <root>/reference.<fmt> with a Content-Type and no extension in the URL
                       (kind=raw: CSV sent as application/octet-stream).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tests.connectors.conformance import ALL_COLUMNS, CSV_COLUMNS, JSON_COLUMNS, reference_table

HTTP_API_KEY = "k3y-Sh0uld-N3ver-Leak"
HTTP_TOKEN = "t0ken-Sh0uld-N3ver-Leak"
HTTP_USER, HTTP_PASSWORD = "reader", "pa55-Sh0uld-N3ver-Leak"


# -- writers (the reference table as each format carries it) -------------------------------

def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path)


def write_csv(table: pa.Table, path: Path) -> None:
    pcsv.write_csv(table, path)


def _json_value(value, index: int):
    """JSON text for a value: ISO dates, some instants written with a +05:30 offset."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None and index % 3 == 0:
            value = value.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _json_rows(table: pa.Table) -> list[dict]:
    return [{k: _json_value(v, i) for k, v in row.items()} for i, row in enumerate(table.to_pylist())]


def write_ndjson(table: pa.Table, path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in _json_rows(table)), encoding="utf-8")


def write_json_array(table: pa.Table, path: Path) -> None:
    path.write_text(json.dumps(_json_rows(table), indent=1), encoding="utf-8")


def write_json_records(table: pa.Table, path: Path) -> None:
    doc = {"meta": {"count": table.num_rows, "source": "test"}, "records": _json_rows(table)}
    path.write_text(json.dumps(doc), encoding="utf-8")


@dataclass
class ConformanceFiles:
    root: Path

    def __getitem__(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture(scope="session")
def conformance_files(tmp_path_factory: pytest.TempPathFactory) -> ConformanceFiles:
    """Every reference layout: single files, a directory of Parquet parts, CSV parts for a glob."""
    root = tmp_path_factory.mktemp("conformance")
    full = reference_table(ALL_COLUMNS)
    text = reference_table(CSV_COLUMNS)
    js = reference_table(JSON_COLUMNS, nan=False)
    write_parquet(full, root / "reference.parquet")
    write_csv(text, root / "reference.csv")
    write_ndjson(js, root / "reference.ndjson")
    write_json_array(js, root / "reference.json")
    write_json_records(js, root / "records.json")
    parts = root / "parts"
    (parts / "nested").mkdir(parents=True)
    write_parquet(full.slice(0, 10), parts / "part-0.parquet")
    write_parquet(full.slice(10, 17), parts / "part-1.parquet")
    write_parquet(full.slice(27), parts / "nested" / "part-2.parquet")
    (parts / "_SUCCESS").write_text("")
    (parts / ".hidden.parquet").write_text("not parquet")
    glob_dir = root / "globbed"
    glob_dir.mkdir()
    write_csv(text.slice(0, 25), glob_dir / "orders-2024.csv")
    write_csv(text.slice(25), glob_dir / "orders-2025.csv")
    (glob_dir / "notes.txt").write_text("not data")
    return ConformanceFiles(root)


# -- the HTTP server ----------------------------------------------------------------------

_EXPORT_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8",
                 "parquet": "application/vnd.apache.parquet", "json": "application/json"}


class _Handler(BaseHTTPRequestHandler):
    root: Path  # set on the subclass the fixture makes
    hits: list[str]  # every request path, in order
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once (no delayed-ACK stalls)

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        url = urllib.parse.urlsplit(self.path)
        area, _, rest = url.path.lstrip("/").partition("/")
        if area == "redirect":
            target = urllib.parse.parse_qs(url.query)["to"][0]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if area == "export":
            kind = urllib.parse.parse_qs(url.query).get("kind", [""])[0]
            if kind == "raw":  # data, but nothing says which format
                return self._send_file(self.root / "reference.csv", "application/octet-stream")
            return self._send_file(self.root / f"reference.{kind}", _EXPORT_TYPES.get(kind, "application/octet-stream"))
        if area == "secure" and self.headers.get("X-Api-Key") != HTTP_API_KEY:
            return self._send(401, b"missing or wrong X-Api-Key")
        if area == "bearer" and self.headers.get("Authorization") != f"Bearer {HTTP_TOKEN}":
            return self._send(401, b"bad token")
        if area == "basic":
            expected = "Basic " + base64.b64encode(f"{HTTP_USER}:{HTTP_PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self._send(401, b"bad credentials")
        if area == "slow":
            time.sleep(3)
        if area not in ("public", "secure", "bearer", "basic", "slow"):
            return self._send(404, b"not found")
        self._send_file(self.root / urllib.parse.unquote(rest), "application/octet-stream")

    def _send_file(self, path: Path, content_type: str) -> None:
        if not path.is_file():
            return self._send(404, b"not found")
        self._send(200, path.read_bytes(), content_type)

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Clients closing kept-alive connections are normal; anything else is reported."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class HttpServer:
    base_url: str
    root: Path
    hits: list[str]  # request paths served so far


@pytest.fixture(scope="session")
def http_server(conformance_files: ConformanceFiles) -> HttpServer:
    """A real HTTP server on 127.0.0.1 serving the conformance files (see module docstring)."""
    hits: list[str] = []
    handler = type("Handler", (_Handler,), {"root": conformance_files.root, "hits": hits})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="test-http-server", daemon=True)
    thread.start()
    try:
        yield HttpServer(f"http://127.0.0.1:{server.server_address[1]}", conformance_files.root, hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

