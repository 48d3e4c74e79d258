"""`from: mongodb:<collection>` — a MongoDB collection as a table, read with pymongo.

Params: `mongodb_connection_string` (a mongodb:// or mongodb+srv:// URI; put credentials in
`${secrets:...}`), `mongodb_db` (else the URI's database), `mongodb_num_docs_to_infer_schema`
(default 400), `mongodb_tls`, `mongodb_tls_ca_file`, `mongodb_tls_certificate_key_file`,
`mongodb_tls_allow_invalid_certificates`, `mongodb_server_selection_timeout` (default 15s),
`mongodb_exclude_id` (do not serve `_id`). Secrets never appear in errors or logs.

Schema: inferred from the collection's first documents (connectors/documents.py rules:
structs, lists, widening, `unsupported_type_action`); ObjectId -> string, Decimal128 ->
decimal, dates -> timestamp(us, UTC), other BSON types (regex, timestamps, code with scope...)
are conflicts handled by the action (`string` serves relaxed Extended JSON). Pod column types
win. Fields first seen after the sample are ignored until the schema is inferred again.

Reads stream `find_raw_batches` (bounded batches, BSON decoded by pymongo's C extension into
documents, converted to Arrow by pyarrow's C++ converter). Pushed into MongoDB: projection
(top-level fields; a struct column brings its whole subdocument), filters with SQL's meaning
(connectors/mongodb/filters.py), LIMIT, ORDER BY + LIMIT on sortable columns, count(*).
Filters are EXACT under `unsupported_type_action: error` (a value that does not fit the
schema fails the scan); under warn/ignore/string such values read as NULL, so filters are
INEXACT (a superset) and IS NULL / NOT are left to the engine.

`refresh_mode: changes` reads a change stream (a replica set or sharded cluster is needed;
a standalone server is refused with a clear error), primary key `_id`, resume token as the
position.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import bson
import pyarrow as pa
import pymongo
from bson import json_util
from bson.codec_options import CodecOptions, DatetimeConversion, TypeDecoder, TypeRegistry
from pymongo import errors as mongo_errors
from pymongo import uri_parser

from engine.errors import ConnectorError, QueryTimeout

from ..base import CALLER, DatasetSpec, Filter, FilterSupport, SortKey, checked_projection, leaves, with_descriptions
from ..documents import infer_schema, sample_types, to_record_batch
from ..params import check_params, check_type_action, parse_bool, parse_duration
from .filters import SORTABLE, Compiler, type_class

log = logging.getLogger("satchel.connectors.mongodb.connector")

MONGO_PARAMS = ("mongodb_connection_string", "mongodb_db", "mongodb_num_docs_to_infer_schema", "mongodb_tls",
                "mongodb_tls_ca_file", "mongodb_tls_certificate_key_file", "mongodb_tls_allow_invalid_certificates",
                "mongodb_server_selection_timeout", "mongodb_exclude_id")
BATCH_DOCS = 8192  # documents per find/getMore batch (MongoDB also caps a batch at 16 MiB)


class _ObjectIdAsText(TypeDecoder):
    bson_type = bson.ObjectId

    def transform_bson(self, value: bson.ObjectId) -> str:
        return str(value)


class _Decimal128AsDecimal(TypeDecoder):
    bson_type = bson.Decimal128

    def transform_bson(self, value: bson.Decimal128) -> decimal.Decimal:
        return value.to_decimal()


# Documents as _documents expects them: ObjectId as text, Decimal128 as Decimal, dates aware UTC
# (dates beyond Python's range stay DatetimeMS, a conflict handled by unsupported_type_action).
CODEC = CodecOptions(tz_aware=True, tzinfo=dt.timezone.utc, datetime_conversion=DatetimeConversion.DATETIME_AUTO,
                     type_registry=TypeRegistry([_ObjectIdAsText(), _Decimal128AsDecimal()]))
_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=dt.timezone.utc)


def extended_json(value: Any) -> str:
    """A decoded value as relaxed Extended JSON (what `unsupported_type_action: string` serves)."""
    return json_util.dumps(_to_bson(value), json_options=_JSON)


def _to_bson(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return bson.Decimal128(value)
    if isinstance(value, Mapping):
        return {k: _to_bson(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_bson(v) for v in value]
    return value


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MongoSettings:
    uri: str = field(repr=False)  # may hold credentials
    db: str
    collection: str
    client_options: Mapping[str, Any]
    infer_docs: int
    exclude_id: bool
    secrets: tuple[str, ...] = field(repr=False)

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> "MongoSettings":
        name, p = spec.name, dict(spec.params)
        uri = p.get("mongodb_connection_string")
        if not uri:
            raise ConnectorError(f"dataset '{name}': param mongodb_connection_string is required "
                                 f"(e.g. mongodb_connection_string: ${{secrets:MONGO_URI}})")
        secrets = [uri]
        try:
            parsed = uri_parser.parse_uri(uri, validate=True, warn=False, connect_timeout=5)
        except Exception as e:  # noqa: BLE001 - pymongo's messages may quote the URI
            raise ConnectorError(f"dataset '{name}': param mongodb_connection_string is not a valid MongoDB URI: "
                                 f"{_scrub(str(e), [uri])}") from None
        if parsed.get("password"):
            secrets.append(parsed["password"])
            secrets.append(urllib.parse.quote(parsed["password"], safe=""))
        db = p.get("mongodb_db") or parsed.get("database")
        if not db:
            raise ConnectorError(f"dataset '{name}': param mongodb_db is required (or name the database in the "
                                 f"connection string's path)")
        collection = spec.path.strip()
        if not collection or collection.startswith("system.") or "$" in collection:
            raise ConnectorError(f"dataset '{name}': 'from: mongodb:{spec.path}' must name a collection")
        raw_docs = p.get("mongodb_num_docs_to_infer_schema", "400")
        try:
            infer_docs = int(raw_docs)
            if infer_docs < 1:
                raise ValueError
        except ValueError:
            raise ConnectorError(f"dataset '{name}': param mongodb_num_docs_to_infer_schema must be a positive "
                                 f"integer, got '{raw_docs}'") from None
        timeout = parse_duration(name, "mongodb_server_selection_timeout",
                                 p.get("mongodb_server_selection_timeout", "15s"))
        options: dict[str, Any] = {"serverSelectionTimeoutMS": int(timeout * 1000), "appname": "satchel",
                                   "document_class": dict}
        if "mongodb_tls" in p:
            options["tls"] = parse_bool(name, "mongodb_tls", p["mongodb_tls"])
        if p.get("mongodb_tls_ca_file"):
            options["tlsCAFile"] = p["mongodb_tls_ca_file"]
        if p.get("mongodb_tls_certificate_key_file"):
            options["tlsCertificateKeyFile"] = p["mongodb_tls_certificate_key_file"]
        if "mongodb_tls_allow_invalid_certificates" in p:
            options["tlsAllowInvalidCertificates"] = parse_bool(name, "mongodb_tls_allow_invalid_certificates",
                                                                p["mongodb_tls_allow_invalid_certificates"])
        exclude_id = parse_bool(name, "mongodb_exclude_id", p.get("mongodb_exclude_id", "false"))
        return cls(uri, db, collection, options, infer_docs, exclude_id, tuple(s for s in secrets if s))


_URI = re.compile(r"mongodb(\+srv)?://[^\s'\",]*")


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return _URI.sub("mongodb://***", text)


# -- the connector --------------------------------------------------------------------------------


class MongoConnector:
    """One MongoDB collection."""

    def __init__(self, spec: DatasetSpec):
        check_params(spec.name, "mongodb", spec.params, MONGO_PARAMS)
        check_type_action(spec.name, spec.unsupported_type_action)
        self.spec = spec
        self.settings = MongoSettings.from_spec(spec)
        self._lock = threading.Lock()
        self._client: pymongo.MongoClient | None = None
        self._schema: pa.Schema | None = None
        self._classes: dict[str, str] = {}  # filterable columns -> type class
        self._position: Any = None  # change stream resume token committed

    # -- plumbing --

    def _error(self, what: str, e: BaseException) -> ConnectorError | QueryTimeout:
        if isinstance(e, ConnectorError):
            return e
        if isinstance(e, mongo_errors.ExecutionTimeout):  # maxTimeMS from the task's deadline
            return QueryTimeout(f"dataset '{self.spec.name}': MongoDB stopped the operation at the query's "
                                f"deadline (runtime.params.query_timeout)")
        text = " ".join((str(e).strip() or type(e).__name__).split())
        text = re.sub(r", full error: .*$", "", text)
        if isinstance(e, mongo_errors.ServerSelectionTimeoutError):
            text = re.sub(r"(, Timeout: |\(configured timeouts).*$", "", text).strip() or "no server reachable"
        return ConnectorError(f"dataset '{self.spec.name}': {what}: {_scrub(text, self.settings.secrets)}")

    def _collection(self):
        with self._lock:
            if self._client is None:
                try:
                    self._client = pymongo.MongoClient(self.settings.uri, **self.settings.client_options)
                except Exception as e:  # noqa: BLE001
                    raise self._error("cannot create the MongoDB client", e) from None
            return self._client[self.settings.db].get_collection(self.settings.collection, codec_options=CODEC)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- schema --

    def _sample(self) -> tuple[list[dict], set[str]]:
        """The first documents, and the top-level fields holding only ObjectIds (or nulls)."""
        coll = self._collection()
        try:
            raw = b"".join(coll.find_raw_batches({}, limit=self.settings.infer_docs,
                                                  batch_size=min(self.settings.infer_docs, BATCH_DOCS)))
        except Exception as e:  # noqa: BLE001
            raise self._error("cannot read from MongoDB", e) from None
        kinds: dict[str, set[bool]] = {}
        for doc in bson.decode_all(raw):
            for key, value in doc.items():
                if value is not None:
                    kinds.setdefault(key, set()).add(isinstance(value, bson.ObjectId))
        return bson.decode_all(raw, CODEC), {k for k, v in kinds.items() if v == {True}}

    def schema(self) -> pa.Schema:
        with self._lock:
            if self._schema is not None:
                return self._schema
        docs, object_ids = self._sample()
        overrides = dict(self.spec.column_types)
        if self.settings.exclude_id:
            docs = [{k: v for k, v in d.items() if k != "_id"} for d in docs]
        if not docs and not overrides:
            raise ConnectorError(
                f"dataset '{self.spec.name}': collection {self.settings.db}.{self.settings.collection} has no "
                f"documents to infer a schema from (or does not exist); add documents or give the columns types "
                f"in the pod")
        schema = infer_schema(docs, dataset=self.spec.name, unsupported_type_action=self.spec.unsupported_type_action,
                              overrides=overrides)
        if not len(schema):
            raise ConnectorError(f"dataset '{self.spec.name}': no columns to serve")
        natural = sample_types(docs)
        classes = {}
        for f in schema:
            cls = type_class(f.type)
            seen = natural.get(f.name)
            if cls is None or seen is None:
                continue
            seen_cls = type_class(seen)
            # the values are what the column says (a date column reads midnight datetimes)
            if seen_cls == cls or (cls == "date" and seen_cls == "timestamp_tz") or \
                    (cls in ("float", "decimal") and seen_cls == "int"):
                classes[f.name] = "objectid" if cls == "string" and f.name in object_ids else cls
        with self._lock:
            self._classes = classes
            self._schema = with_descriptions(schema, self.spec.column_descriptions)
            return self._schema

    # -- filters --

    @property
    def _exact_mode(self) -> bool:
        return self.spec.unsupported_type_action == "error"

    def _compiler(self) -> Compiler:
        self.schema()
        return Compiler(self._classes)

    def classify_filters(self, filters: Sequence[Filter]) -> list[FilterSupport]:
        compiler = self._compiler()
        out = []
        for f in filters:
            if compiler.compile(f) is None:
                out.append(FilterSupport.UNSUPPORTED)
            elif self._exact_mode:
                out.append(FilterSupport.EXACT)
            elif _needs_exact_values(f):
                out.append(FilterSupport.UNSUPPORTED)  # a value read as NULL would be missed
            else:
                out.append(FilterSupport.INEXACT)
        return out

    def query(self, filters: Sequence[Filter]) -> dict:
        """The MongoDB query document for the filters this connector accepts."""
        compiler = self._compiler()
        parts = [q for f, s in zip(filters, self.classify_filters(filters))
                 if s is not FilterSupport.UNSUPPORTED and (q := compiler.compile(f)) is not None]
        if not parts:
            return {}
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def classify_order(self, keys: Sequence[SortKey]) -> bool:
        self.schema()
        return bool(keys) and self._exact_mode and all(self._classes.get(k.column) in SORTABLE for k in keys)

    def count(self, filters: Sequence[Filter] = ()) -> int:
        support = self.classify_filters(filters)
        if any(s is not FilterSupport.EXACT for s in support):
            raise ConnectorError(f"dataset '{self.spec.name}': count() needs filters MongoDB applies exactly")
        try:
            return self._collection().count_documents(self.query(filters), **_max_time("maxTimeMS"))
        except Exception as e:  # noqa: BLE001
            raise self._error("count failed in MongoDB", e) from None

    # -- scans --

    def scan(self, columns: Sequence[str] | None = None, filters: Sequence[Filter] = (), limit: int | None = None,
             order_by: Sequence[SortKey] | None = None) -> pa.RecordBatchReader:
        schema = self.schema()
        names = checked_projection(self.spec.name, schema, columns)
        out = pa.schema([schema.field(n) for n in names])
        support = self.classify_filters(filters)
        query = self.query(filters)
        exact = all(s is FilterSupport.EXACT for s in support)
        if limit is not None and limit < 0:
            raise ConnectorError(f"dataset '{self.spec.name}': limit must be >= 0, got {limit}")
        if not exact:
            limit = None
        if order_by:
            if limit is None or not self.classify_order(order_by):
                raise ConnectorError(f"dataset '{self.spec.name}': this ORDER BY cannot be pushed into MongoDB")
        if limit == 0:
            return pa.RecordBatchReader.from_batches(out, [])
        projection = {n: 1 for n in names}
        if "_id" not in names:
            projection["_id"] = 0 if names else 1
        coll = self._collection()
        if order_by and not _native_null_order(order_by):
            batches = self._aggregate_batches(coll, query, projection, order_by, limit, names, out)
        else:
            sort = [(k.column, -1 if k.descending else 1) for k in order_by or ()]
            if sort:
                sort.append(("_id", 1))  # ties in a stable order
            batches = self._find_batches(coll, query, projection, sort, limit, names, out)
        return pa.RecordBatchReader.from_batches(out, batches)

    def _find_batches(self, coll, query, projection, sort, limit, names, out) -> Iterator[pa.RecordBatch]:
        try:
            cursor = coll.find_raw_batches(query, projection, limit=limit or 0, sort=sort or None,
                                           batch_size=min(limit or BATCH_DOCS, BATCH_DOCS),
                                           **_max_time("max_time_ms"))
        except Exception as e:  # noqa: BLE001
            raise self._error("query failed in MongoDB", e) from None
        return self._stream(cursor, names, out)

    def _stream(self, cursor, names, out) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                try:
                    raw = next(cursor)
                except StopIteration:
                    return
                except Exception as e:  # noqa: BLE001
                    raise self._error("error while reading from MongoDB", e) from None
                docs = bson.decode_all(raw, CODEC)
                yield self._batch(docs, names, out)
        finally:
            cursor.close()

    def _aggregate_batches(self, coll, query, projection, order_by, limit, names, out) -> Iterator[pa.RecordBatch]:
        # SQL's NULL placement differs from MongoDB's (nulls first ascending): sort on a
        # "is null" flag per key first.
        flags, sort = {}, {}
        for i, k in enumerate(order_by):
            flag = f"__satchel_null_{i}"
            flags[flag] = {"$cond": [{"$eq": [{"$ifNull": [f"${k.column}", None]}, None]}, 1, 0]}
            sort[flag] = -1 if k.nulls_first else 1
            sort[k.column] = -1 if k.descending else 1
        sort["_id"] = 1
        pipeline = [{"$match": query}, {"$addFields": flags}, {"$sort": sort}, {"$limit": limit},
                    {"$project": projection}]
        try:
            cursor = coll.aggregate(pipeline, batchSize=min(limit, BATCH_DOCS), **_max_time("maxTimeMS"))
        except Exception as e:  # noqa: BLE001
            raise self._error("query failed in MongoDB", e) from None

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                chunk: list[dict] = []
                for doc in cursor:  # at most `limit` documents: a top-N
                    chunk.append(doc)
                    if len(chunk) >= BATCH_DOCS:
                        yield self._batch(chunk, names, out)
                        chunk = []
                if chunk:
                    yield self._batch(chunk, names, out)
            except ConnectorError:
                raise
            except Exception as e:  # noqa: BLE001
                raise self._error("error while reading from MongoDB", e) from None
            finally:
                cursor.close()
        return batches()

    def _batch(self, docs: list[dict], names: list[str], out: pa.Schema) -> pa.RecordBatch:
        if not names:
            return pa.RecordBatch.from_struct_array(pa.array([{}] * len(docs), pa.struct([])))
        return to_record_batch(docs, out, dataset=self.spec.name,
                               unsupported_type_action=self.spec.unsupported_type_action, json_text=extended_json)

    # -- changes (refresh_mode: changes) --

    def _check_change_streams(self) -> None:
        try:
            hello = self._collection().database.client.admin.command("hello")
        except Exception as e:  # noqa: BLE001
            raise self._error("cannot reach MongoDB", e) from None
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            raise ConnectorError(
                f"dataset '{self.spec.name}': refresh_mode: changes needs MongoDB change streams, which need a "
                f"replica set or a sharded cluster; this server is standalone (use refresh_mode full or append)")

    def start_changes(self) -> str:
        """A change stream's current resume token: the position a full load starts from."""
        self._check_change_streams()
        try:
            with self._collection().watch(max_await_time_ms=1) as stream:
                stream.try_next()
                token = stream.resume_token
        except Exception as e:  # noqa: BLE001
            raise self._error("cannot open a change stream", e) from None
        return json_util.dumps(token)

    def read_changes(self, primary_key: Sequence[str]) -> "MongoChanges | None":
        """Documents changed since the committed position (None: reload in full)."""
        if list(primary_key) != ["_id"] or "_id" not in self.schema().names:
            raise ConnectorError(f"dataset '{self.spec.name}': refresh_mode: changes needs primary_key: [_id] "
                                 f"(and _id served, mongodb_exclude_id false)")
        if self._position is None:
            return None
        self._check_change_streams()
        keys: dict[bytes, Any] = {}
        try:
            coll = self._collection().with_options(codec_options=CodecOptions(tz_aware=True))
            with coll.watch(resume_after=json_util.loads(self._position), max_await_time_ms=50) as stream:
                while True:
                    change = stream.try_next()
                    if change is None:
                        break
                    kind = change.get("operationType")
                    if kind in ("drop", "rename", "dropDatabase", "invalidate"):
                        return None
                    if "documentKey" in change:
                        key = change["documentKey"]["_id"]
                        keys[bson.encode({"k": key})] = key
                token = stream.resume_token
        except mongo_errors.OperationFailure as e:
            if e.code == 286:  # ChangeStreamHistoryLost: the oplog moved on, reload
                return None
            raise self._error("cannot read the change stream", e) from None
        except Exception as e:  # noqa: BLE001
            raise self._error("cannot read the change stream", e) from None
        return MongoChanges(self, list(keys.values()), json_util.dumps(token))

    def commit_changes(self, position: str) -> None:
        self._position = position


