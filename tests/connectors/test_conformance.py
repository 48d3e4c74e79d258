"""The conformance suite over the file and http(s) connectors, one case per layout/format."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import pytest

from connectors.base import DatasetSpec
from connectors.files.file import FileConnector
from connectors.files.http import HttpFileConnector
from tests.connectors.conformance import (
    ALL_COLUMNS,
    CSV_COLUMNS,
    JSON_COLUMNS,
    ConformanceCase,
    ConformanceSuite,
    ErrorCase,
    Source,
)
from tests.connectors.conftest import HTTP_API_KEY, HTTP_PASSWORD, HTTP_TOKEN

DATASET = "reference"


def file_spec(path: str, base_dir: str, params: Mapping[str, str] | None = None,
              descriptions: Mapping[str, str] | None = None, **extra) -> DatasetSpec:
    return DatasetSpec(name=DATASET, path=path, prefix="file", params=dict(params or {}), base_dir=base_dir,
                       column_descriptions=dict(descriptions or {}), **extra)


def http_spec(url: str, params: Mapping[str, str] | None = None, descriptions: Mapping[str, str] | None = None,
              **extra) -> DatasetSpec:
    return DatasetSpec(name=DATASET, path=url, prefix=url.split(":", 1)[0], params=dict(params or {}),
                       column_descriptions=dict(descriptions or {}), **extra)


# -- file: ---------------------------------------------------------------------------------

def _file_errors(root: Path, broken: str) -> list[ErrorCase]:
    base = str(root)
    empty = root / "empty-dir"
    empty.mkdir(exist_ok=True)
    bad = root / "broken"
    bad.mkdir(exist_ok=True)
    (bad / broken).write_bytes(b"\x00\x01 this is not a data file {[")

    def conn(path: str, params: Mapping[str, str] | None = None, **extra) -> Callable[[], FileConnector]:
        return lambda: FileConnector(file_spec(path, base, params, **extra))

    return [
        ErrorCase("missing-file", conn("missing.parquet"), r"file not found: .*missing\.parquet"),
        ErrorCase("glob-no-match", conn("nothing-*.csv"), r"no files match '.*nothing-\*\.csv'"),
        ErrorCase("empty-dir", conn("empty-dir"), r"no data files in directory .*empty-dir"),
        ErrorCase("unknown-format", conn("reference.csv", {"file_format": "xlsx"}),
                  r"unknown file_format 'xlsx'; allowed: parquet, csv, json, ndjson, jsonl"),
        ErrorCase("unknown-param", conn("reference.csv", {"pg_host": "db", "csv_has_header": "true"}),
                  r"unknown param\(s\) pg_host .*allowed: csv_delimiter, csv_has_header, file_format"),
        ErrorCase("bad-bool", conn("reference.csv", {"csv_has_header": "maybe"}), r"csv_has_header must be true or false"),
        ErrorCase("no-extension", conn("globbed/notes.txt"), r"cannot tell the format .*notes\.txt.*file_format"),
        ErrorCase("bad-type-action", conn("reference.csv", unsupported_type_action="explode"),
                  r"unknown unsupported_type_action 'explode'; allowed: error, warn, ignore, string"),
        ErrorCase("corrupt-file", conn(f"broken/{broken}"), r"cannot read|error while reading|is not JSON"),
    ]


def file_case(case_id: str, path: str, columns, nan: bool = True, params: Mapping[str, str] | None = None
              ) -> ConformanceCase:
    def build(request: pytest.FixtureRequest) -> Source:
        root = request.getfixturevalue("conformance_files").root
        broken = "broken." + {"parts": "parquet", "globbed/*.csv": "csv"}.get(path, path.rsplit(".", 1)[-1])
        return Source(
            make=lambda descriptions: FileConnector(file_spec(path, str(root), params, descriptions)),
            errors=_file_errors(root, broken),
            dataset=DATASET,
        )

    return ConformanceCase(case_id, columns, build, nan=nan)


# -- http(s): ------------------------------------------------------------------------------

def http_case(case_id: str, route: str, columns, nan: bool = True, params: Mapping[str, str] | None = None
              ) -> ConformanceCase:
    def build(request: pytest.FixtureRequest) -> Source:
        server = request.getfixturevalue("http_server")
        port = request.getfixturevalue("free_port")
        base = server.base_url

        def conn(url: str, p: Mapping[str, str] | None = None) -> Callable[[], HttpFileConnector]:
            return lambda: HttpFileConnector(http_spec(url, p))

        wrong_key = "wr0ng-Key-Sh0uld-N3ver-Leak"
        hostport = base.split("//", 1)[1]
        errors = [
            ErrorCase("http-404", conn(f"{base}/public/missing.parquet"),
                      r"GET .*/public/missing\.parquet returned HTTP 404"),
            ErrorCase("unreachable", conn(f"http://127.0.0.1:{port}/x.parquet"),
                      rf"cannot reach http://127\.0\.0\.1:{port}/x\.parquet"),
            ErrorCase("missing-header", conn(f"{base}/secure/reference.csv"), r"returned HTTP 401"),
            ErrorCase("wrong-header", conn(f"{base}/secure/reference.csv", {"http_headers": f"X-Api-Key: {wrong_key}"}),
                      r"returned HTTP 401"),
            ErrorCase("wrong-token", conn(f"{base}/bearer/reference.json", {"http_auth": f"Bearer {wrong_key}"}),
                      r"returned HTTP 401"),
            ErrorCase("credentials-in-url",
                      conn(f"http://user:{wrong_key}@{hostport}/public/missing.csv?token={wrong_key}&x=1"),
                      r"GET http://127\.0\.0\.1:\d+/public/missing\.csv\?token=\*\*\*&x=\*\*\* returned HTTP 404"),
            ErrorCase("bad-headers-param", conn(f"{base}/public/reference.csv", {"http_headers": f"X-Api-Key {wrong_key}"}),
                      r"http_headers entry 1 is not 'Name: value'"),
            ErrorCase("bad-auth-param", conn(f"{base}/public/reference.csv", {"http_auth": f"Token {wrong_key}"}),
                      r"http_auth must be 'Bearer <token>' or 'basic <user>:<password>'"),
            ErrorCase("bad-timeout", conn(f"{base}/public/reference.csv", {"http_timeout": "soon"}),
                      r"http_timeout must be a positive duration"),
            ErrorCase("unknown-param", conn(f"{base}/public/reference.csv", {"file_path": "x"}),
                      r"unknown param\(s\) file_path .*allowed: .*http_auth, http_headers, http_timeout"),
            ErrorCase("unknown-format", conn(f"{base}/export?kind=raw"), r"cannot tell the format .*file_format"),
        ]
        return Source(
            make=lambda descriptions: HttpFileConnector(http_spec(f"{base}{route}", params, descriptions)),
            errors=errors,
            secrets=(HTTP_API_KEY, HTTP_TOKEN, HTTP_PASSWORD, wrong_key),
            dataset=DATASET,
        )

    return ConformanceCase(case_id, columns, build, nan=nan)


class TestFileConformance(ConformanceSuite):
    cases = [
        file_case("parquet", "reference.parquet", ALL_COLUMNS),
        file_case("csv", "reference.csv", CSV_COLUMNS),
        file_case("ndjson", "reference.ndjson", JSON_COLUMNS, nan=False),
        file_case("json-array", "reference.json", JSON_COLUMNS, nan=False),
        file_case("json-records", "records.json", JSON_COLUMNS, nan=False),
        file_case("parquet-dir", "parts", ALL_COLUMNS),
        file_case("csv-glob", "globbed/*.csv", CSV_COLUMNS),
    ]


class TestHttpConformance(ConformanceSuite):
    cases = [
        http_case("http-parquet", "/public/reference.parquet", ALL_COLUMNS),
        http_case("http-csv-headers", "/secure/reference.csv", CSV_COLUMNS,
                  params={"http_headers": f"X-Api-Key: {HTTP_API_KEY}; X-Client: satchel-tests"}),
        http_case("http-json-bearer", "/bearer/reference.json", JSON_COLUMNS, nan=False,
                  params={"http_auth": f"Bearer {HTTP_TOKEN}", "http_timeout": "10s"}),
        http_case("http-ndjson-content-type", "/export?kind=ndjson&token=abc", JSON_COLUMNS, nan=False),
    ]

