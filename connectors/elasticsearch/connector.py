"""`from: elasticsearch:<index, pattern or alias>` — documents of Elasticsearch 8/9 as a table.

Params: `elasticsearch_endpoint` (required, e.g. https://es.internal:9200), `elasticsearch_user`
+ `elasticsearch_pass` or `elasticsearch_api_key` (secrets: never in errors or logs),
`elasticsearch_ca_certs` (a PEM file, relative to the pod), `elasticsearch_verify_certs`
(default true), `elasticsearch_request_timeout` (default 30s), `elasticsearch_page_size`
(documents per request and per Arrow batch, default 1000, at most 10000),
`elasticsearch_keep_alive` (how long a point in time survives between pages, default 2m),
`elasticsearch_id_column` (the column holding `_id`, default `_id`; empty for none).

The schema comes from the mapping (see _es_schema), values from `_source` (see _es_values).
Full scans page through a point in time (PIT) with `search_after` (scroll when the server
has no PIT API), one Arrow batch per page; the PIT is closed when the reader ends, fails or
is dropped. Filters go into the query DSL where ES answers as SQL does (see _es_query),
projections into `_source` includes, LIMIT into `size`, `count(*)` to `_count`, and an
ORDER BY ... LIMIT on sortable columns into the search's `sort`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.parse
import weakref
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa
from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout, TlsError, TransportError
from elasticsearch import ApiError, AuthenticationException, AuthorizationException, Elasticsearch, NotFoundError

from engine.errors import ConnectorError, QueryTimeout

from ..base import CALLER, DatasetSpec, Filter, FilterSupport, SortKey, checked_projection, with_descriptions
from ..params import check_params, check_type_action, parse_bool, parse_duration
from .query import build_query, classify, sort_spec
from .schema import EsColumn, check_index_expression, columns_from_mappings, index_mappings
from .values import ValueReader

log = logging.getLogger("satchel.connectors.elasticsearch.connector")

ES_PARAMS = ("elasticsearch_endpoint", "elasticsearch_user", "elasticsearch_pass", "elasticsearch_api_key",
             "elasticsearch_ca_certs", "elasticsearch_verify_certs", "elasticsearch_request_timeout",
             "elasticsearch_page_size", "elasticsearch_keep_alive", "elasticsearch_id_column")
MAX_PAGE = 10_000  # index.max_result_window's default: no single request asks for more


class _Settings:
    """The parsed params: where the cluster is and how to authenticate (secrets kept apart)."""

    def __init__(self, spec: DatasetSpec) -> None:
        p, name = dict(spec.params), spec.name
        endpoint = (p.get("elasticsearch_endpoint") or "").strip()
        if not endpoint:
            raise ConnectorError(f"dataset '{name}': param elasticsearch_endpoint is required "
                                 f"(e.g. https://elasticsearch.internal:9200)")
        url = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConnectorError(f"dataset '{name}': param elasticsearch_endpoint must be an http(s)://host:port URL")
        try:
            port = url.port or (443 if url.scheme == "https" else 9200)
        except ValueError:
            raise ConnectorError(f"dataset '{name}': param elasticsearch_endpoint has a bad port") from None
        user, password = p.get("elasticsearch_user"), p.get("elasticsearch_pass")
        if url.username:  # credentials in the URL: treated like the params, never echoed
            user = user or urllib.parse.unquote(url.username)
            password = password or urllib.parse.unquote(url.password or "")
        api_key = p.get("elasticsearch_api_key")
        if api_key and (user or password):
            raise ConnectorError(f"dataset '{name}': give either elasticsearch_api_key or "
                                 f"elasticsearch_user/elasticsearch_pass, not both")
        if password and not user:
            raise ConnectorError(f"dataset '{name}': elasticsearch_pass needs elasticsearch_user")
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        self.url = f"{url.scheme}://{host}:{port}{url.path.rstrip('/')}"
        self.user, self.password, self.api_key = user, password or None, api_key
        self.secrets = tuple(s for s in (password, api_key, url.password) if s)
        ca = p.get("elasticsearch_ca_certs")
        if ca:
            ca = ca if os.path.isabs(ca) else os.path.join(spec.base_dir, ca)
            if not os.path.isfile(ca):
                raise ConnectorError(f"dataset '{name}': param elasticsearch_ca_certs: no such file '{ca}'")
        self.ca_certs = ca
        self.verify = parse_bool(name, "elasticsearch_verify_certs", p.get("elasticsearch_verify_certs", "true"))
        self.timeout = parse_duration(name, "elasticsearch_request_timeout", p.get("elasticsearch_request_timeout", "30s"))
        keep = parse_duration(name, "elasticsearch_keep_alive", p.get("elasticsearch_keep_alive", "2m"))
        self.keep_alive = f"{max(1, int(keep))}s"
        page = p.get("elasticsearch_page_size", "1000")
        if not str(page).isdigit() or not 1 <= int(page) <= MAX_PAGE:
            raise ConnectorError(f"dataset '{name}': param elasticsearch_page_size must be an integer from 1 to "
                                 f"{MAX_PAGE}, got '{page}'")
        self.page_size = int(page)
        id_column = p.get("elasticsearch_id_column", "_id")
        self.id_column = id_column.strip() or None

    def client(self) -> Elasticsearch:
        kwargs: dict[str, Any] = {"request_timeout": self.timeout, "max_retries": 2, "retry_on_timeout": True}
        if self.user:
            kwargs["basic_auth"] = (self.user, self.password or "")
        if self.api_key:
            key = self.api_key
            kwargs["api_key"] = tuple(key.split(":", 1)) if ":" in key else key
        if self.url.startswith("https"):
            kwargs["verify_certs"] = self.verify
            if self.ca_certs:
                kwargs["ca_certs"] = self.ca_certs
        return Elasticsearch(self.url, **kwargs)


class ElasticsearchConnector:
    """One index, pattern or alias of an Elasticsearch cluster."""

    def __init__(self, spec: DatasetSpec) -> None:
        check_params(spec.name, "elasticsearch", spec.params, ES_PARAMS)
        check_type_action(spec.name, spec.unsupported_type_action)
        self.spec = spec
        self.index = check_index_expression(spec.name, spec.path)
        self.settings = _Settings(spec)
        self.client = self.settings.client()
        self._lock = threading.Lock()
        self._columns: list[EsColumn] | None = None
        self._schema: pa.Schema | None = None

    # -- errors --

    def _error(self, what: str, e: BaseException) -> ConnectorError:
        if isinstance(e, AuthenticationException):
            text = ("authentication failed (check elasticsearch_user/elasticsearch_pass or elasticsearch_api_key)")
        elif isinstance(e, AuthorizationException):
            text = f"not authorized: {_api_reason(e)}"
        elif isinstance(e, NotFoundError):
            text = _api_reason(e)
        elif isinstance(e, ApiError):
            text = f"{e.meta.status} {_api_reason(e)}"
        elif isinstance(e, ConnectionTimeout):
            text = f"timed out after {self.settings.timeout:g}s (elasticsearch_request_timeout) at {self.settings.url}"
        elif isinstance(e, TlsError):
            text = f"TLS error talking to {self.settings.url} (elasticsearch_ca_certs / elasticsearch_verify_certs)"
        elif isinstance(e, (EsConnectionError, TransportError)):
            text = f"cannot reach {self.settings.url}"
        else:
            text = str(e) or type(e).__name__
        for s in self.settings.secrets:
            text = text.replace(s, "***")
        text = re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)
        return ConnectorError(f"dataset '{self.spec.name}': {what}: {' '.join(text.split())}")

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (ApiError, TransportError) as e:
            raise self._error(what, e) from None

    # -- schema --

    def es_columns(self) -> list[EsColumn]:
        self.schema()
        assert self._columns is not None
        return self._columns

    def _by_name(self) -> dict[str, EsColumn]:
        return {c.name: c for c in self.es_columns()}

    def schema(self) -> pa.Schema:
        with self._lock:
            if self._schema is None:
                try:
                    response = self.client.indices.get_mapping(index=self.index).body
                except NotFoundError as e:
                    raise ConnectorError(f"dataset '{self.spec.name}': index, pattern or alias '{self.index}' does not "
                                         f"exist in Elasticsearch ({_api_reason(e)})") from None
                except (ApiError, TransportError) as e:
                    raise self._error("cannot read the mapping", e) from None
                if not response:
                    raise ConnectorError(f"dataset '{self.spec.name}': no index matches '{self.index}'")
                mappings = index_mappings(self.spec.name, response)
                columns = columns_from_mappings(self.spec.name, mappings, self.spec.unsupported_type_action,
                                                self.settings.id_column, dict(self.spec.column_types or {}))
                source = _field_descriptions(mappings)
                fields = [pa.field(c.name, c.arrow) for c in columns]
                self._columns = columns
                self._schema = with_descriptions(pa.schema(fields), {**source, **self.spec.column_descriptions})
            return self._schema

    # -- Connector --

    def classify_filters(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        return classify(filters, self._by_name())

    def classify_order(self, keys: Sequence[SortKey]) -> bool:
        return bool(keys) and sort_spec(keys, self._by_name()) is not None

    def count(self, filters: Sequence[Filter] = ()) -> int:
        query, exact = build_query(filters, self._by_name())
        if not exact:
            raise ConnectorError(f"dataset '{self.spec.name}': count() needs filters Elasticsearch applies exactly")
        response = self._call("count failed", lambda: self.client.count(index=self.index, query=query))
        return int(response["count"])

    def search_body(self, columns: Sequence[str] | None, filters: Sequence[Filter] = (),
                    order_by: Sequence[SortKey] | None = None) -> dict:
        """The search request a scan sends (without paging): query, _source and sort."""
        by_name = self._by_name()
        names = checked_projection(self.spec.name, self.schema(), columns)
        query, _ = build_query(filters, by_name)
        includes = [n for n in names if by_name[n].kind != "id"]
        source: Any = False
        if includes and len(includes) == sum(1 for c in by_name.values() if c.kind != "id"):
            source = True  # every field: no filtering work on the server
        elif includes:
            # objects also as `name.*`: documents may hold their fields as dotted keys
            source = {"includes": [p for n in includes
                                   for p in ((n, f"{n}.*") if by_name[n].kind in ("object", "nested") else (n,))]}
        body: dict[str, Any] = {"query": query, "_source": source}
        if order_by:
            sort = sort_spec(order_by, by_name)
            if sort is None:
                raise ConnectorError(f"dataset '{self.spec.name}': cannot sort by "
                                     f"{', '.join(k.column for k in order_by)} in Elasticsearch")
            body["sort"] = sort
        return body

    def scan(self, columns: Sequence[str] | None = None, filters: Sequence[Filter] = (), limit: int | None = None,
             order_by: Sequence[SortKey] | None = None) -> pa.RecordBatchReader:
        schema = self.schema()
        names = checked_projection(self.spec.name, schema, columns)
        out = pa.schema([schema.field(n) for n in names])
        body = self.search_body(names, filters, order_by)
        _, exact = build_query(filters, self._by_name())
        if limit is not None:
            if limit < 0:
                raise ConnectorError(f"dataset '{self.spec.name}': limit must be >= 0, got {limit}")
            if not exact:
                limit = None  # the contract passes limits only with exact filters; never cut a superset
        state = _PitState(self)
        batches = self._pages(body, names, out, limit, state)
        weakref.finalize(batches, state.close)
        return pa.RecordBatchReader.from_batches(out, batches)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing idle HTTP connections
            pass

    # -- paging --

    def _pages(self, body: dict, names: list[str], out: pa.Schema, limit: int | None,
               state: "_PitState") -> Iterator[pa.RecordBatch]:
        by_name = self._by_name()
        cols = [by_name[n] for n in names]
        values = ValueReader(self.spec.name, self.spec.unsupported_type_action)
        page = self.settings.page_size
        remaining = limit
        try:
            if remaining == 0:
                return
            if remaining is not None and remaining <= page:  # one request answers it: no PIT needed
                sort = body.get("sort", []) + ["_doc"]
                resp = self._call("search failed", lambda: _search(self.client,
                    index=self.index, size=remaining, sort=sort, track_total_hits=False, **_body(body)))
                hits = resp["hits"]["hits"]
                if hits:
                    yield self._batch(hits, cols, out, values)
                return
            for hits in state.pages(body, page, remaining):
                yield self._batch(hits, cols, out, values)
        finally:
            state.close()

    def _batch(self, hits: list[dict], cols: list[EsColumn], out: pa.Schema, values: ValueReader) -> pa.RecordBatch:
        if not cols:
            return pa.RecordBatch.from_struct_array(pa.array([{}] * len(hits), pa.struct([])))
        sources = [h.get("_source") or {} for h in hits]
        if any("." in k for s in sources for k in s):
            sources = [_expand_dots(s) for s in sources]
        arrays = []
        for col in cols:
            if col.kind == "id":
                arrays.append(pa.array([h["_id"] for h in hits], pa.string()))
            else:
                name = col.name
                arrays.append(values.column(col, [s.get(name) for s in sources], lambda i: hits[i].get("_id", "?")))
        return pa.RecordBatch.from_arrays(arrays, schema=out)


class _PitState:
    """One scan's point in time (or scroll): opened on the first page, closed exactly once."""

    def __init__(self, connector: ElasticsearchConnector) -> None:
        self.client, self.index, self.settings = connector.client, connector.index, connector.settings
        self._call, self._error, self._dataset = connector._call, connector._error, connector.spec.name
        self.pit_id: str | None = None
        self.scroll_id: str | None = None
        self._closed = False
        self._lock = threading.Lock()

    def pages(self, body: dict, page: int, limit: int | None) -> Iterator[list[dict]]:
        keep = self.settings.keep_alive
        try:
            opened = self.client.open_point_in_time(index=self.index, keep_alive=keep)
            self.pit_id = opened["id"]
        except ApiError as e:
            if e.meta.status not in (400, 404, 405, 501) or _api_type(e) == "index_not_found_exception":
                raise self._error("cannot open a point in time", e) from None
            log.info("dataset '%s': no point-in-time API (%s); scrolling instead", self._dataset, e.meta.status)
            yield from self._scroll(body, page, limit)
            return
        except TransportError as e:
            raise self._error("cannot open a point in time", e) from None
        remaining, after = limit, None
        sort = body.get("sort", []) + [{"_shard_doc": "asc"}]
        while True:
            size = page if remaining is None else min(page, remaining)
            extra = {"search_after": after} if after is not None else {}
            resp = self._call("search failed", lambda: _search(self.client,
                pit={"id": self.pit_id, "keep_alive": keep}, size=size, sort=sort, track_total_hits=False,
                **_body(body), **extra))
            self.pit_id = resp.get("pit_id") or self.pit_id
            hits = resp["hits"]["hits"]
            if hits:
                yield hits
            if remaining is not None:
                remaining -= len(hits)
            if len(hits) < size or remaining == 0:
                return
            after = hits[-1]["sort"]

    def _scroll(self, body: dict, page: int, limit: int | None) -> Iterator[list[dict]]:
        keep, remaining = self.settings.keep_alive, limit
        sort = body.get("sort", []) + ["_doc"]
        resp = self._call("search failed", lambda: _search(self.client,
            index=self.index, scroll=keep, size=page, sort=sort, **_body(body)))
        while True:
            self.scroll_id = resp.get("_scroll_id") or self.scroll_id
            hits = resp["hits"]["hits"]
            if remaining is not None:
                hits = hits[:remaining]
                remaining -= len(hits)
            if hits:
                yield hits
            if not hits or remaining == 0:
                return
            resp = self._call("scroll failed", lambda: self.client.scroll(scroll_id=self.scroll_id, scroll=keep))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self.pit_id is not None:
                self.client.close_point_in_time(id=self.pit_id)
            if self.scroll_id is not None:
                self.client.clear_scroll(scroll_id=self.scroll_id)
        except Exception as e:  # noqa: BLE001 - it expires after keep_alive anyway
            log.debug("dataset '%s': closing the point in time failed (%s); it expires on its own",
                      self._dataset, type(e).__name__)


