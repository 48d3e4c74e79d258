"""`from: http(s)://...` in JSON API mode: paginated JSON responses as an Arrow table.

Selected (by connectors/files/http.py) when any of the params below is given. Every scan walks the
pages from the first, one request at a time, and streams one RecordBatch per page; the schema
is inferred once from the first `http_schema_sample_pages` pages and then frozen.

Params (besides `http_headers`, `http_auth`, `http_timeout` and `file_format: json`):
- `json_pointer`: RFC 6901 pointer to the array of records in each page (`/data/items`);
  default the whole body.
- `http_pagination`: `link` (default; `Link: <...>; rel="next"`), `cursor`, `page`, `offset`,
  `none`. `cursor` needs `http_cursor_pointer` (where the next cursor is in the body) and
  sends it as `http_cursor_param` (default `cursor`). `page` counts `http_page_param`
  (default `page`) from `http_page_start` (default 1), with `http_page_size_param` =
  `http_page_size` when given. `offset` sends `http_offset_param` (default `offset`) and
  `http_limit_param` (default `limit`) = `http_page_size` (default 100).
- `http_query_params`: `a=1&b=2` or a JSON object, added to the URL's query.
- `http_max_pages` (default 1000): a scan needing more pages fails (never a silent partial table).
- `http_max_retries` (default 3), `http_retry_backoff` (default 1s), `http_retry_max_wait`
  (default 60s): retries on 429 / 5xx / connection errors, honouring `Retry-After`.
- `http_rate_limit`: at most this many requests per second (a float), per dataset.
- `http_schema_sample_pages` (default 1): pages read to infer the schema.

Nested objects become structs and arrays lists (connectors/documents.py, the MongoDB rules);
top-level strings that are all ISO 8601 dates / timestamps in the sample become DATE /
TIMESTAMP / TIMESTAMPTZ, as for JSON files; the pod's column types win. Filters pyarrow can
apply exactly (and AND / OR of them) are applied to each page, so a limit stops the walk
early; none reach the API.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.parse
from typing import Any, Iterator, Mapping, Sequence

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConnectorError

from ..arrow_filters import to_expression
from ..base import (
    DatasetSpec,
    Filter,
    FilterSupport,
    checked_projection,
    filter_columns,
    with_descriptions,
)
from ..documents import infer_schema, to_record_batch
from ..params import check_params, check_type_action, parse_duration, parse_format
from .http import HTTP_PARAMS, parse_auth, parse_headers, raise_if_cancelled, redact_url, task_timeout, timed_out
from .http_retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from .pagination import (
    PAGINATION_STYLES,
    Pagination,
    describe_path,
    is_missing,
    json_kind,
    parse_pointer,
    resolve,
)
from .ratelimit import RateLimiter

log = logging.getLogger("satchel.connectors")

# Params that select the JSON API mode (any one of them).
API_PARAMS = (
    "json_pointer", "http_pagination", "http_cursor_pointer", "http_cursor_param", "http_page_param",
    "http_page_start", "http_page_size_param", "http_page_size", "http_offset_param", "http_limit_param",
    "http_query_params", "http_max_pages", "http_max_retries", "http_retry_backoff", "http_retry_max_wait",
    "http_rate_limit", "http_schema_sample_pages",
)
ALLOWED_PARAMS = tuple(p for p in HTTP_PARAMS if p not in ("csv_has_header", "csv_delimiter")) + API_PARAMS
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_PAGES = 1000
DEFAULT_PAGE_SIZE = 100
# Filter operators that name one column (full-text `match` and NOT are left to the engine).
_LEAF_OPS = frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "is_not_null", "like", "not_like"})
_DATE = r"\d{4}-\d{2}-\d{2}"
_TIMESTAMP = _DATE + r"[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
_TEMPORAL = ((re.compile(_DATE), pa.date32()), (re.compile(_TIMESTAMP), pa.timestamp("us")),
             (re.compile(_TIMESTAMP + r"(Z|[+-]\d{2}(:?\d{2})?)"), pa.timestamp("us", "UTC")))


def uses_api_mode(params: Mapping[str, str]) -> bool:
    """True when the params ask for the paginated JSON API mode."""
    return any(key in params for key in API_PARAMS)


class HttpApiConnector:
    """A JSON API read page by page with retries, a rate limit and a page cap."""

    def __init__(self, spec: DatasetSpec):
        name, params = spec.name, spec.params
        check_params(name, f"{spec.prefix or 'http'} (JSON API mode)", params, ALLOWED_PARAMS)
        check_type_action(name, spec.unsupported_type_action)
        self.spec = spec
        self.safe_url = redact_url(spec.path)
        parts = urllib.parse.urlsplit(spec.path)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectorError(f"dataset '{name}': '{self.safe_url}' is not an http(s) URL with a host")
        if "file_format" in params and parse_format(name, params["file_format"]) != "json":
            raise ConnectorError(
                f"dataset '{name}': the JSON API params ({', '.join(k for k in API_PARAMS if k in params)}) "
                f"need file_format: json, got '{params['file_format']}'")
        self._headers = parse_headers(name, params["http_headers"]) if "http_headers" in params else {}
        self._auth: httpx.Auth | None = None
        if "http_auth" in params:
            auth_headers, self._auth = parse_auth(name, params["http_auth"])
            self._headers.update(auth_headers)
        self._timeout = parse_duration(name, "http_timeout", params.get("http_timeout", f"{DEFAULT_TIMEOUT}s"))
        self._origin = httpx.URL(spec.path)
        self._base = self._origin.copy_merge_params(_parse_query(name, params.get("http_query_params", "")))
        self._pointer = parse_pointer(name, "json_pointer", params.get("json_pointer", ""))
        self.pagination = _pagination(name, params)
        self.max_pages = _positive_int(name, params, "http_max_pages", DEFAULT_MAX_PAGES)
        self.retry = RetryPolicy(
            max_retries=_positive_int(name, params, "http_max_retries", 3, minimum=0),
            backoff=parse_duration(name, "http_retry_backoff", params.get("http_retry_backoff", "1s")),
            max_wait=parse_duration(name, "http_retry_max_wait", params.get("http_retry_max_wait", "60s")))
        self._limiter = RateLimiter(_positive_float(name, params, "http_rate_limit")) \
            if "http_rate_limit" in params else None
        self._sample_pages = _positive_int(name, params, "http_schema_sample_pages", 1)
        self._column_types: Mapping[str, pa.DataType] = dict(getattr(spec, "column_types", None) or {})
        self._schema: pa.Schema | None = None
        self._wire: pa.Schema | None = None  # what pyarrow builds from the JSON values, cast to _schema
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._http: httpx.Client | None = None

    # -- Connector ---------------------------------------------------------------------------

    def schema(self) -> pa.Schema:
        with self._lock:
            if self._schema is None:
                sample: list[Any] = []
                for _, records in self._pages(self._sample_pages, cap_is_error=False):
                    sample.extend(records)
                self._schema, self._wire = self._infer(sample)
            return self._schema

    def classify_filters(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        return self._compile(filters)[1]

    def scan(self, columns: Sequence[str] | None = None, filters: Sequence[Filter] = (),
             limit: int | None = None) -> pa.RecordBatchReader:
        schema = self.schema()
        names = checked_projection(self.spec.name, schema, columns)
        if limit is not None and limit < 0:
            raise ConnectorError(f"dataset '{self.spec.name}': limit must be >= 0, got {limit}")
        expression, support = self._compile(filters)
        if any(s is not FilterSupport.EXACT for s in support):
            limit = None  # a limit under a filter we do not apply would drop matching rows
        used = set().union(*(filter_columns(f) for f, s in zip(filters, support) if s is FilterSupport.EXACT))
        needed = names + sorted(used - set(names))
        out = pa.schema([schema.field(n) for n in names])
        batches = self._stream(needed, out, expression, limit)
        return pa.RecordBatchReader.from_batches(out, batches)

    def close(self) -> None:
        with self._client_lock:
            client, self._http = self._http, None
        if client is not None:
            client.close()

    # -- schema ------------------------------------------------------------------------------

    def _infer(self, sample: list[Any]) -> tuple[pa.Schema, pa.Schema]:
        name = self.spec.name
        if not sample and not self._column_types:
            raise ConnectorError(
                f"dataset '{name}': the first {self._sample_pages} page(s) of {self.safe_url} hold no records to "
                f"infer a schema from; give the columns types in the pod (columns: - name: x, type: BIGINT)")
        _check_records(name, sample, self._pointer)
        inferred = infer_schema(sample, dataset=name, unsupported_type_action=self.spec.unsupported_type_action,
                                overrides=self._column_types)
        if not len(inferred):
            raise ConnectorError(f"dataset '{name}': no columns to serve")
        wire = pa.schema([inferred.field(f.name).with_type(_wire_type(f.type, _first_value(sample, f.name)))
                          for f in inferred])
        fields = []
        for f in inferred:
            if f.name not in self._column_types and pa.types.is_string(f.type):
                f = f.with_type(_temporal_type(to_record_batch(sample, pa.schema([f]), dataset=name).column(0)))
            fields.append(f)
        unknown = sorted(set(self.spec.column_descriptions) - {f.name for f in fields})
        if unknown:
            log.warning("dataset '%s': descriptions given for unknown column(s): %s", name, ", ".join(unknown))
        return with_descriptions(pa.schema(fields), self.spec.column_descriptions), wire

    def _compile(self, filters: Sequence[Filter]) -> tuple[pc.Expression | None, list[FilterSupport]]:
        """The AND of the filters applied exactly to each page, and each filter's support."""
        schema = self.schema()
        combined: pc.Expression | None = None
        support = []
        for f in filters:
            expr = _expression(f, schema)
            support.append(FilterSupport.EXACT if expr is not None else FilterSupport.UNSUPPORTED)
            if expr is not None:
                combined = expr if combined is None else combined & expr
        return combined, support

    # -- scan --------------------------------------------------------------------------------

    def _stream(self, needed: list[str], out: pa.Schema, expression: pc.Expression | None,
                limit: int | None) -> Iterator[pa.RecordBatch]:
        name = self.spec.name
        wire = pa.schema([self._wire.field(c) for c in needed]) if needed else pa.schema([self._wire.field(0)])
        target = self._schema
        remaining = limit
        started, pages, rows = time.monotonic(), 0, 0
        if remaining == 0:
            return
        for pages, records in self._pages(self.max_pages, cap_is_error=True):
            if not records:
                continue
            _check_records(name, records, self._pointer)
            batch = to_record_batch(records, wire, dataset=name,
                                    unsupported_type_action=self.spec.unsupported_type_action)
            batch = self._cast(batch, target)
            if expression is not None:
                batch = batch.filter(expression)
            batch = batch.select(out.names) if out.names else _rows_only(batch.num_rows)
            if remaining is not None and batch.num_rows >= remaining:
                batch = batch.slice(0, remaining)
            if out.names:
                batch = pa.RecordBatch.from_arrays(batch.columns, schema=out)
            rows += batch.num_rows
            if batch.num_rows:
                yield batch
            if remaining is not None:
                remaining -= batch.num_rows
                if remaining <= 0:
                    break
        log.debug("dataset '%s': read %d row(s) in %d page(s) from %s in %.2fs", name, rows, pages,
                  self.safe_url, time.monotonic() - started)

    def _cast(self, batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
        arrays = []
        for array, f in zip(batch.columns, batch.schema):
            want = target.field(f.name).type
            if array.type != want:
                try:
                    array = pc.cast(array, want)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                    raise ConnectorError(
                        f"dataset '{self.spec.name}': column '{f.name}': cannot convert the JSON values to {want}: "
                        f"{_first_line(e)}") from None
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)

    # -- pages -------------------------------------------------------------------------------

    def _pages(self, max_pages: int, cap_is_error: bool) -> Iterator[tuple[int, list[Any]]]:
        """(page number, records) for each page in order, at most `max_pages`; with
        `cap_is_error`, a page beyond the cap raises instead of being left unread."""
        url: httpx.URL | None = self.pagination.first_url(self._base)
        seen: set[str] = set()
        number = 0
        while url is not None:
            if number == max_pages:
                if not cap_is_error:
                    return
                raise ConnectorError(
                    f"dataset '{self.spec.name}': {self.safe_url} has more than http_max_pages={self.max_pages} "
                    f"pages; raise http_max_pages (nothing is served from a partial read)")
            key = str(url)
            if key in seen:
                raise ConnectorError(
                    f"dataset '{self.spec.name}': pagination of {self.safe_url} loops: page {number + 1} is "
                    f"{redact_url(key)} again (check http_pagination and its params)")
            seen.add(key)
            response, body = self._get(url, number + 1)
            records = resolve(body, self._pointer)
            if is_missing(records):
                raise ConnectorError(
                    f"dataset '{self.spec.name}': page {number + 1} of {self.safe_url}: json_pointer "
                    f"'{_pointer_text(self._pointer)}' not found: {describe_path(body, self._pointer)}")
            if records is None:
                records = []
            if not isinstance(records, list):
                raise ConnectorError(
                    f"dataset '{self.spec.name}': page {number + 1} of {self.safe_url}: json_pointer "
                    f"'{_pointer_text(self._pointer)}' is {json_kind(records)}, not an array of records")
            number += 1
            yield number, records
            url = self.pagination.next_url(url, number - 1, response, body, len(records))

    def _get(self, url: httpx.URL, page: int) -> tuple[httpx.Response, Any]:
        """GET one page with retries; returns the response and its parsed JSON body."""
        name, safe = self.spec.name, redact_url(str(url))
        client = self._client()
        attempt = 0
        while True:
            if self._limiter is not None:
                self._limiter.wait()
            retry_after: float | None = None
            raise_if_cancelled(f"dataset '{name}': GET {safe} (page {page})")
            timeout = task_timeout(self._timeout)
            try:
                log.debug("dataset '%s': GET %s (page %d)", name, safe, page)
                response = client.get(url, timeout=timeout)
            except httpx.TimeoutException:
                if timeout < self._timeout:
                    raise timed_out(f"dataset '{name}': GET {safe} (page {page})", self._timeout, timeout) from None
                problem = f"timed out after {self._timeout:g}s"
            except httpx.TransportError as e:
                problem = f"cannot reach the server: {type(e).__name__}: {_reason(e, url)}"
            else:
                if 200 <= response.status_code < 300:
                    return response, self._json(response, safe, page)
                problem = f"returned HTTP {response.status_code} {response.reason_phrase}".rstrip()
                if response.status_code not in RETRY_STATUSES:
                    raise ConnectorError(f"dataset '{name}': GET {safe} (page {page}) {problem}")
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            attempt += 1
            if attempt > self.retry.max_retries:
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise ConnectorError(f"dataset '{name}': GET {safe} (page {page}) {problem}{tries}")
            wait = retry_after if retry_after is not None else self.retry.backoff_wait(attempt)
            if wait > self.retry.max_wait:
                raise ConnectorError(
                    f"dataset '{name}': GET {safe} (page {page}) {problem} and the server asks to retry after "
                    f"{wait:g}s, longer than http_retry_max_wait ({self.retry.max_wait:g}s)")
            log.warning("dataset '%s': GET %s (page %d) %s; retry %d of %d in %.2fs", name, safe, page, problem,
                        attempt, self.retry.max_retries, wait)
            if self._limiter is not None:
                self._limiter.hold(wait)  # concurrent scans of this dataset wait too
            time.sleep(wait)

    def _json(self, response: httpx.Response, safe: str, page: int) -> Any:
        try:
            return json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConnectorError(
                f"dataset '{self.spec.name}': GET {safe} (page {page}) is not valid JSON: {e}") from None

    def _client(self) -> httpx.Client:
        with self._client_lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self._timeout, follow_redirects=True, headers=self._headers,
                                          auth=self._auth, event_hooks={"request": [self._guard_origin]})
            return self._http

    def _guard_origin(self, request: httpx.Request) -> None:
        """Credentials only go to the `from:` URL's origin: a next-page link or a redirect to
        another origin is requested without the configured headers or basic auth."""
        origin = self._origin
        if (request.url.scheme, request.url.host, request.url.port) != (origin.scheme, origin.host, origin.port):
            for header in list(self._headers) + ["Authorization"]:
                request.headers.pop(header, None)


