"""http(s) JSON API mode beyond the conformance suite: pagination bookkeeping, retries,
Retry-After, rate limit, page cap, limits, nested data and secrets, against the real server
subprocess in tests/connectors/http_api_server.py (it records every request it answers)."""

from __future__ import annotations

import email.utils
import logging
import time
from typing import Iterator

import pyarrow as pa
import pytest

from connectors.files.http_retry import RetryPolicy, parse_retry_after
from connectors.files.pagination import parse_pointer, resolve
from connectors.files.ratelimit import RateLimiter
from connectors.base import DatasetSpec, Filter, FilterSupport
from connectors.registry import create_connector
from connectors.files.http_api import HttpApiConnector
from engine.errors import ConnectorError, UnsupportedType
from tests.connectors.conformance import read
from tests.connectors.http_api_server import ApiServer, start_api_server

TOKEN = "b3arer-Sh0uld-N3ver-Leak"
KEY = "k3y-in-query-Sh0uld-N3ver-Leak"
USERS = [{"id": i, "name": f"user {i}", "tags": ["x", "y"][: i % 3], "address": {"city": f"c{i % 4}", "zip": 1000 + i},
          "joined": f"2024-01-{i % 28 + 1:02d}T10:00:00Z", "score": None if i % 5 == 0 else i * 1.5}
         for i in range(45)]
PAGED = {  # style -> (route, params); 10 records a page
    "link": ("/link/users?per_page=10", {"json_pointer": "/data/items"}),
    "cursor": ("/cursor/users?limit=10", {"json_pointer": "/data/items", "http_cursor_pointer": "/paging/next_cursor",
                                          "http_cursor_param": "after"}),
    "nexturl": ("/nexturl/users", {"json_pointer": "/results", "http_cursor_pointer": "/next"}),
    "page": ("/page/users", {"json_pointer": "/data/items", "http_pagination": "page", "http_page_param": "p",
                             "http_page_size_param": "size", "http_page_size": "10"}),
    "offset": ("/offset/users", {"json_pointer": "/data/items", "http_pagination": "offset",
                                 "http_offset_param": "skip", "http_limit_param": "take", "http_page_size": "10"}),
}
FAST_RETRY = {"http_retry_backoff": "50ms"}


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServer]:
    server = start_api_server()
    server.load("users", USERS)
    server.load("secure", USERS, headers={"Authorization": f"Bearer {TOKEN}"}, query={"api_key": KEY})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(api: ApiServer) -> ApiServer:
    api.reset()
    return api


def connect(server: ApiServer, route: str, params: dict, **extra) -> HttpApiConnector:
    conn = create_connector(DatasetSpec(name="users", path=server.base_url + route, prefix="http", params=params,
                                         **extra))
    assert isinstance(conn, HttpApiConnector)
    return conn


def paths(server: ApiServer) -> list[str]:
    return [r["path"] for r in server.requests()]


# -- pagination ------------------------------------------------------------------------------

@pytest.mark.parametrize("style", list(PAGED))
def test_every_page_fetched_exactly_once(server: ApiServer, style: str) -> None:
    route, params = PAGED[style]
    conn = connect(server, route, params)
    conn.schema()
    assert len(server.requests()) == 1, "the schema comes from the first page only"
    server.reset()
    reader = conn.scan()
    batches = list(reader)
    table = pa.Table.from_batches(batches, schema=reader.schema)
    assert table.column("id").to_pylist() == list(range(45))
    assert [b.num_rows for b in batches] == [10, 10, 10, 10, 5], "one batch per page"
    seen = paths(server)
    # page and offset styles stop at the short last page, link and cursor styles when the server says so
    assert len(seen) == 5 and len(set(seen)) == 5, seen
    assert all(r["status"] == 200 for r in server.requests())
    conn.close()


def test_nested_json_becomes_structs_and_lists(server: ApiServer) -> None:
    conn = connect(server, *PAGED["link"])
    schema = conn.schema()
    assert schema.field("tags").type == pa.list_(pa.string())
    assert schema.field("address").type == pa.struct([("city", pa.string()), ("zip", pa.int64())])
    assert schema.field("joined").type == pa.timestamp("us", "UTC")  # ISO strings in the sample
    assert schema.field("score").type == pa.float64()  # null, then ints and floats mixed: widened
    row = read(conn.scan(["id", "tags", "address"], [Filter("id", "=", 4)])).to_pylist()
    assert row == [{"id": 4, "tags": ["x"], "address": {"city": "c0", "zip": 1004}}]


