"""A throwaway Elasticsearch-compatible server for the integration tests: `noida-db` (PyPI).

No Elasticsearch can be installed here, so the tests run against noida-db's Elasticsearch
service (it reports version 8.15.3 and speaks the REST API the official client uses). One
server per test session on a free 127.0.0.1 port, stopped at the end.

`EsProxy` is a real HTTP reverse proxy in front of it that records every request and how many
hits each response carried, so tests (including ones running the sidecar as a subprocess)
can prove what was pushed down and that points in time were closed.

Import the fixtures with `from tests.integration.elasticsearch_server import es_server  # noqa: F401`.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Iterator

import httpx
import pytest

from tests.integration.waiting import wait_for  # noqa: F401 - re-exported for the tests
from tests.processes import start_group, stop_group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _noida_binary() -> str:
    exe = Path(sys.executable).parent / "noida-db"
    if exe.exists():
        return str(exe)
    found = shutil.which("noida-db")
    if not found:
        pytest.fail("noida-db not found: pip install noida-db (the test extra installs it)", pytrace=False)
    return found


@dataclass
class EsServer:
    url: str
    process: subprocess.Popen
    root: Path
    log_path: Path

    def client(self):
        from elasticsearch import Elasticsearch

        return Elasticsearch(self.url, request_timeout=30)

    def params(self, url: str | None = None) -> dict[str, str]:
        return {"elasticsearch_endpoint": url or self.url}

    def load(self, index: str, mappings: dict, docs: Iterable[dict], ids: Iterable[str] | None = None,
             settings: dict | None = None) -> None:
        """(Re)create `index` with `mappings` and bulk-load `docs` (their `_id`s from `ids`)."""
        from elasticsearch import helpers

        es = self.client()
        try:
            es.indices.delete(index=index, ignore_unavailable=True)
            es.indices.create(index=index, mappings=mappings, settings=settings or {"number_of_shards": 1})
            id_list = list(ids) if ids is not None else None
            actions = ({"_index": index, "_source": d, **({"_id": id_list[i]} if id_list else {})}
                       for i, d in enumerate(docs))
            ok, errors = helpers.bulk(es, actions, refresh=True, raise_on_error=True)
            assert not errors, errors
        finally:
            es.close()

    def stop(self, grace: float = 10.0) -> None:
        """Stop the launcher and the server it runs (the whole process group)."""
        stop_group(self.process, signal.SIGTERM, grace)
        shutil.rmtree(self.root, ignore_errors=True)


def start_es_server(timeout: float = 60) -> EsServer:
    root = Path(tempfile.mkdtemp(prefix="satchel-es-"))
    port = _free_port()
    log_path = root / "noida.log"
    with open(log_path, "ab") as log:
        proc = start_group([_noida_binary(), "start", "--only", "elasticsearch", "--elasticsearch-port", str(port),
                            "--host", "127.0.0.1", "--data-dir", str(root / "data")], stdout=log, stderr=subprocess.STDOUT)
    server = EsServer(f"http://127.0.0.1:{port}", proc, root, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log_path.read_text(errors="replace")
            shutil.rmtree(root, ignore_errors=True)
            pytest.fail(f"noida-db exited with {proc.returncode}:\n{text}", pytrace=False)
        try:
            if httpx.get(server.url, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    pytest.fail(f"noida-db did not answer on {server.url} within {timeout}s", pytrace=False)


@pytest.fixture(scope="session")
def es_server() -> Iterator[EsServer]:
    """One Elasticsearch-compatible server for the session (noida-db)."""
    server = start_es_server()
    try:
        yield server
    finally:
        server.stop()


# -- a recording proxy ---------------------------------------------------------------------------

@dataclass
class Exchange:
    method: str
    path: str
    body: Any  # the request JSON (None if none)
    status: int
    hits: int | None  # len(hits.hits) of a search response


@dataclass
class EsProxy:
    """A reverse proxy to `target` recording every exchange (thread-safe)."""

    target: str
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    # Test-double behaviour on top of the real server (ES's own status codes and error bodies):
    require_authorization: str | None = None  # answer 401 unless this exact Authorization header
    refuse_pit: bool = False  # answer 400 to `POST <index>/_pit`, like a server without the PIT API

    def start(self) -> "EsProxy":
        proxy = self
        client = httpx.Client(base_url=self.target, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                refusal = None
                if proxy.require_authorization and self.headers.get("Authorization") != proxy.require_authorization:
                    refusal = (401, {"error": {"type": "security_exception", "reason": "unable to authenticate "
                                               "user [satchel] for REST request"}, "status": 401})
                elif proxy.refuse_pit and self.command == "POST" and self.path.split("?")[0].endswith("/_pit"):
                    refusal = (400, {"error": {"type": "illegal_argument_exception",
                                               "reason": "request [/_pit] contains unrecognized parameter"}, "status": 400})
                if refusal is not None:
                    content = json.dumps(refusal[1]).encode()
                    with proxy.lock:
                        proxy.exchanges.append(Exchange(self.command, self.path, None, refusal[0], None))
                    self.send_response(refusal[0])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("X-Elastic-Product", "Elasticsearch")
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length",
                                                                                         "connection")}
                resp = client.request(self.command, self.path, content=raw, headers=headers)
                hits = None
                try:
                    doc = resp.json()
                    if isinstance(doc, dict) and isinstance(doc.get("hits"), dict):
                        hits = len(doc["hits"].get("hits") or [])
                except ValueError:
                    pass
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with proxy.lock:
                    proxy.exchanges.append(Exchange(self.command, self.path, body, resp.status_code, hits))
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True, name="es-proxy").start()
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def clear(self) -> None:
        with self.lock:
            self.exchanges.clear()

    def snapshot(self) -> list[Exchange]:
        with self.lock:
            return list(self.exchanges)

    def searches(self) -> list[Exchange]:
        return [e for e in self.snapshot() if "/_search" in e.path and "/_search/scroll" not in e.path]

    def hits_returned(self) -> int:
        return sum(e.hits or 0 for e in self.snapshot())

    def open_pits(self) -> int:
        """PITs opened minus PITs closed through this proxy."""
        ex = self.snapshot()
        opened = sum(1 for e in ex if e.method == "POST" and "/_pit" in e.path and e.path.split("?")[0] != "/_pit")
        closed = sum(1 for e in ex if e.method == "DELETE" and e.path.split("?")[0] == "/_pit")
        return opened - closed


@pytest.fixture
def es_proxy(es_server: EsServer) -> Iterator[EsProxy]:
    proxy = EsProxy(es_server.url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


__all__ = ["EsServer", "EsProxy", "es_server", "es_proxy", "start_es_server", "wait_for"]
