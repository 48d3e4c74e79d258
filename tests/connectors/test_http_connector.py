"""http(s): connector behaviour beyond the conformance suite, against the real local server."""

from __future__ import annotations

import gc
import logging
import tempfile
from pathlib import Path

import pytest

from connectors.base import CALLER, Caller, CancelScope, DatasetSpec, Filter
from connectors.files.http import HttpFileConnector, parse_headers, redact_url
from engine.errors import ConnectorError
from tests.connectors.conformance import JSON_COLUMNS, read, reference_table
from tests.connectors.conftest import HTTP_API_KEY, HTTP_PASSWORD, HTTP_TOKEN, HTTP_USER, HttpServer

SECRETS = (HTTP_API_KEY, HTTP_TOKEN, HTTP_PASSWORD)


def http(url: str, params: dict | None = None, **extra) -> HttpFileConnector:
    return HttpFileConnector(DatasetSpec(name="remote", path=url, prefix=url.split(":")[0], params=params or {},
                                         **extra))


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Downloads land here, so the tests can see what is left behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def downloads(temp_dir: Path) -> list[Path]:
    return list(temp_dir.glob("satchel-http-*"))


def test_schema_fetched_once_and_every_scan_fetches_fresh_data(http_server: HttpServer) -> None:
    dyn = http_server.root / "dyn"
    dyn.mkdir(exist_ok=True)
    (dyn / "prices.csv").write_text("sku,price\na,1.5\n")
    conn = http(f"{http_server.base_url}/public/dyn/prices.csv")
    before = len(http_server.hits)
    schema = conn.schema()
    conn.schema()
    assert len(http_server.hits) == before + 1
    (dyn / "prices.csv").write_text("sku,price\na,1.5\nb,2\nc,\n")
    assert read(conn.scan()).to_pylist() == [{"sku": "a", "price": 1.5}, {"sku": "b", "price": 2.0},
                                             {"sku": "c", "price": None}]
    assert conn.schema().equals(schema)
    assert len(http_server.hits) == before + 2
    conn.close()


def test_a_task_reads_the_download_that_gave_the_schema(http_server: HttpServer, temp_dir: Path) -> None:
    """A first load (schema, then scan, in one task) fetches the file once; the next task fetches afresh."""
    dyn = http_server.root / "dyn"
    dyn.mkdir(exist_ok=True)
    (dyn / "once.csv").write_text("sku,price\na,1.5\n")
    conn = http(f"{http_server.base_url}/public/dyn/once.csv")
    before = len(http_server.hits)
    first = CALLER.set(Caller("runtime", "refresh", None, CancelScope()))
    try:
        conn.schema()
        assert read(conn.scan()).to_pylist() == [{"sku": "a", "price": 1.5}]
    finally:
        CALLER.reset(first)
    assert len(http_server.hits) == before + 1
    assert downloads(temp_dir) == []
    (dyn / "once.csv").write_text("sku,price\nb,2\n")
    second = CALLER.set(Caller("runtime", "refresh", None, CancelScope()))
    try:
        assert read(conn.scan()).to_pylist() == [{"sku": "b", "price": 2.0}]
    finally:
        CALLER.reset(second)
    assert len(http_server.hits) == before + 2
    conn.close()


def test_a_schema_download_no_scan_took_is_removed(http_server: HttpServer, temp_dir: Path) -> None:
    """A task that asked only for the schema leaves no file behind; a later task downloads afresh."""
    conn = http(f"{http_server.base_url}/public/reference.parquet")
    scope = CancelScope()
    token = CALLER.set(Caller("runtime", "query", None, scope))
    try:
        conn.schema()
    finally:
        CALLER.reset(token)
    assert len(downloads(temp_dir)) == 1
    del scope, token
    gc.collect()
    assert downloads(temp_dir) == []
    other = CALLER.set(Caller("runtime", "query", None, CancelScope()))
    before = len(http_server.hits)
    try:
        assert read(conn.scan(["id"])).num_rows > 0
    finally:
        CALLER.reset(other)
    assert len(http_server.hits) == before + 1
    conn.close()
    assert downloads(temp_dir) == []


def test_temporary_files_are_removed(http_server: HttpServer, temp_dir: Path) -> None:
    conn = http(f"{http_server.base_url}/public/reference.parquet")
    read(conn.scan(["id"]))
    assert downloads(temp_dir) == []
    reader = conn.scan(["id"], [Filter("id", "<", 5)])
    assert len(downloads(temp_dir)) == 1
    del reader  # dropped before its first batch
    gc.collect()
    assert downloads(temp_dir) == []
    reader = conn.scan(["id"], limit=1)
    reader.read_next_batch()
    del reader  # dropped part-way
    gc.collect()
    assert downloads(temp_dir) == []
    with pytest.raises(ConnectorError):
        http(f"{http_server.base_url}/public/missing.parquet").scan()
    assert downloads(temp_dir) == []


