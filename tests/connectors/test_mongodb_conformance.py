"""The connector conformance suite over a MongoDB-wire server (tests/integration/mongo_server.py).

The reference rows become documents: dates as midnight-UTC BSON dates, decimals as
Decimal128, binary as BinData; a NULL is an explicit null in odd rows and a missing field in
even ones (both are SQL NULL). The pod's column types (`spec.column_types`) give the narrow
integer and float32 types BSON does not have.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any, Callable, Mapping

import pytest
from bson import Decimal128

from connectors.base import DatasetSpec
from connectors.mongodb.connector import MongoConnector
from engine.errors import UnsupportedType
from tests.connectors.conformance import COLUMN_TYPES, ConformanceCase, ConformanceSuite, ErrorCase, Source, reference_table
from tests.integration.mongo_server import MONGO_PASSWORD, mongo_server  # noqa: F401

DATASET = "reference"
DB = "conformance"
# What BSON can hold exactly: no unsigned 64-bit integers (int64 at most) and no microsecond
# timestamps (BSON dates are milliseconds), so u64, ts and tstz are left out.
MONGO_COLUMNS = ("id", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "f32", "f64", "dec", "s", "b", "d", "bin")


def _bson_value(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return Decimal128(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    return value


def reference_documents() -> list[dict[str, Any]]:
    docs = []
    for row in reference_table(MONGO_COLUMNS).to_pylist():
        keep_nulls = row["id"] % 2 == 1 or row["id"] == 0  # the first document names every field, in order
        docs.append({k: _bson_value(v) for k, v in row.items() if v is not None or keep_nulls})
    return docs


def mongo_spec(params: Mapping[str, str], path: str = "reference", descriptions=None, **extra) -> DatasetSpec:
    return DatasetSpec(name=DATASET, path=path, prefix="mongodb", params=dict(params),
                       column_descriptions=dict(descriptions or {}), **extra)


def build_mongo(request: pytest.FixtureRequest) -> Source:
    server = request.getfixturevalue("mongo_server")
    server.insert(DB, "reference", reference_documents())
    server.insert(DB, "conflicts", [{"v": 1}, {"v": "one"}])
    params = {**server.params(DB), "mongodb_exclude_id": "true", "mongodb_server_selection_timeout": "2s"}
    types = {c: COLUMN_TYPES[c] for c in MONGO_COLUMNS}
    wrong = "wr0ng-M0ngo-Pa55-Sh0uld-N3ver-Leak"

    def conn(p: Mapping[str, str], path: str = "reference", **extra) -> Callable[[], MongoConnector]:
        return lambda: MongoConnector(mongo_spec(p, path, **extra))

    wrong_uri = server.uri(password=wrong)
    errors = [
        ErrorCase("wrong-password", conn({**params, "mongodb_connection_string": wrong_uri}), r"Authentication failed"),
        ErrorCase("unreachable", conn({**params, "mongodb_connection_string": "mongodb://127.0.0.1:1/",
                                       "mongodb_server_selection_timeout": "300ms"}), r"cannot read from MongoDB"),
        ErrorCase("missing-collection", conn(params, "no_such_collection"),
                  r"conformance\.no_such_collection has no documents"),
        ErrorCase("bad-uri", conn({**params, "mongodb_connection_string": f"mongodb://u:{wrong}@/x?bogus=1&"}),
                  r"not a valid MongoDB URI"),
        ErrorCase("not-a-uri", conn({**params, "mongodb_connection_string": f"postgres://u:{wrong}@h/db"}),
                  r"not a valid MongoDB URI"),
        ErrorCase("no-uri", conn({"mongodb_db": DB}), r"mongodb_connection_string is required"),
        ErrorCase("no-db", conn({"mongodb_connection_string": server.uri()}), r"param mongodb_db is required"),
        ErrorCase("unknown-param", conn({**params, "pg_host": "x"}), r"unknown param\(s\) pg_host .*mongodb_db"),
        ErrorCase("bad-infer-count", conn({**params, "mongodb_num_docs_to_infer_schema": "lots"}),
                  r"mongodb_num_docs_to_infer_schema must be a positive integer"),
        ErrorCase("bad-tls-flag", conn({**params, "mongodb_tls": "maybe"}), r"mongodb_tls must be true or false"),
        ErrorCase("conflicting-types", conn(params, "conflicts"), r"field 'v' has values of types int, str",
                  raises=UnsupportedType),
    ]

    def make(descriptions: Mapping[str, str]) -> MongoConnector:
        return MongoConnector(mongo_spec(params, descriptions=descriptions, column_types=types))

    return Source(make=make, errors=errors, secrets=(MONGO_PASSWORD, wrong), dataset=DATASET)


class TestMongoConformance(ConformanceSuite):
    pytestmark = pytest.mark.integration
    cases = [ConformanceCase("mongodb", MONGO_COLUMNS, build=build_mongo)]
