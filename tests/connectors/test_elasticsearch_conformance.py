"""The connector conformance suite over an Elasticsearch-compatible server (noida-db).

The reference table is loaded into an index with an explicit mapping; where ES has no type of
the reference's (unsigned 8/16/32-bit, decimal, naive/microsecond timestamps) the mapping uses
the nearest ES type and the pod's `columns[].type` (DatasetSpec.column_types) declares the
reference type, as a user would.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from typing import Callable, Mapping

import pyarrow as pa
import pytest

from connectors.base import DatasetSpec
from connectors.elasticsearch.connector import ElasticsearchConnector
from engine.errors import UnsupportedType
from tests.connectors.conformance import ConformanceCase, ConformanceSuite, ErrorCase, Source, reference_table
from tests.integration.elasticsearch_server import es_server  # noqa: F401

DATASET = "reference"
INDEX = "conformance-reference"
ES_COLUMNS = ("id", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64", "dec", "s", "b", "d",
              "ts", "tstz", "bin")
MAPPING = {"properties": {
    "id": {"type": "long"}, "i8": {"type": "byte"}, "i16": {"type": "short"}, "i32": {"type": "integer"},
    "i64": {"type": "long"}, "u8": {"type": "short"}, "u16": {"type": "integer"}, "u32": {"type": "long"},
    "u64": {"type": "unsigned_long"}, "f32": {"type": "float"}, "f64": {"type": "double"},
    "dec": {"type": "scaled_float", "scaling_factor": 1000}, "s": {"type": "keyword"}, "b": {"type": "boolean"},
    "d": {"type": "date", "format": "strict_date"},
    "ts": {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
    "tstz": {"type": "date"}, "bin": {"type": "binary"},
}}
# What the pod declares (columns[].type) where ES has no such type.
# Every column is typed so the pod's order (the reference's) is the column order; the
# types differing from the mapping's: u8/u16/u32, dec, ts (naive), tstz (microseconds).
POD_TYPES = dict(zip(ES_COLUMNS, reference_table(ES_COLUMNS, nan=False).schema.types))
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def es_documents(table: pa.Table) -> list[dict]:
    """Reference rows as ES JSON documents (missing fields for NULLs; several source forms)."""
    docs = []
    for i, row in enumerate(table.to_pylist()):
        doc = {}
        for k, v in row.items():
            if v is None:
                continue
            if isinstance(v, bytes):
                v = base64.b64encode(v).decode()
            elif isinstance(v, decimal.Decimal):
                v = float(v)
            elif isinstance(v, dt.datetime):
                if v.tzinfo is not None and i % 3 == 0:
                    v = v.astimezone(IST)  # an offset other than Z: the same instant
                v = v.isoformat()
            elif isinstance(v, dt.date):
                v = v.isoformat()
            doc[k] = v
        docs.append(doc)
    return docs


def es_spec(params: Mapping[str, str], path: str = INDEX, descriptions=None, **extra) -> DatasetSpec:
    return DatasetSpec(name=DATASET, path=path, prefix="elasticsearch",
                       params={"elasticsearch_id_column": "", **params},
                       column_descriptions=dict(descriptions or {}), **extra)


def build_elasticsearch(request: pytest.FixtureRequest) -> Source:
    server = request.getfixturevalue("es_server")
    table = reference_table(ES_COLUMNS, nan=False)
    server.load(INDEX, MAPPING, es_documents(table), ids=[str(i) for i in table["id"].to_pylist()])
    server.load("conformance-oddities", {"properties": {"shape": {"type": "geo_shape"}}}, [])
    params = server.params()
    secret_pass, secret_key = "es-Pa55-Sh0uld-N3ver-Leak", "es-ApiK3y-Sh0uld-N3ver-Leak"

    def conn(p: Mapping[str, str], path: str = INDEX, **extra) -> Callable[[], ElasticsearchConnector]:
        return lambda: ElasticsearchConnector(es_spec(p, path, column_types=POD_TYPES, **extra))

    errors = [
        ErrorCase("unreachable", conn({"elasticsearch_endpoint": "http://127.0.0.1:1", "elasticsearch_user": "u",
                                       "elasticsearch_pass": secret_pass, "elasticsearch_request_timeout": "2s"}),
                  r"cannot reach http://127\.0\.0\.1:1"),
        ErrorCase("unreachable-url-credentials",
                  conn({"elasticsearch_endpoint": f"http://u:{secret_pass}@127.0.0.1:1",
                        "elasticsearch_request_timeout": "2s"}), r"cannot reach http://127\.0\.0\.1:1"),
        ErrorCase("missing-index", conn(params, "no-such-index"), r"'no-such-index' does not exist"),
        ErrorCase("no-endpoint", conn({}), r"elasticsearch_endpoint is required"),
        ErrorCase("bad-endpoint", conn({"elasticsearch_endpoint": "ftp://x"}), r"must be an http\(s\)://host:port URL"),
        ErrorCase("unknown-param", conn({**params, "pg_host": "x"}), r"unknown param\(s\) pg_host .*allowed: .*elasticsearch_endpoint"),
        ErrorCase("both-auth", conn({**params, "elasticsearch_user": "u", "elasticsearch_pass": secret_pass,
                                     "elasticsearch_api_key": secret_key}), r"either elasticsearch_api_key or"),
        ErrorCase("bad-page-size", conn({**params, "elasticsearch_page_size": "0"}), r"elasticsearch_page_size must be"),
        ErrorCase("bad-timeout", conn({**params, "elasticsearch_request_timeout": "soon"}),
                  r"elasticsearch_request_timeout must be a positive duration"),
        ErrorCase("missing-ca-file", conn({**params, "elasticsearch_ca_certs": "/no/such/ca.pem"}),
                  r"elasticsearch_ca_certs: no such file"),
        ErrorCase("bad-index-name", conn(params, "a b"), r"must name an index, a pattern"),
        ErrorCase("unsupported-type", conn(params, "conformance-oddities"), r"column 'shape' has type geo_shape",
                  raises=UnsupportedType),
        ErrorCase("pod-type-for-unknown-column", lambda: ElasticsearchConnector(
            es_spec(params, column_types={**POD_TYPES, "nope": pa.int64()})), r"unknown column\(s\) nope"),
    ]

    def make(descriptions: Mapping[str, str]) -> ElasticsearchConnector:
        return ElasticsearchConnector(es_spec(params, descriptions=descriptions, column_types=POD_TYPES))

    return Source(make=make, errors=errors, secrets=(secret_pass, secret_key), dataset=DATASET)


class TestElasticsearchConformance(ConformanceSuite):
    pytestmark = pytest.mark.integration
    cases = [ConformanceCase("elasticsearch", ES_COLUMNS, build=build_elasticsearch, nan=False, gaps={
        # LIKE '%\\%%' becomes the wildcard query `*\\\\*` (an escaped backslash), which Lucene
        # matches; the noida-db emulator does not honour the escape and returns nothing.
        "test_filters:s-like-10": "emulator: wildcard query ignores backslash escapes (real Elasticsearch honours them)",
    })]
