"""The conformance suite over ADBC drivers loaded by name: SQLite (a database file written
here through the same driver), PostgreSQL (tests/integration/postgres_server.py) and Spark
Connect (adbc-driver-spark) to a real Sail (tests/integration/sail_server.py)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Iterator, Mapping

import pyarrow.parquet as pq

import adbc_driver_manager.dbapi as dm
import adbc_driver_sqlite
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connectors.sql.adbc import AdbcConnector
from connectors.base import DatasetSpec
from engine.errors import MissingDependency
from tests.connectors.conformance import ConformanceCase, ConformanceSuite, ErrorCase, Source, reference_table
from tests.connectors.test_postgres_conformance import PG_COLUMNS, PG_TYPES
from tests.integration.postgres_server import SATCHEL_PASSWORD, postgres_server  # noqa: F401
from tests.integration.sail_server import SailServer, start_sail

DATASET = "reference"
# SQLite stores INTEGER, REAL, TEXT and BLOB; booleans, dates and timestamps are stored as
# integers / ISO text and typed back by the pod's `columns[].type` (checked by the suite as
# the schema). NaN cannot be stored (SQLite turns it into NULL): the reference leaves it out.
SQLITE_COLUMNS = ("id", "i64", "f64", "s", "b", "d", "ts", "bin")
POD_TYPES = {"b": pa.bool_(), "d": pa.date32(), "ts": pa.timestamp("us")}


def adbc_spec(params: Mapping[str, str], path: str = "reference", descriptions=None, **extra) -> DatasetSpec:
    return DatasetSpec(name=DATASET, path=path, prefix="adbc", params=dict(params),
                       column_descriptions=dict(descriptions or {}), **extra)


def write_sqlite(path: Path, table: pa.Table) -> None:
    """The reference as SQLite stores it: bool as 0/1, date and timestamp as ISO text."""
    stored = table
    for name in ("b", "d", "ts"):
        i = stored.schema.get_field_index(name)
        col = stored.column(name)
        if name == "b":
            col = pc.cast(col, pa.int64())
        elif name == "d":
            col = pc.strftime(col, "%Y-%m-%d")
        else:
            col = pc.strftime(col, "%Y-%m-%d %H:%M:%S")
        stored = stored.set_column(i, name, col)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dm.connect(driver=adbc_driver_sqlite._driver_path(), db_kwargs={"uri": f"file:{path}"}) as conn:
            with conn.cursor() as cur:
                cur.adbc_ingest("reference", stored, mode="replace")
                cur.execute("CREATE TABLE oddities (id INTEGER, s TEXT)")
            conn.commit()


def build_sqlite(request: pytest.FixtureRequest) -> Source:
    tmp: Path = request.getfixturevalue("tmp_path_factory").mktemp("adbc_sqlite")
    db = tmp / "reference.db"
    write_sqlite(db, reference_table(SQLITE_COLUMNS, nan=False))
    params = {"adbc_driver": "adbc_driver_sqlite", "adbc_uri": f"file:{db}"}

    def conn(p: Mapping[str, str], path: str = "reference", **extra) -> Callable[[], AdbcConnector]:
        return lambda: AdbcConnector(adbc_spec(p, path, **extra))

    errors = [
        ErrorCase("missing-driver", conn({**params, "adbc_driver": "adbc_driver_nosuchdb"}),
                  r"adbc_driver 'adbc_driver_nosuchdb' is not installed: pip install adbc-driver-nosuchdb",
                  raises=MissingDependency),
        ErrorCase("bad-driver-path", conn({**params, "adbc_driver": "/nonexistent/libdriver.so"}), r"does not exist"),
        ErrorCase("missing-driver-param", conn({"adbc_uri": f"file:{db}"}), r"adbc_driver is required"),
        ErrorCase("unknown-table", conn(params, "no_such_table"), r"table no_such_table not found"),
        ErrorCase("unknown-param", conn({**params, "pg_host": "x"}), r"unknown param\(s\) pg_host .*adbc_driver"),
        ErrorCase("bad-options", conn({**params, "adbc_options": "novalue"}), r"adbc_options must be 'key=value"),
        ErrorCase("bad-dialect", conn({**params, "adbc_dialect": "oracle"}), r"unknown adbc_dialect 'oracle'"),
        ErrorCase("unknown-pod-column", conn(params, column_types={"nope": pa.int64()}), r"nope not in the source"),
    ]

    def make(descriptions: Mapping[str, str]) -> AdbcConnector:
        return AdbcConnector(adbc_spec(params, descriptions=descriptions, column_types=POD_TYPES))

    return Source(make=make, errors=errors, secrets=(), dataset=DATASET)


def build_postgres(request: pytest.FixtureRequest) -> Source:
    server = request.getfixturevalue("postgres_server")
    columns = ", ".join(f'"{c}" {PG_TYPES[c]}' for c in PG_COLUMNS)
    server.execute("DROP TABLE IF EXISTS public.adbc_reference")
    server.ingest("public.adbc_reference", reference_table(PG_COLUMNS),
                  f"CREATE TABLE public.adbc_reference ({columns})")
    uri = f"postgresql://satchel:{SATCHEL_PASSWORD}@127.0.0.1:{server.port}/satchel_test"
    wrong = "wr0ng-Adbc-Pa55-Sh0uld-N3ver-Leak"
    params = {"adbc_driver": "adbc_driver_postgresql", "adbc_uri": uri}

    def conn(p: Mapping[str, str], path: str = "public.adbc_reference") -> Callable[[], AdbcConnector]:
        return lambda: AdbcConnector(adbc_spec(p, path))

    errors = [
        ErrorCase("wrong-password", conn({**params, "adbc_uri": uri.replace(SATCHEL_PASSWORD, wrong)}),
                  r"password authentication failed"),
        ErrorCase("unreachable", conn({**params, "adbc_uri": f"postgresql://satchel:{wrong}@127.0.0.1:1/x"}),
                  r"cannot open the ADBC database"),
        ErrorCase("unknown-table", conn(params, "public.no_such_table"), r"public.no_such_table not found"),
    ]

    def make(descriptions: Mapping[str, str]) -> AdbcConnector:
        # The driver reads numeric as text: the pod's column type makes it a decimal again.
        return AdbcConnector(adbc_spec(params, "public.adbc_reference", descriptions=descriptions,
                                       column_types={"dec": pa.decimal128(12, 3)}))

    return Source(make=make, errors=errors, secrets=(SATCHEL_PASSWORD, wrong), dataset=DATASET)


# Every reference type Sail carries (Spark has no unsigned integers).
SPARK_COLUMNS = ("id", "i8", "i16", "i32", "i64", "f32", "f64", "dec", "s", "b", "d", "ts", "tstz", "bin")


@pytest.fixture(scope="module")
def sail_spark_connect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SailServer, Path]]:
    """Sail's Spark Connect server and the reference as a Parquet file it reads by path."""
    tmp = tmp_path_factory.mktemp("adbc_spark")
    pq.write_table(reference_table(SPARK_COLUMNS), tmp / "reference.parquet")
    server = start_sail(tmp, "spark")
    yield server, tmp / "reference.parquet"
    server.stop()


