"""A real paginating JSON API for the http connector's API-mode tests, run as a subprocess.

`python tests/connectors/http_api_server.py` serves on a free 127.0.0.1 port (printed as
`PORT <n>` on stdout) until terminated. Stdlib only. Data and behaviour are set over HTTP:

- `POST /_data/<name>` `{"records": [...], "headers": {...}, "query": {...}}`: a collection;
  every data request must carry those headers / query parameters (else 401).
- `POST /_faults` `{"faults": [{"match": "/page/x", "status": 503, "retry_after": "1",
  "delay": 0.5, "times": 1}]}`: the next `times` data requests whose path+query contains `match`
  answer `status` (with `Retry-After` when given) after `delay` seconds (status 200 = the
  normal answer, late).
- `GET /_stats`: every data request so far `{"t": <monotonic seconds>, "path", "status"}`;
  `POST /_reset` forgets requests and faults.

Data routes (`<name>` a collection; page size parameters default to 10):
- `/plain/<name>`: the whole collection as a bare JSON array; `/text/<name>`: not JSON.
- `/link/<name>?page=&per_page=`: `{"data": {"items": [...]}}` + `Link: <...>; rel="next"`.
- `/cursor/<name>?after=&limit=`: `{"data": {"items"}, "paging": {"next_cursor": "..."|null}}`.
- `/nexturl/<name>?token=`: `{"results": [...], "next": "<absolute URL>"|null}` (`next_host=localhost`:
  the next URL names that host, another origin).
- `/page/<name>?p=&size=`: page numbers from 1, `{"data": {"items"}}`.
- `/offset/<name>?skip=&take=`: `{"data": {"items"}, "total": n}`.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_SIZE = 10


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.collections: dict[str, dict] = {}
        self.faults: list[dict] = []
        self.requests: list[dict] = []


STATE = State()


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(text: str) -> int:
    return int(base64.urlsafe_b64decode(text.encode()).decode().split(":")[1])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args) -> None:
        pass

    # -- control -----------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = urllib.parse.urlsplit(self.path).path
        with STATE.lock:
            if path.startswith("/_data/"):
                STATE.collections[path[len("/_data/"):]] = {
                    "records": body.get("records", []), "headers": body.get("headers", {}),
                    "query": body.get("query", {})}
            elif path == "/_faults":
                for fault in body.get("faults", []):
                    STATE.faults.append({"times": 1, "delay": 0.0, "status": 200, **fault})
            elif path == "/_reset":
                STATE.faults.clear()
                STATE.requests.clear()
            else:
                return self._json(404, {"error": "unknown control route"})
        self._json(200, {"ok": True})

    # -- data --------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_stats":
            with STATE.lock:
                return self._json(200, {"requests": list(STATE.requests)})
        arrived = time.monotonic()
        style, _, name = url.path.lstrip("/").partition("/")
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        with STATE.lock:
            fault = next((f for f in STATE.faults if f["match"] in self.path and f["times"] > 0), None)
            if fault is not None:
                fault["times"] -= 1
            collection = STATE.collections.get(name)
        status, body, headers = self._answer(style, name, query, collection)
        if fault is not None and int(fault["status"]) != 200:
            status, body = int(fault["status"]), {"error": "injected fault"}
            headers = {"Retry-After": str(fault["retry_after"])} if fault.get("retry_after") is not None else {}
        with STATE.lock:  # recorded on arrival, so a delayed answer is counted at once
            STATE.requests.append({"t": arrived, "path": self.path, "status": status})
        if fault is not None:
            time.sleep(float(fault["delay"]))
        self._json(status, body, headers)

    def _answer(self, style: str, name: str, query: dict, collection: dict | None) -> tuple[int, object, dict]:
        if collection is None:
            return 404, {"error": f"no collection '{name}'"}, {}
        for header, value in collection["headers"].items():
            if self.headers.get(header) != value:
                return 401, {"error": f"missing or wrong {header}"}, {}
        for key, value in collection["query"].items():
            if query.get(key) != value:
                return 401, {"error": f"missing or wrong query parameter {key}"}, {}
        records = collection["records"]
        host = f"http://{self.headers.get('Host')}"
        if style == "plain":
            return 200, records, {}
        if style == "text":  # not JSON at all
            return 200, b"<html>this is not JSON</html>", {}
        if style == "link":
            page, size = int(query.get("page", 1)), int(query.get("per_page", DEFAULT_SIZE))
            items = records[(page - 1) * size:page * size]
            links = []
            if page * size < len(records):
                nxt = urllib.parse.urlencode({**query, "page": page + 1, "per_page": size})
                links.append(f'<{host}/link/{name}?{nxt}>; rel="next"')
            links.append(f'<{host}/link/{name}?page=1&per_page={size}>; rel="first"')
            return 200, {"data": {"items": items}}, {"Link": ", ".join(links)}
        if style == "cursor":
            start = _decode_cursor(query["after"]) if query.get("after") else 0
            size = int(query.get("limit", DEFAULT_SIZE))
            items = records[start:start + size]
            more = start + size < len(records)
            return 200, {"data": {"items": items}, "paging": {"next_cursor": _encode_cursor(start + size) if more else None}}, {}
        if style == "nexturl":
            start = _decode_cursor(query["token"]) if query.get("token") else 0
            items = records[start:start + DEFAULT_SIZE]
            nxt = None
            if start + DEFAULT_SIZE < len(records):
                if query.get("next_host"):  # send the client to another origin (same server)
                    host = f"http://{query['next_host']}:{self.server.server_address[1]}"
                nxt = f"{host}/nexturl/{name}?" + urllib.parse.urlencode({**query, "token": _encode_cursor(start + DEFAULT_SIZE)})
            return 200, {"results": items, "next": nxt}, {}
        if style == "page":
            page, size = int(query.get("p", 1)), int(query.get("size", DEFAULT_SIZE))
            if page < 1:
                return 400, {"error": "pages start at 1"}, {}
            return 200, {"data": {"items": records[(page - 1) * size:page * size]}}, {}
        if style == "offset":
            skip, take = int(query.get("skip", 0)), int(query.get("take", DEFAULT_SIZE))
            return 200, {"data": {"items": records[skip:skip + take]}, "total": len(records)}, {}
        return 404, {"error": f"no route '{style}'"}, {}

    def _json(self, status: int, body: object, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


# -- the test side: start the server as a subprocess and drive it -------------------------------


class ApiServer:
    """A running http_api_server subprocess, as tests see it."""

    def __init__(self, process, port: int):
        import httpx

        self.process, self.port = process, port
        self.base_url = f"http://127.0.0.1:{port}"
        self._http = httpx.Client(base_url=self.base_url, timeout=10)

    def load(self, name: str, records: list, headers: dict | None = None, query: dict | None = None) -> None:
        self._http.post(f"/_data/{name}", json={"records": records, "headers": headers or {},
                                                 "query": query or {}}).raise_for_status()

    def faults(self, *faults: dict) -> None:
        self._http.post("/_faults", json={"faults": list(faults)}).raise_for_status()

    def requests(self) -> list[dict]:
        return self._http.get("/_stats").json()["requests"]

    def reset(self) -> None:
        self._http.post("/_reset").raise_for_status()

    def stop(self) -> None:
        self._http.close()
        from tests.processes import stop_group

        stop_group(self.process)


def start_api_server() -> ApiServer:
    """Start the server (this file) with the running interpreter; returns once it listens."""
    import subprocess

    from tests.processes import start_group, stop_group

    process = start_group([sys.executable, __file__], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        stop_group(process)
        raise RuntimeError(f"http_api_server did not start: {line!r}")
    return ApiServer(process, int(line.split()[1]))


def main() -> None:
    server = Server(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