# -- helpers ---------------------------------------------------------------------------------

def _expression(f: Filter, schema: pa.Schema) -> pc.Expression | None:
    """`f` as an exact pyarrow expression, or None. AND / OR of exact parts stay exact under
    Kleene logic even where a leaf yields FALSE for a NULL input (IN, NOT IN), because a filter
    keeps only TRUE rows; NOT would turn such a FALSE into TRUE, so it is left to the engine."""
    if f.op in ("and", "or"):
        parts = [_expression(p, schema) for p in f.value]
        if any(p is None for p in parts):
            return None
        combined = parts[0]
        for p in parts[1:]:
            combined = combined & p if f.op == "and" else combined | p
        return combined
    if f.op not in _LEAF_OPS or f.column not in schema.names:
        return None
    return to_expression(f, schema.field(f.column).type)


def _rows_only(num_rows: int) -> pa.RecordBatch:
    """A batch with no columns and `num_rows` rows (a count-only projection)."""
    return pa.record_batch([pa.nulls(num_rows)], names=["_"]).select([])


def _check_records(dataset: str, records: list[Any], pointer: tuple[str, ...]) -> None:
    if records and not isinstance(records[0], dict):
        raise ConnectorError(
            f"dataset '{dataset}': json_pointer '{_pointer_text(pointer)}' holds {json_kind(records[0])} items, "
            f"not records (JSON objects)")