class MongoChanges:
    """Changed `_id`s: `upserts()` streams their current documents, `deleted()` the ids gone."""

    def __init__(self, connector: MongoConnector, keys: list[Any], position: str):
        self.connector, self.keys, self.position = connector, keys, position

    def upserts(self) -> pa.RecordBatchReader:
        c = self.connector
        schema = c.schema()
        if not self.keys:
            return pa.RecordBatchReader.from_batches(schema, [])
        names = list(schema.names)
        batches = c._find_batches(c._collection(), {"_id": {"$in": self.keys}}, {n: 1 for n in names}, None, None,
                                  names, schema)
        return pa.RecordBatchReader.from_batches(schema, batches)

    def deleted(self) -> pa.Table:
        c = self.connector
        out = pa.schema([c.schema().field("_id")])
        if not self.keys:
            return out.empty_table()
        raw_coll = c._collection().with_options(codec_options=CodecOptions())
        present = {bson.encode({"k": d["_id"]}) for d in raw_coll.find({"_id": {"$in": self.keys}}, {"_id": 1})}
        gone = [{"_id": k} for k in self.keys if bson.encode({"k": k}) not in present]
        docs = bson.decode_all(b"".join(bson.encode(d) for d in gone), CODEC)
        return pa.Table.from_batches([to_record_batch(docs, out, dataset=c.spec.name)], schema=out)


def _native_null_order(keys: Sequence[SortKey]) -> bool:
    """MongoDB puts null/missing first ascending and last descending."""
    return all(k.nulls_first != k.descending for k in keys)


def _needs_exact_values(f: Filter) -> bool:
    """Whether a filter's MongoDB form could miss rows when some values are read as NULL."""
    return f.op == "not" or any(leaf.op == "is_null" for leaf in leaves(f)) or \
        (f.op in ("and", "or") and any(_needs_exact_values(p) for p in f.value))


def _max_time(key: str) -> dict[str, int]:
    """The task's time left as MongoDB's own limit (maxTimeMS), so the server stops at the deadline."""
    left = CALLER.get().seconds_left()
    return {} if left is None else {key: max(1, int(left * 1000))}
