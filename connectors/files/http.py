"""`from: http://...` / `https://...` — a Parquet, CSV, JSON or NDJSON file over HTTP(S).

Each scan streams the body to a temporary file (bounded memory) and reads it with the same
code as `file:`; the schema comes from the first download and is then frozen. Every task
(a query, a refresh, a retry) downloads afresh, so a refresh sees new data; within one task
the download that inferred the schema is the one its scan reads, so a first load fetches
the file once.

Params:
- `file_format`, `csv_has_header`, `csv_delimiter` as for `file:`; without `file_format` the
  format comes from the URL's extension, else from the response Content-Type.
- `http_headers`: extra request headers, `"Name: value; Name2: value2"` (a value cannot hold
  `;`), or a JSON object `{"Name": "value"}` when it must.
- `http_auth`: `Bearer <token>` or `basic <user>:<password>`.
- `http_timeout`: connect/read timeout as a duration (`30s`, `500ms`, `2m`); default 30s.

Header values, credentials and query-string values never appear in logs or errors: URLs are
reported without user info and with query values masked. Redirects are followed; configured
headers are not sent to another origin.

Any JSON API param (`json_pointer`, `http_pagination`, ...; see connectors/files/http_api.py) selects
the paginated JSON API mode instead: the registry (connectors/registry.py) then builds an HttpApiConnector.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
import urllib.parse
import weakref
from typing import Sequence

import httpx
import pyarrow as pa

from engine.errors import ConnectorError, QueryTimeout, RequestCancelled, SatchelError

from ..base import CALLER, CancelScope, DatasetSpec, Filter, FilterSupport
from ..params import EXTENSIONS, check_params, check_type_action, format_of_path, parse_duration
from .file import FILE_PARAMS, explicit_format, read_options
from .filesource import FileSource

log = logging.getLogger("satchel.connectors")

HTTP_PARAMS = FILE_PARAMS + ("http_headers", "http_auth", "http_timeout")
DEFAULT_TIMEOUT = 30.0
CHUNK = 1 << 20
_CONTENT_TYPES = {
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/x-jsonlines": "ndjson",
    "application/jsonlines": "ndjson",
}


def redact_url(url: str) -> str:
    """`url` without user info or fragment, query values masked: safe for logs and errors."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    except ValueError:
        return "<unparsable URL>"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_headers(dataset: str, text: str) -> dict[str, str]:
    """`Name: value; Name2: value2` or a JSON object -> headers (errors never echo values)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise ConnectorError(f"dataset '{dataset}': param http_headers is not a valid JSON object") from None
        if not isinstance(parsed, dict) or not all(isinstance(v, (str, int, float)) for v in parsed.values()):
            raise ConnectorError(f"dataset '{dataset}': param http_headers must map header names to string values")
        headers = {str(k).strip(): str(v) for k, v in parsed.items()}
    else:
        headers = {}
        for i, entry in enumerate((e for e in text.split(";") if e.strip()), start=1):
            name, sep, value = entry.partition(":")
            if not sep:
                raise ConnectorError(
                    f"dataset '{dataset}': param http_headers entry {i} is not 'Name: value' "
                    f"(expected 'Name: value; Name2: value2' or a JSON object)")
            headers[name.strip()] = value.strip()
    for name in headers:
        if not name or any(c.isspace() or c in '()<>@,;:\\"/[]?={}' for c in name):
            raise ConnectorError(f"dataset '{dataset}': param http_headers has an invalid header name '{name}'")
    return headers


def parse_auth(dataset: str, text: str) -> tuple[dict[str, str], httpx.Auth | None]:
    """`Bearer <token>` -> an Authorization header; `basic <user>:<password>` -> BasicAuth."""
    scheme, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer" and rest:
        return {"Authorization": f"Bearer {rest}"}, None
    if scheme.lower() == "basic" and ":" in rest:
        user, _, password = rest.partition(":")
        return {}, httpx.BasicAuth(user, password)
    raise ConnectorError(f"dataset '{dataset}': param http_auth must be 'Bearer <token>' or 'basic <user>:<password>'")


class _RedactUrls(logging.Filter):
    """httpx logs every request's full URL at INFO; mask its user info and query values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(redact_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