def _pointer_text(tokens: tuple[str, ...]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _first_value(sample: list[Any], column: str) -> Any:
    for doc in sample:
        if isinstance(doc, dict) and doc.get(column) is not None:
            return doc[column]
    return None


def _wire_type(typ: pa.DataType, example: Any) -> pa.DataType:
    """The type pyarrow builds from JSON values for a column served as `typ`: temporal values
    arrive as ISO strings, decimals as numbers (or strings), then a C++ cast converts them."""
    if pa.types.is_date(typ) or pa.types.is_timestamp(typ) or pa.types.is_time(typ):
        return pa.string()
    if pa.types.is_decimal(typ):
        return pa.string() if isinstance(example, str) else pa.float64()
    if pa.types.is_struct(typ):
        example = example if isinstance(example, dict) else {}
        return pa.struct([f.with_type(_wire_type(f.type, example.get(f.name))) for f in typ])
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        item = example[0] if isinstance(example, list) and example else None
        return pa.list_(_wire_type(typ.value_type, item))
    return typ


def _temporal_type(values: pa.Array) -> pa.DataType:
    """DATE / TIMESTAMP / TIMESTAMPTZ when every sampled string is that ISO form (and parses)."""
    present = values.drop_null()
    if len(present) == 0:
        return pa.string()
    for pattern, typ in _TEMPORAL:
        if pc.all(pc.match_substring_regex(present, "^" + pattern.pattern + "$")).as_py():
            try:
                pc.cast(present, typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return pa.string()
            return typ
    return pa.string()


def _parse_query(dataset: str, text: str) -> dict[str, str]:
    """`a=1&b=2` or a JSON object -> query parameters (values never echoed)."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise ConnectorError(f"dataset '{dataset}': param http_query_params is not a valid JSON object") from None
        if not isinstance(parsed, dict) or not all(isinstance(v, (str, int, float, bool)) for v in parsed.values()):
            raise ConnectorError(f"dataset '{dataset}': param http_query_params must map names to scalar values")
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in parsed.items()}
    pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
    if not pairs or any(not k for k, _ in pairs):
        raise ConnectorError(
            f"dataset '{dataset}': param http_query_params must be 'name=value&name2=value2' or a JSON object")
    return dict(pairs)


def _pagination(dataset: str, params: Mapping[str, str]) -> Pagination:
    style = params.get("http_pagination", "cursor" if "http_cursor_pointer" in params else "link").strip().lower()
    if style not in PAGINATION_STYLES:
        raise ConnectorError(
            f"dataset '{dataset}': unknown http_pagination '{params['http_pagination']}'; allowed: "
            f"{', '.join(PAGINATION_STYLES)}")
    used = {"cursor": ("http_cursor_pointer", "http_cursor_param"),
            "page": ("http_page_param", "http_page_start", "http_page_size_param", "http_page_size"),
            "offset": ("http_offset_param", "http_limit_param", "http_page_size")}
    stray = [k for k in ("http_cursor_pointer", "http_cursor_param", "http_page_param", "http_page_start",
                         "http_page_size_param", "http_page_size", "http_offset_param", "http_limit_param")
             if k in params and k not in used.get(style, ())]
    if stray:
        raise ConnectorError(
            f"dataset '{dataset}': param(s) {', '.join(stray)} do not apply to http_pagination: {style}")
    if style == "cursor":
        if "http_cursor_pointer" not in params:
            raise ConnectorError(
                f"dataset '{dataset}': http_pagination: cursor needs http_cursor_pointer, the JSON pointer to the "
                f"next cursor in each page (e.g. /meta/next_cursor)")
        pointer = parse_pointer(dataset, "http_cursor_pointer", params["http_cursor_pointer"])
        if not pointer:
            raise ConnectorError(f"dataset '{dataset}': param http_cursor_pointer must not be empty")
        return Pagination("cursor", cursor_pointer=pointer,
                          cursor_param=_name(dataset, params, "http_cursor_param", "cursor"))
    if style == "page":
        size_param = _name(dataset, params, "http_page_size_param", "") or None
        size = _positive_int(dataset, params, "http_page_size", 0) or None
        if size_param and size is None:
            raise ConnectorError(f"dataset '{dataset}': param http_page_size_param needs http_page_size")
        return Pagination("page", page_param=_name(dataset, params, "http_page_param", "page"),
                          page_start=_positive_int(dataset, params, "http_page_start", 1, minimum=0),
                          size_param=size_param, page_size=size)
    if style == "offset":
        return Pagination("offset", offset_param=_name(dataset, params, "http_offset_param", "offset"),
                          limit_param=_name(dataset, params, "http_limit_param", "limit"),
                          page_size=_positive_int(dataset, params, "http_page_size", DEFAULT_PAGE_SIZE))
    return Pagination(style)


def _name(dataset: str, params: Mapping[str, str], key: str, default: str) -> str:
    value = params.get(key, default).strip()
    if key in params and not value:
        raise ConnectorError(f"dataset '{dataset}': param {key} must not be empty")
    return value


def _positive_int(dataset: str, params: Mapping[str, str], key: str, default: int, minimum: int = 1) -> int:
    if key not in params:
        return default
    text = str(params[key]).strip()
    if not re.fullmatch(r"\d+", text) or int(text) < minimum:
        raise ConnectorError(f"dataset '{dataset}': param {key} must be an integer >= {minimum}, got '{params[key]}'")
    return int(text)


def _positive_float(dataset: str, params: Mapping[str, str], key: str) -> float:
    text = str(params[key]).strip()
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ConnectorError(f"dataset '{dataset}': param {key} must be a number > 0 (requests per second), "
                             f"got '{params[key]}'")
    return value


def _reason(e: Exception, url: httpx.URL) -> str:
    return str(e).replace(str(url), "<url>") or "no detail"


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__

