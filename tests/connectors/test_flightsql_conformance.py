"""The conformance suite over Flight SQL: a real Satchel (DuckDB-accelerated reference table,
API key auth), a real roapi (DataFusion) and a real Sail (Spark SQL, `flightsql_dialect: spark`),
each read by FlightSqlConnector."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Mapping

import pyarrow.parquet as pq
import pytest

from connectors.base import DatasetSpec
from connectors.sql.flightsql import FlightSqlConnector
from tests.connectors.conformance import ConformanceCase, ConformanceSuite, ErrorCase, Source, reference_table
from tests.integration.roapi_server import RoapiServer, start_roapi
from tests.integration.sail_server import SailServer, start_sail

DATASET = "reference"
TOKEN = "fl1ght-T0ken-Sh0uld-N3ver-Leak"
WRONG = "wr0ng-T0ken-Sh0uld-N3ver-Leak"
# Unsigned integers: Satchel serves them, but its public SQL types them as signed (a uint64
# above 2^63 has no bigint), so they are not part of what one Satchel promises another.
SATCHEL_COLUMNS = ("id", "i8", "i16", "i32", "i64", "f32", "f64", "dec", "s", "b", "d", "ts", "tstz", "bin")
ROAPI_COLUMNS = ("id", "i8", "i16", "i32", "i64", "f32", "f64", "dec", "s", "b", "d", "ts", "bin")
SAIL_COLUMNS = ("id", "i8", "i16", "i32", "i64", "f32", "f64", "dec", "s", "b", "d", "ts", "tstz", "bin")

UPSTREAM_POD = """\
version: v1
kind: Spicepod
name: upstream
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${env:SATCHEL_TEST_API_KEY}"]
datasets:
  - from: file:reference.parquet
    name: reference
    acceleration:
      enabled: true
      engine: duckdb
"""


def spec(endpoint: str, path: str = "reference", descriptions=None, **params) -> DatasetSpec:
    return DatasetSpec(name=DATASET, path=path, prefix="flightsql",
                       params={"flightsql_endpoint": endpoint, **params}, column_descriptions=dict(descriptions or {}))


def _errors(endpoint: str, good: Mapping[str, str]) -> list[ErrorCase]:
    def conn(path: str = "reference", **params) -> Callable[[], FlightSqlConnector]:
        return lambda: FlightSqlConnector(spec(params.pop("flightsql_endpoint", endpoint), path, **params))

    return [
        ErrorCase("unreachable", conn(flightsql_endpoint="grpc://127.0.0.1:1"), r"cannot connect to the Flight SQL server"),
        ErrorCase("unknown-table", conn("no_such_table", **good), r"table no_such_table not found"),
        ErrorCase("bad-query", conn("SELECT * FROM no_such_table", **good), r"no_such_table"),
        ErrorCase("bad-endpoint", conn(flightsql_endpoint="http://127.0.0.1:1"), r"flightsql_endpoint must be grpc://"),
        ErrorCase("missing-endpoint", lambda: FlightSqlConnector(DatasetSpec(DATASET, "reference", "flightsql", {})),
                  r"flightsql_endpoint is required"),
        ErrorCase("unknown-param", conn(pg_host="x", **good), r"unknown param\(s\) pg_host .*allowed: .*flightsql_endpoint"),
        ErrorCase("bad-dialect", conn(**{**good, "flightsql_dialect": "oracle"}), r"unknown flightsql_dialect 'oracle'"),
        ErrorCase("token-and-password", conn(flightsql_token=WRONG, flightsql_username="u", flightsql_password=WRONG),
                  r"either flightsql_token or"),
        ErrorCase("tls-option-without-tls", conn(flightsql_tls_skip_verify="true"), r"need a grpc\+tls://"),
    ]


def build_satchel(request: pytest.FixtureRequest) -> Source:
    factory = request.getfixturevalue("module_satchel_server")
    tmp: Path = request.getfixturevalue("tmp_path_factory").mktemp("flightsql_upstream")
    pq.write_table(reference_table(SATCHEL_COLUMNS), tmp / "reference.parquet")
    server = factory(UPSTREAM_POD, pod_dir=tmp, api_key=TOKEN)
    good = {"flightsql_token": TOKEN}
    errors = _errors(server.flight_uri, good) + [
        ErrorCase("wrong-token", lambda: FlightSqlConnector(spec(server.flight_uri, flightsql_token=WRONG)),
                  r"refused the credentials"),
        ErrorCase("no-token", lambda: FlightSqlConnector(spec(server.flight_uri)), r"refused the credentials"),
    ]

    def make(descriptions: Mapping[str, str]) -> FlightSqlConnector:
        return FlightSqlConnector(spec(server.flight_uri, descriptions=descriptions, **good))

    return Source(make=make, errors=errors, secrets=(TOKEN, WRONG), dataset=DATASET)


@pytest.fixture(scope="module")
def roapi_reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoapiServer]:
    """roapi serving the reference table for the whole module."""
    tmp = tmp_path_factory.mktemp("flightsql_roapi")
    pq.write_table(reference_table(ROAPI_COLUMNS), tmp / "reference.parquet")
    server = start_roapi({"reference": tmp / "reference.parquet"}, tmp)
    yield server
    server.stop()


def build_roapi(request: pytest.FixtureRequest) -> Source:
    server = request.getfixturevalue("roapi_reference")

    def make(descriptions: Mapping[str, str]) -> FlightSqlConnector:
        return FlightSqlConnector(spec(server.endpoint, descriptions=descriptions))

    return Source(make=make, errors=_errors(server.endpoint, {}), secrets=(WRONG,), dataset=DATASET)


@pytest.fixture(scope="module")
def sail_reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SailServer]:
    """Sail (local-cluster mode) serving the reference table for the whole module."""
    tmp = tmp_path_factory.mktemp("flightsql_sail")
    pq.write_table(reference_table(SAIL_COLUMNS), tmp / "reference.parquet")
    server = start_sail(tmp)
    try:
        server.create_parquet_table("reference", tmp / "reference.parquet")
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


def build_sail(request: pytest.FixtureRequest) -> Source:
    server = request.getfixturevalue("sail_reference")
    good = {"flightsql_dialect": "spark"}

    def make(descriptions: Mapping[str, str]) -> FlightSqlConnector:
        return FlightSqlConnector(spec(server.endpoint, descriptions=descriptions, **good))

    return Source(make=make, errors=_errors(server.endpoint, good), secrets=(WRONG,), dataset=DATASET)


class TestFlightSqlConformance(ConformanceSuite):
    pytestmark = pytest.mark.integration
    cases = [
        ConformanceCase("flightsql-satchel", SATCHEL_COLUMNS, build=build_satchel),
        ConformanceCase("flightsql-roapi", ROAPI_COLUMNS, build=build_roapi),
        ConformanceCase("flightsql-sail", SAIL_COLUMNS, build=build_sail),
    ]