logging.getLogger("httpx").addFilter(_RedactUrls())


class _RedactResponseHeaders(logging.Filter):
    """httpcore's DEBUG trace prints every response header (a `Link: <...?api_key=...>` next-page
    URL, Set-Cookie); keep the event, drop the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("receive_response_headers.complete"):
            record.msg, record.args = "receive_response_headers.complete (headers not logged)", ()
        return True


for _name in ("httpcore.http11", "httpcore.http2"):  # logger filters do not apply to child loggers
    logging.getLogger(_name).addFilter(_RedactResponseHeaders())


class HttpFileConnector:
    """A file downloaded over HTTP(S) on every scan."""

    def __init__(self, spec: DatasetSpec):
        check_params(spec.name, spec.prefix or "http", spec.params, HTTP_PARAMS)
        check_type_action(spec.name, spec.unsupported_type_action)
        self.spec = spec
        self.url = spec.path
        self.safe_url = redact_url(self.url)
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectorError(f"dataset '{spec.name}': '{self.safe_url}' is not an http(s) URL with a host")
        params = spec.params
        self._headers = parse_headers(spec.name, params["http_headers"]) if "http_headers" in params else {}
        self._auth: httpx.Auth | None = None
        if "http_auth" in params:
            auth_headers, self._auth = parse_auth(spec.name, params["http_auth"])
            self._headers.update(auth_headers)
        self._timeout = parse_duration(spec.name, "http_timeout", params.get("http_timeout", f"{DEFAULT_TIMEOUT}s"))
        self._format = explicit_format(spec) or format_of_path(parts.path)
        self._source = FileSource(spec, read_options(spec))
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()  # schema() holds _lock while it downloads
        self._http: httpx.Client | None = None
        self._kept: _KeptDownload | None = None  # the schema's download, for its own task's scan

    # -- Connector ---------------------------------------------------------------------------

    def schema(self) -> pa.Schema:
        with self._lock:
            if not self._source.inferred:
                path, content_type = self.download()
                try:
                    self._source.infer([path], self._format_for(content_type))
                except BaseException:
                    _remove(path)
                    raise
                scope = CALLER.get().scope
                if scope is None:
                    _remove(path)
                else:
                    self._kept = _KeptDownload(scope, path)
            return self._source.schema()

    def classify_filters(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        self.schema()
        return self._source.classify(filters)

    def scan(self, columns: Sequence[str] | None = None, filters: Sequence[Filter] = (),
             limit: int | None = None) -> pa.RecordBatchReader:
        self.schema()
        path = self._take_kept()
        if path is None:
            path, _ = self.download()
        return self._source.scan([path], columns, filters, limit, cleanup=lambda: _remove(path))

    def close(self) -> None:
        """Close the HTTP connection pool and remove a download no scan took."""
        with self._client_lock:
            client, self._http = self._http, None
        if client is not None:
            client.close()
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is not None:
            kept.discard()

    def _take_kept(self) -> str | None:
        """The schema's download when this scan runs in the same task (a first load or a first
        query), else None: any other task must see the source as it is now."""
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is None:
            return None
        if kept.scope is not CALLER.get().scope:
            kept.discard()
            return None
        return kept.take()

    # -- download ----------------------------------------------------------------------------

    def download(self) -> tuple[str, str]:
        """Stream the body to a temporary file; returns (path, Content-Type)."""
        suffix = os.path.splitext(urllib.parse.urlsplit(self.url).path)[1][:16]
        fd, path = tempfile.mkstemp(prefix="satchel-http-", suffix=suffix)
        try:
            raise_if_cancelled(f"dataset '{self.spec.name}': GET {self.safe_url}")
            client = self._client()
            timeout = task_timeout(self._timeout)
            with os.fdopen(fd, "wb") as out:
                log.debug("dataset '%s': GET %s", self.spec.name, self.safe_url)
                with client.stream("GET", self.url, timeout=timeout, extensions=cancellable()) as response:
                    if not 200 <= response.status_code < 300:
                        raise ConnectorError(
                            f"dataset '{self.spec.name}': GET {self.safe_url} returned HTTP {response.status_code}"
                            f" {response.reason_phrase}".rstrip())
                    for chunk in response.iter_bytes(CHUNK):
                        raise_if_cancelled(f"dataset '{self.spec.name}': GET {self.safe_url}")
                        out.write(chunk)
                    content_type = response.headers.get("content-type", "")
        except httpx.TimeoutException:
            _remove(path)
            raise timed_out(f"dataset '{self.spec.name}': GET {self.safe_url}", self._timeout, timeout) from None
        except httpx.HTTPError as e:
            _remove(path)
            raise ConnectorError(
                f"dataset '{self.spec.name}': cannot reach {self.safe_url}: {type(e).__name__}: {_reason(e, self.url)}"
            ) from None
        except BaseException:
            _remove(path)
            raise
        return path, content_type

    def _client(self) -> httpx.Client:
        """One client per connector (httpx clients are thread-safe). No keep-alive: each download
        has a connection of its own, which its task's cancel may shut down (see `cancellable`)."""
        with self._client_lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self._timeout, follow_redirects=True, headers=self._headers,
                                          auth=self._auth, event_hooks={"request": [self._guard_redirect]},
                                          limits=httpx.Limits(max_keepalive_connections=0))
            return self._http

    def _guard_redirect(self, request: httpx.Request) -> None:
        """Keep configured headers (secrets) on the URL's origin: strip them on a redirect away.

        httpx already drops Authorization (and basic auth) across origins."""
        origin = httpx.URL(self.url)
        if (request.url.scheme, request.url.host, request.url.port) != (origin.scheme, origin.host, origin.port):
            for name in self._headers:
                request.headers.pop(name, None)

    def _format_for(self, content_type: str) -> str:
        if self._format:
            return self._format
        mime = content_type.split(";")[0].strip().lower()
        if mime in _CONTENT_TYPES:
            self._format = _CONTENT_TYPES[mime]
            return self._format
        raise ConnectorError(
            f"dataset '{self.spec.name}': cannot tell the format of {self.safe_url} (extension not one of "
            f"{', '.join(sorted(EXTENSIONS))}; Content-Type '{mime}'); set params.file_format to one of "
            f"parquet, csv, json, ndjson")