def test_pod_column_types_win(server: ApiServer) -> None:
    types = {"id": pa.int16(), "joined": pa.string(), "address": pa.struct([("zip", pa.int32())])}
    conn = connect(server, *PAGED["cursor"], column_types=types)
    schema = conn.schema()
    assert [schema.field(c).type for c in types] == list(types.values())
    table = read(conn.scan(["id", "joined", "address"], limit=3))
    assert table.to_pylist()[1] == {"id": 1, "joined": "2024-01-02T10:00:00Z", "address": {"zip": 1001}}


def test_limit_stops_fetching_pages(server: ApiServer) -> None:
    conn = connect(server, *PAGED["page"])
    conn.schema()
    server.reset()
    assert read(conn.scan(["id"], limit=12)).column("id").to_pylist() == list(range(12))
    assert len(server.requests()) == 2
    server.reset()
    # an exact filter is applied to each page, so the limit still ends the walk early
    support = conn.classify_filters([Filter("id", ">=", 21)])
    assert support == [FilterSupport.EXACT]
    assert read(conn.scan(["id"], [Filter("id", ">=", 21)], limit=3)).column("id").to_pylist() == [21, 22, 23]
    assert len(server.requests()) == 3


def test_page_cap_is_an_error_never_a_partial_table(server: ApiServer) -> None:
    conn = connect(server, PAGED["link"][0], {**PAGED["link"][1], "http_max_pages": "3"})
    with pytest.raises(ConnectorError, match=r"dataset 'users': .* has more than http_max_pages=3 pages"):
        read(conn.scan())
    assert len(server.requests()) == 1 + 3, "the 4th page is never requested"
    server.reset()
    exact = connect(server, PAGED["link"][0], {**PAGED["link"][1], "http_max_pages": "5"})
    assert read(exact.scan(["id"])).num_rows == 45  # exactly the cap: fine
    assert read(exact.scan(["id"], limit=5)).num_rows == 5


def test_pagination_loop_is_detected(server: ApiServer) -> None:
    # a "cursor" the server ignores: the second page is the first again, and so is the third
    looping = connect(server, "/nexturl/users", {"json_pointer": "/results", "http_cursor_pointer": "/results/0/name",
                                                 "http_cursor_param": "ignored"})
    with pytest.raises(ConnectorError, match=r"pagination of .*/nexturl/users loops: page 3 is "
                                             r".*/nexturl/users\?ignored=\*\*\* again"):
        read(looping.scan(["id"]))


# -- retries, Retry-After, rate limit --------------------------------------------------------

def test_transient_failures_are_retried(server: ApiServer) -> None:
    conn = connect(server, PAGED["offset"][0], {**PAGED["offset"][1], **FAST_RETRY})
    conn.schema()
    server.reset()
    server.faults({"match": "skip=20", "status": 503}, {"match": "skip=20", "status": 502})
    assert read(conn.scan(["id"])).num_rows == 45
    statuses = [(r["path"].split("?")[1], r["status"]) for r in server.requests()]
    assert [s for p, s in statuses if "skip=20" in p] == [503, 502, 200]
    assert len(statuses) == 5 + 2


def test_retry_after_seconds_is_honoured(server: ApiServer) -> None:
    conn = connect(server, PAGED["link"][0], {**PAGED["link"][1], **FAST_RETRY})
    conn.schema()
    server.reset()
    server.faults({"match": "page=2", "status": 429, "retry_after": "1"})
    assert read(conn.scan(["id"])).num_rows == 45
    page2 = [r for r in server.requests() if "page=2" in r["path"]]
    assert [r["status"] for r in page2] == [429, 200]
    assert page2[1]["t"] - page2[0]["t"] >= 0.9  # the header said 1 s (backoff alone would be ~50 ms)


def test_retry_after_http_date_is_honoured(server: ApiServer) -> None:
    conn = connect(server, PAGED["cursor"][0], {**PAGED["cursor"][1], **FAST_RETRY})
    conn.schema()
    server.reset()
    when = email.utils.formatdate(time.time() + 3, usegmt=True)  # whole seconds: waits 2-3 s
    server.faults({"match": "after=", "status": 503, "retry_after": when})
    assert read(conn.scan(["id"])).num_rows == 45
    failed, retried = [r for r in server.requests() if "after=" in r["path"]][:2]
    assert failed["status"] == 503 and retried["path"] == failed["path"] and retried["status"] == 200
    assert retried["t"] - failed["t"] >= 1.5