def test_timeout(http_server: HttpServer) -> None:
    conn = http(f"{http_server.base_url}/slow/reference.csv", {"http_timeout": "300ms"})
    with pytest.raises(ConnectorError, match=r"dataset 'remote': GET http://127\.0\.0\.1:\d+/slow/reference\.csv "
                                             r"timed out after 0\.3s"):
        conn.schema()


def test_basic_auth_and_records_object(http_server: HttpServer) -> None:
    conn = http(f"{http_server.base_url}/basic/records.json", {"http_auth": f"basic {HTTP_USER}:{HTTP_PASSWORD}"})
    table = read(conn.scan(None, [Filter("id", "<", 10)]))
    expected = reference_table(JSON_COLUMNS, nan=False)
    assert conn.schema() == expected.schema
    assert sorted(table["id"].to_pylist()) == list(range(10))


def test_headers_as_json_object(http_server: HttpServer) -> None:
    conn = http(f"{http_server.base_url}/secure/reference.csv",
                {"http_headers": f'{{"X-Api-Key": "{HTTP_API_KEY}", "X-Trace": 7}}'})
    assert read(conn.scan(["id"])).num_rows == 40


def test_credentials_in_url_are_used_but_never_shown(http_server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    host = http_server.base_url.split("//")[1]
    conn = http(f"http://{HTTP_USER}:{HTTP_PASSWORD}@{host}/basic/reference.csv?sig={HTTP_TOKEN}")
    assert read(conn.scan(["id"])).num_rows == 40
    bad = http(f"http://{HTTP_USER}:{HTTP_PASSWORD}@{host}/basic/nothing.csv?sig={HTTP_TOKEN}")
    with pytest.raises(ConnectorError) as err:
        bad.schema()
    assert "sig=***" in str(err.value)
    for secret in SECRETS:
        assert secret not in str(err.value)
        assert secret not in caplog.text
    assert "sig=***" in caplog.text  # httpx's own request log is masked too


def test_secret_headers_never_logged(http_server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    conn = http(f"{http_server.base_url}/secure/reference.csv", {"http_headers": f"X-Api-Key: {HTTP_API_KEY}"})
    read(conn.scan(["id"]))
    bearer = http(f"{http_server.base_url}/bearer/missing.json", {"http_auth": f"Bearer {HTTP_TOKEN}"})
    with pytest.raises(ConnectorError, match="HTTP 404"):
        bearer.schema()
    for secret in SECRETS:
        assert secret not in caplog.text


def test_invalid_urls_and_params() -> None:
    with pytest.raises(ConnectorError, match="is not an http\\(s\\) URL with a host"):
        http("http:///nohost.csv")
    with pytest.raises(ConnectorError, match="http_headers has an invalid header name"):
        http("http://127.0.0.1/x.csv", {"http_headers": "Bad Name: x"})
    with pytest.raises(ConnectorError, match="http_headers is not a valid JSON object"):
        http("http://127.0.0.1/x.csv", {"http_headers": "{nope"})


def test_header_parsing() -> None:
    assert parse_headers("d", "A: 1; B-C: two: parts ;") == {"A": "1", "B-C": "two: parts"}
    assert parse_headers("d", '{"Cookie": "a=1; b=2"}') == {"Cookie": "a=1; b=2"}


def test_redact_url() -> None:
    assert redact_url("https://u:p@example.com:8443/a/b.csv?token=s3&x=1#frag") == \
        "https://example.com:8443/a/b.csv?token=***&x=***"
    assert redact_url("http://[::1]/x") == "http://[::1]/x"


def test_redirects_keep_secret_headers_on_the_origin(http_server: HttpServer) -> None:
    params = {"http_headers": f"X-Api-Key: {HTTP_API_KEY}"}
    base = http_server.base_url
    same = http(f"{base}/redirect?to=/secure/reference.csv", params | {"file_format": "csv"})
    assert read(same.scan(["id"])).num_rows == 40
    # localhost is another origin than 127.0.0.1: the key is not sent there
    other = base.replace("127.0.0.1", "localhost")
    away = http(f"{base}/redirect?to={other}/secure/reference.csv", params | {"file_format": "csv"})
    with pytest.raises(ConnectorError, match="HTTP 401"):
        away.schema()