class _KeptDownload:
    """A download held for the scan of the task (`scope`) that made it; removed when that task
    ends without scanning (its scope is collected) or when another task comes first."""

    def __init__(self, scope: CancelScope, path: str):
        self._scope = weakref.ref(scope)
        self.path = path
        self._finalizer = weakref.finalize(scope, _remove, path)

    @property
    def scope(self) -> CancelScope | None:
        return self._scope()

    def take(self) -> str:
        self._finalizer.detach()
        return self.path

    def discard(self) -> None:
        self._finalizer()


def cancellable() -> dict:
    """Request extensions handing each new connection's socket to the task's CancelScope: a cancel
    (client gone, deadline, shutdown) shuts it down, so a read blocked on a silent server returns."""
    scope = CALLER.get().scope
    if scope is None:
        return {}

    def trace(event: str, info: dict) -> None:
        if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            scope.add(lambda: sock.shutdown(socket.SHUT_RDWR))

    return {"trace": trace}


def task_timeout(timeout: float) -> float:
    """A request's timeout: the connector's, capped at the time its task has left."""
    left = CALLER.get().seconds_left()
    return timeout if left is None else min(timeout, left)


def timed_out(what: str, configured: float, used: float) -> SatchelError:
    """The error of a request that timed out after `used` seconds (`configured`: http_timeout)."""
    if used < configured:
        return QueryTimeout(f"{what} was stopped at the {CALLER.get().kind}'s deadline")
    return ConnectorError(f"{what} timed out after {configured:g}s (http_timeout)")


def raise_if_cancelled(what: str) -> None:
    """A source that keeps trickling bytes never trips a read timeout: stop between chunks."""
    scope = CALLER.get().scope
    if scope is not None and scope.cancelled:
        raise RequestCancelled(f"{what} was cancelled")


def _reason(e: Exception, url: str) -> str:
    """An httpx error's text with the raw URL (which may hold secrets) removed."""
    return str(e).replace(url, "<url>") or "no detail"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