def test_retry_after_beyond_max_wait_fails_at_once(server: ApiServer) -> None:
    conn = connect(server, "/plain/users", {"http_pagination": "none", "http_retry_max_wait": "5s"})
    server.faults({"match": "/plain/users", "status": 429, "retry_after": "3600"})
    with pytest.raises(ConnectorError, match=r"returned HTTP 429 Too Many Requests and the server asks to retry "
                                             r"after 3600s, longer than http_retry_max_wait \(5s\)"):
        conn.schema()
    assert len(server.requests()) == 1


def test_retries_run_out(server: ApiServer) -> None:
    conn = connect(server, "/plain/users", {"http_pagination": "none", "http_max_retries": "2", **FAST_RETRY})
    server.faults({"match": "/plain/users", "status": 500, "times": 5})
    with pytest.raises(ConnectorError, match=r"GET .*/plain/users \(page 1\) returned HTTP 500 Internal Server "
                                             r"Error after 3 attempts"):
        conn.schema()
    assert len(server.requests()) == 3
    server.reset()
    conn = connect(server, "/plain/users", {"http_pagination": "none", "http_max_retries": "0"})
    server.faults({"match": "/plain/users", "status": 503})
    with pytest.raises(ConnectorError, match=r"returned HTTP 503 Service Unavailable$"):
        conn.schema()


def test_client_errors_are_not_retried(server: ApiServer) -> None:
    conn = connect(server, "/plain/nothing", {"http_pagination": "none", **FAST_RETRY})
    with pytest.raises(ConnectorError, match=r"returned HTTP 404 Not Found$"):
        conn.schema()
    assert len(server.requests()) == 1


def test_timeouts_are_retried(server: ApiServer) -> None:
    conn = connect(server, "/plain/users", {"http_pagination": "none", "http_timeout": "300ms", **FAST_RETRY})
    server.faults({"match": "/plain/users", "delay": 1.0})
    assert len(conn.schema()) == 6
    assert len(server.requests()) == 2
    server.reset()
    server.faults({"match": "/plain/users", "delay": 1.0, "times": 2})
    conn = connect(server, "/plain/users", {"http_pagination": "none", "http_timeout": "300ms",
                                            "http_max_retries": "1", **FAST_RETRY})
    with pytest.raises(ConnectorError, match=r"timed out after 0\.3s after 2 attempts"):
        conn.schema()


def test_rate_limit_spaces_requests(server: ApiServer) -> None:
    rate = 8.0
    conn = connect(server, PAGED["page"][0], {**PAGED["page"][1], "http_rate_limit": str(rate)})
    conn.schema()
    assert read(conn.scan(["id"])).num_rows == 45
    times = [r["t"] for r in server.requests()]
    assert len(times) == 6
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.8 / rate, gaps  # arrival times at the server; loose for scheduling noise


# -- secrets and credentials -----------------------------------------------------------------