def build_spark(request: pytest.FixtureRequest) -> Source:
    server, path = request.getfixturevalue("sail_spark_connect")
    params = {"adbc_driver": "adbc_driver_spark", "adbc_uri": server.endpoint}
    table = f'"parquet"."{path}"'  # Spark's parquet.`path`: no catalog needed (sessions are short-lived)

    def conn(p: Mapping[str, str], path: str = table) -> Callable[[], AdbcConnector]:
        return lambda: AdbcConnector(adbc_spec(p, path))

    errors = [
        ErrorCase("unknown-table", conn(params, "no_such_table"), r"table no_such_table not found"),
        ErrorCase("unreachable", conn({**params, "adbc_uri": "sc://127.0.0.1:1"}), r"cannot|refused|unavailable"),
        ErrorCase("bad-dialect", conn({**params, "adbc_dialect": "oracle"}), r"unknown adbc_dialect 'oracle'"),
    ]

    def make(descriptions: Mapping[str, str]) -> AdbcConnector:
        return AdbcConnector(adbc_spec(params, table, descriptions=descriptions))

    return Source(make=make, errors=errors, secrets=(), dataset=DATASET)


class TestAdbcSqliteConformance(ConformanceSuite):
    cases = [ConformanceCase("adbc-sqlite", SQLITE_COLUMNS, build=build_sqlite, nan=False)]


class TestAdbcPostgresConformance(ConformanceSuite):
    pytestmark = pytest.mark.integration
    cases = [ConformanceCase("adbc-postgres", PG_COLUMNS, build=build_postgres)]


class TestAdbcSparkConnectConformance(ConformanceSuite):
    pytestmark = pytest.mark.integration
    cases = [ConformanceCase("adbc-spark-sail", SPARK_COLUMNS, build=build_spark)]
