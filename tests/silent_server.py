"""SilentServerDouble: a TEST DOUBLE of a source that accepts TCP connections and never answers
(a hung server, a black-holing proxy). It reads what clients send, never writes a byte, and
counts the connections clients still hold open, so a test sees when a cancel reached the socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest


class SilentServerDouble:
    """Listens on 127.0.0.1; `open_connections()` is how many clients have not hung up yet,
    `accepted` how many ever connected, `requests` the first line each sent."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.accepted = 0
        self.requests: list[str] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="silent-double", daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.add(conn)
                self.accepted += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        """Read until the client hangs up; answer nothing."""
        first = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                if not first:
                    first = data.split(b"\r\n", 1)[0]
                    with self._lock:
                        self.requests.append(first.decode(errors="replace"))
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServerDouble]:
    """A source that accepts connections and never answers (see SilentServerDouble)."""
    server = SilentServerDouble()
    yield server
    server.close()