def _body(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "sort"}


def _api_type(e: ApiError) -> str:
    try:
        return str(e.body["error"]["type"])  # type: ignore[index]
    except (TypeError, KeyError):
        return ""


def _api_reason(e: ApiError) -> str:
    try:
        err = e.body["error"]  # type: ignore[index]
        if isinstance(err, dict):
            return f"{err.get('type', '')}: {err.get('reason', '')}".strip(": ")
        return str(err)
    except (TypeError, KeyError):
        return str(e.message or type(e).__name__)


def _expand_dots(source: dict) -> dict:
    """`{"a.b": 1}` as `{"a": {"b": 1}}` (ES treats both the same)."""
    if not any("." in k for k in source):
        return source
    out: dict = {}
    for key, value in source.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf].update(_expand_dots(value))
        else:
            node[leaf] = _expand_dots(value) if isinstance(value, dict) else value
    return out


def _field_descriptions(mappings: list[tuple[str, dict]]) -> dict[str, str]:
    """Column descriptions from the fields' mapping `meta.description`."""
    out: dict[str, str] = {}
    for _, mapping in mappings:
        for name, prop in (mapping.get("properties") or {}).items():
            text = (prop.get("meta") or {}).get("description")
            if text and name not in out:
                out[name] = str(text)
    return out


def _search(client: Any, **kwargs: Any) -> Any:
    """A search bounded by the task's deadline: Elasticsearch's own `timeout` and the HTTP
    request's. A response that timed out holds partial hits: it is refused, never served."""
    left = CALLER.get().seconds_left()
    if left is not None:
        kwargs["timeout"] = f"{max(1, int(left * 1000))}ms"
        client = client.options(request_timeout=left + 1.0)
    resp = client.search(**kwargs)
    if resp.get("timed_out"):
        raise QueryTimeout("Elasticsearch stopped the search at the query's deadline (runtime.params.query_timeout)")
    return resp