def test_secrets_never_in_errors_or_logs(server: ApiServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    params = {"json_pointer": "/results", "http_cursor_pointer": "/next", "http_auth": f"Bearer {TOKEN}",
              "http_query_params": f'{{"api_key": "{KEY}"}}', **FAST_RETRY}
    conn = connect(server, "/nexturl/secure", params)
    server.faults({"match": "/nexturl/secure", "status": 503, "retry_after": "0"})
    assert read(conn.scan(["id"])).num_rows == 45  # the next URLs carry the key in their query
    messages = []
    for bad in ({**params, "http_auth": "Bearer wrong"}, {k: v for k, v in params.items() if k != "http_query_params"}):
        with pytest.raises(ConnectorError, match="returned HTTP 401") as e:
            connect(server, "/nexturl/secure", bad).schema()
        messages.append(str(e.value))
    assert "api_key=***" in messages[0]
    text = caplog.text + "".join(messages) + repr(conn) + repr(conn.spec.path)
    assert TOKEN not in text and KEY not in text


def test_credentials_stay_on_the_origin(server: ApiServer) -> None:
    """A next-page URL on another origin (localhost vs 127.0.0.1) is fetched without them."""
    params = {"json_pointer": "/results", "http_cursor_pointer": "/next", "http_auth": f"Bearer {TOKEN}",
              "http_query_params": f"api_key={KEY}&next_host=localhost"}
    conn = connect(server, "/nexturl/secure", params)
    with pytest.raises(ConnectorError, match=r"GET http://localhost:\d+/nexturl/secure\?.* \(page 2\) returned HTTP 401"):
        read(conn.scan(["id"]))


# -- the building blocks ---------------------------------------------------------------------

def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None
    assert parse_retry_after("-5", now) is None and parse_retry_after("", now) is None
    policy = RetryPolicy(backoff=1.0, max_wait=5.0)
    assert 0.75 <= policy.backoff_wait(1) <= 1.25 and 1.5 <= policy.backoff_wait(2) <= 2.5
    assert policy.backoff_wait(10) == 5.0


def test_rate_limiter_spacing() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(4):
        limiter.wait()
    assert slept == [0.25, 0.25, 0.25]
    clock[0] += 10  # idle time is not banked as a burst
    limiter.wait()
    limiter.wait()
    assert slept[-1] == 0.25
    limiter.hold(2.0)
    assert limiter.wait() == pytest.approx(2.0)


def test_json_pointer() -> None:
    doc = {"a/b": {"m~n": [{"x": 1}, {"x": 2}]}, "": 5}
    assert resolve(doc, parse_pointer("d", "json_pointer", "/a~1b/m~0n/1/x")) == 2
    assert resolve(doc, parse_pointer("d", "json_pointer", "/")) == 5
    assert resolve(doc, parse_pointer("d", "json_pointer", "")) is doc
    with pytest.raises(ConnectorError, match="param json_pointer must be a JSON pointer starting with '/'"):
        parse_pointer("d", "json_pointer", "a/b")


def test_bad_params_are_clear() -> None:
    def make(params: dict) -> None:
        create_connector(DatasetSpec(name="api", path="http://127.0.0.1:9/x", prefix="http", params=params))

    cases = [
        ({"http_pagination": "page", "http_page_size_param": "per_page"}, r"http_page_size_param needs http_page_size"),
        ({"http_pagination": "offset", "http_page_size": "0"}, r"param http_page_size must be an integer >= 1"),
        ({"http_query_params": "=x"}, r"http_query_params must be 'name=value&name2=value2' or a JSON object"),
        ({"http_query_params": '{"a": [1]}'}, r"http_query_params must map names to scalar values"),
        ({"http_rate_limit": "0"}, r"http_rate_limit must be a number > 0"),
        ({"http_retry_backoff": "x"}, r"http_retry_backoff must be a positive duration"),
        ({"json_pointer": "/a", "csv_delimiter": ";"}, r"unknown param\(s\) csv_delimiter"),
    ]
    for params, pattern in cases:
        with pytest.raises(ConnectorError, match=pattern):
            make(params)


def test_mixed_types_follow_unsupported_type_action(server: ApiServer) -> None:
    server.load("mixed", [{"id": 1, "v": "text"}, {"id": 2, "v": 3}])
    with pytest.raises(UnsupportedType, match="field 'v' has values of types int, str"):
        connect(server, "/plain/mixed", {"http_pagination": "none"}).schema()
    conn = connect(server, "/plain/mixed", {"http_pagination": "none"}, unsupported_type_action="string")
    assert read(conn.scan()).to_pylist() == [{"id": 1, "v": "text"}, {"id": 2, "v": "3"}]


def test_and_or_composites_are_exact_not_is_left_to_the_engine(server: ApiServer) -> None:
    conn = connect(server, *PAGED["offset"])
    either = Filter("", "or", (Filter("id", "<", 2), Filter("score", "in", (4.5, 6.0))))
    both = Filter("", "and", (Filter("score", "not_in", (4.5,)), Filter("id", "<", 6)))
    negated = Filter("", "not", (Filter("score", "in", (4.5,)),))
    assert conn.classify_filters([either, both, negated, Filter("name", "match", "user")]) == [
        FilterSupport.EXACT, FilterSupport.EXACT, FilterSupport.UNSUPPORTED, FilterSupport.UNSUPPORTED]
    assert read(conn.scan(["id"], [either])).column("id").to_pylist() == [0, 1, 3, 4]
    # score is NULL for id 0 and 5: `NULL NOT IN (...)` is NULL, so those rows go
    assert read(conn.scan(["name"], [both])).column("name").to_pylist() == ["user 1", "user 2", "user 4"]
    assert read(conn.scan(["id"], [either], limit=3)).num_rows == 3
