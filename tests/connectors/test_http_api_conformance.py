"""The conformance suite over the http connector's JSON API mode: the reference table served
as paginated JSON pages by a real server subprocess (tests/connectors/http_api_server.py), one
case per pagination style, plus one case typed by the pod's column types."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Callable, Iterator, Mapping

import pytest

from connectors.base import DatasetSpec
from connectors.registry import create_connector
from tests.connectors.conformance import (
    ALL_COLUMNS,
    COLUMN_TYPES,
    JSON_COLUMNS,
    ConformanceCase,
    ConformanceSuite,
    ErrorCase,
    Source,
    reference_table,
)
from tests.connectors.http_api_server import ApiServer, start_api_server

DATASET = "reference"
TOKEN = "api-t0ken-Sh0uld-N3ver-Leak"
QUERY_KEY = "qu3ry-k3y-Sh0uld-N3ver-Leak"
WRONG = "wr0ng-Api-Sh0uld-N3ver-Leak"
# JSON has no binary type; every other reference column travels (typed by the pod where JSON
# cannot say the type: narrow and unsigned ints, float32, decimals as strings).
TYPED_COLUMNS = tuple(c for c in ALL_COLUMNS if c != "bin")


@pytest.fixture(scope="module")
def api_server() -> Iterator[ApiServer]:
    server = start_api_server()
    try:
        yield server
    finally:
        server.stop()


def json_records(columns, nan: bool = False) -> list[dict]:
    """The reference rows as a JSON API sends them: ISO dates and times (some instants with a
    +05:30 offset), decimals as strings."""
    rows = reference_table(columns, nan=nan).to_pylist()
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))

    def value(v, i: int):
        if isinstance(v, dt.datetime):
            return (v.astimezone(ist) if v.tzinfo is not None and i % 3 == 0 else v).isoformat()
        if isinstance(v, (dt.date, decimal.Decimal)):
            return str(v)
        return v

    return [{k: value(v, i) for k, v in row.items()} for i, row in enumerate(rows)]


def api_spec(url: str, params: Mapping[str, str], descriptions: Mapping[str, str] | None = None,
             **extra) -> DatasetSpec:
    return DatasetSpec(name=DATASET, path=url, prefix="http", params=dict(params),
                       column_descriptions=dict(descriptions or {}), **extra)


STYLES: dict[str, tuple[str, dict[str, str]]] = {
    "link": ("/link/{name}?per_page=7", {"json_pointer": "/data/items"}),
    "cursor": ("/cursor/{name}?limit=9", {"json_pointer": "/data/items", "http_cursor_pointer": "/paging/next_cursor",
                                          "http_cursor_param": "after"}),
    "nexturl": ("/nexturl/{name}", {"json_pointer": "/results", "http_pagination": "cursor",
                                    "http_cursor_pointer": "/next"}),
    "page": ("/page/{name}", {"json_pointer": "/data/items", "http_pagination": "page", "http_page_param": "p",
                              "http_page_size_param": "size", "http_page_size": "8"}),
    "offset": ("/offset/{name}", {"json_pointer": "/data/items", "http_pagination": "offset",
                                  "http_offset_param": "skip", "http_limit_param": "take", "http_page_size": "10"}),
}


def api_case(case_id: str, style: str, columns, typed: bool = False) -> ConformanceCase:
    route, style_params = STYLES[style]

    def build(request: pytest.FixtureRequest) -> Source:
        server: ApiServer = request.getfixturevalue("api_server")
        name = f"ref-{case_id}"
        server.load(name, json_records(columns), headers={"Authorization": f"Bearer {TOKEN}"},
                    query={"api_key": QUERY_KEY})
        base = server.base_url
        url = base + route.format(name=name)
        params = {**style_params, "http_auth": f"Bearer {TOKEN}", "http_query_params": f"api_key={QUERY_KEY}",
                  "http_max_retries": "0"}
        types = {c: COLUMN_TYPES[c] for c in columns} if typed else {}

        def conn(p: Mapping[str, str], path: str | None = None) -> Callable[[], HttpFileConnector]:
            return lambda: create_connector(api_spec(base + (path or route.format(name=name)), p, column_types=types))

        secured_plain = {k: params[k] for k in ("http_auth", "http_query_params")} | {"http_pagination": "none"}
        no_auth = {k: v for k, v in params.items() if k != "http_auth"}
        errors = [
            ErrorCase("missing-token", conn(no_auth), r"GET http://127\.0\.0\.1:\d+/.*api_key=\*\*\*.* returned HTTP 401"),
            ErrorCase("wrong-token", conn({**params, "http_auth": f"Bearer {WRONG}"}), r"returned HTTP 401"),
            ErrorCase("wrong-query-key", conn({**params, "http_query_params": f'{{"api_key": "{WRONG}"}}'}),
                      r"returned HTTP 401"),
            ErrorCase("no-collection", conn(params, f"/page/missing-{name}"), r"returned HTTP 404"),
            ErrorCase("bad-pointer", conn({**params, "json_pointer": "/nope/rows"}),
                      r"page 1 of .*: json_pointer '/nope/rows' not found: no member 'nope' at '/' \(members: .*\)"),
            ErrorCase("pointer-not-array", conn({**params, "json_pointer": ""}),
                      r"json_pointer '' is an object, not an array of records"),
            ErrorCase("pointer-syntax", conn({**params, "json_pointer": "data.items"}),
                      r"param json_pointer must be a JSON pointer starting with '/'"),
            ErrorCase("unknown-style", conn({**params, "http_pagination": "scroll"}),
                      r"unknown http_pagination 'scroll'; allowed: none, link, cursor, page, offset"),
            ErrorCase("cursor-needs-pointer", conn({"json_pointer": "/data/items", "http_pagination": "cursor"}),
                      r"http_pagination: cursor needs http_cursor_pointer"),
            ErrorCase("page-cap", conn({**params, "http_max_pages": "2"}),
                      r"has more than http_max_pages=2 pages; raise http_max_pages"),
            ErrorCase("bad-rate", conn({**params, "http_rate_limit": "fast"}), r"param http_rate_limit must be a number > 0"),
            ErrorCase("bad-retries", conn({**params, "http_max_retries": "-1"}),
                      r"param http_max_retries must be an integer >= 0"),
            ErrorCase("not-json", conn(secured_plain, f"/text/{name}"),
                      r"GET .*/text/.* \(page 1\) is not valid JSON"),
            ErrorCase("wrong-format", conn({**params, "file_format": "csv"}), r"JSON API params .* need file_format: json"),
            ErrorCase("unknown-param", conn({**params, "http_cursor": "x"}),
                      r"unknown param\(s\) http_cursor .*allowed: .*http_cursor_param, http_cursor_pointer"),
            ErrorCase("stray-param", conn({"json_pointer": "/data/items", "http_page_size": "5"}),
                      r"param\(s\) http_page_size do not apply to http_pagination: link"),
        ]
        return Source(
            make=lambda descriptions: create_connector(api_spec(url, params, descriptions, column_types=types)),
            errors=errors, secrets=(TOKEN, QUERY_KEY, WRONG), dataset=DATASET)

    return ConformanceCase(case_id, columns, build, nan=False)


class TestHttpApiConformance(ConformanceSuite):
    cases = [
        api_case("api-link", "link", JSON_COLUMNS),
        api_case("api-cursor", "cursor", JSON_COLUMNS),
        api_case("api-nexturl", "nexturl", JSON_COLUMNS),
        api_case("api-page", "page", JSON_COLUMNS),
        api_case("api-offset", "offset", JSON_COLUMNS),
        api_case("api-typed", "page", TYPED_COLUMNS, typed=True),
    ]
