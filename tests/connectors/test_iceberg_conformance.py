"""The connector conformance suite over a real Iceberg table (pyiceberg SQL catalog on SQLite,
local warehouse; tests/integration/iceberg_catalog.py)."""

from __future__ import annotations

from typing import Callable, Mapping

import pyarrow as pa
import pytest

from connectors.base import DatasetSpec
from connectors.iceberg.connector import IcebergConnector
from engine.errors import ConnectorError
from tests.connectors.conformance import ConformanceCase, ConformanceSuite, ErrorCase, Source, reference_table
from tests.integration.iceberg_catalog import make_catalog

DATASET = "reference"
# What Iceberg holds exactly: no 8/16-bit or unsigned integers (see NARROW_COLUMNS).
ICEBERG_COLUMNS = ("id", "i32", "i64", "f32", "f64", "dec", "s", "b", "d", "ts", "tstz", "bin")
# Iceberg's smallest integer is a 32-bit int: these come back widened to int32 (values intact).
# u32/u64 are left out: pyiceberg maps them to int/long, which cannot hold their upper ranges.
NARROW_COLUMNS = ("id", "i8", "u8", "u16")
SECRET_TOKEN = "ice-T0ken-Sh0uld-N3ver-Leak"
SECRET_S3 = "s3-S3cret-Sh0uld-N3ver-Leak"


def ice_spec(params: Mapping[str, str], path: str = "conf.reference", descriptions=None, **extra) -> DatasetSpec:
    return DatasetSpec(name=DATASET, path=path, prefix="iceberg", params=dict(params),
                       column_descriptions=dict(descriptions or {}), **extra)


@pytest.fixture(scope="session")
def iceberg_conformance_catalog(tmp_path_factory: pytest.TempPathFactory):
    cat = make_catalog(tmp_path_factory.mktemp("iceberg_conformance"))
    reference = reference_table(ICEBERG_COLUMNS)
    # three data files (three snapshots), so scans stream several files
    table = cat.create("conf.reference", schema=reference.schema)
    for start, stop in ((0, 13), (13, 27), (27, reference.num_rows)):
        table.append(reference.slice(start, stop - start))
    cat.create("conf.narrow", reference_table(NARROW_COLUMNS))
    return cat


def _builder(path: str, column_types: Mapping[str, pa.DataType] | None = None
             ) -> Callable[[pytest.FixtureRequest], Source]:
    def build(request: pytest.FixtureRequest) -> Source:
        cat = request.getfixturevalue("iceberg_conformance_catalog")
        params = cat.params()

        def conn(p: Mapping[str, str], table: str = path) -> Callable[[], IcebergConnector]:
            return lambda: IcebergConnector(ice_spec(p, table))

        errors = [
            ErrorCase("missing-table", conn(params, "conf.no_such_table"), r"conf\.no_such_table does not exist"),
            ErrorCase("missing-namespace", conn(params, "nope.reference"), r"nope\.reference does not exist"),
            ErrorCase("bad-path", conn(params, "just_a_table"), r"must name <namespace>\.<table>"),
            ErrorCase("bad-catalog-type", conn({**params, "iceberg_catalog_type": "oracle"}),
                      r"unknown iceberg_catalog_type 'oracle'; allowed: rest, sql, glue, hive"),
            ErrorCase("missing-uri", conn({"iceberg_catalog_type": "sql"}), r"needs param\(s\) iceberg_uri"),
            ErrorCase("unknown-param", conn({**params, "pg_host": "x"}), r"unknown param\(s\) pg_host .*iceberg_uri"),
            ErrorCase("unreachable-rest", conn({"iceberg_catalog_type": "rest", "iceberg_uri": "http://127.0.0.1:1",
                                                "iceberg_token": SECRET_TOKEN,
                                                "iceberg_s3_secret_access_key": SECRET_S3}),
                      r"cannot open the Iceberg rest catalog"),
            ErrorCase("rest-url-bad-shape", conn({}, "https://catalog.example/v1/tables/t"),
                      r"REST table URL must look like"),
        ]

        def make(descriptions: Mapping[str, str]) -> IcebergConnector:
            return IcebergConnector(ice_spec(params, path, descriptions=descriptions,
                                             column_types=dict(column_types or {})))

        return Source(make=make, errors=errors, secrets=(SECRET_TOKEN, SECRET_S3), dataset=DATASET)

    return build


_WIDENED = "Iceberg has no 8/16-bit or unsigned integers: these columns are stored and read back as int32"


class TestIcebergConformance(ConformanceSuite):
    pytestmark = pytest.mark.integration
    cases = [
        ConformanceCase("iceberg", ICEBERG_COLUMNS, build=_builder("conf.reference")),
        ConformanceCase("iceberg-narrow-ints", NARROW_COLUMNS, build=_builder("conf.narrow"),
                        gaps={"test_schema": (_WIDENED, AssertionError)}),
        # the pod's `columns[].type` gives the narrow types back (values cast on read)
        ConformanceCase("iceberg-narrow-ints-pod-types", NARROW_COLUMNS,
                        build=_builder("conf.narrow", {"i8": pa.int8(), "u8": pa.uint8(), "u16": pa.uint16()})),
    ]


def test_errors_are_connector_errors_without_secrets(iceberg_conformance_catalog) -> None:
    """A REST catalog that cannot be reached: the error names the dataset, never the token."""
    spec = ice_spec({"iceberg_uri": "http://127.0.0.1:1/catalog", "iceberg_credential": f"client:{SECRET_TOKEN}"})
    with pytest.raises(ConnectorError) as err:
        IcebergConnector(spec).schema()
    assert "'reference'" in str(err.value) and SECRET_TOKEN not in str(err.value)
    assert SECRET_TOKEN not in repr(IcebergConnector(spec)) and SECRET_TOKEN not in repr(IcebergConnector(spec).settings)
