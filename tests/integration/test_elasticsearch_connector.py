"""The Elasticsearch connector against a real server (noida-db): mapping -> schema, source
forms, paging through a point in time, push-down proof, count, match(), order, auth/secrets."""

from __future__ import annotations

import base64
import datetime as dt
import gc
import logging

import pyarrow as pa
import pytest

from connectors.base import DatasetSpec, Filter, FilterSupport, SortKey
from connectors.elasticsearch.connector import ElasticsearchConnector
from engine.errors import ConnectorError, UnsupportedType
from tests.integration.elasticsearch_server import EsProxy, EsServer, es_proxy, es_server, wait_for  # noqa: F401

pytestmark = pytest.mark.integration

UTC = dt.timezone.utc
MAPPING = {"properties": {
    "title": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}},
              "meta": {"description": "Product title"}},
    "sku": {"type": "keyword"},
    "qty": {"type": "integer"},
    "price": {"type": "scaled_float", "scaling_factor": 100},
    "weight": {"type": "half_float"},
    "views": {"type": "unsigned_long"},
    "ordered_at": {"type": "date", "format": "yyyy/MM/dd HH:mm:ss||epoch_millis"},
    "updated": {"type": "date"},
    "shipped": {"type": "date_nanos"},
    "paid": {"type": "boolean"},
    "client_ip": {"type": "ip"},
    "store": {"type": "geo_point"},
    "customer": {"properties": {"name": {"type": "keyword"}, "tier": {"type": "short"}}},
    "lines": {"type": "nested", "properties": {"sku": {"type": "keyword"}, "n": {"type": "integer"}}},
    "tags": {"type": "keyword"},
    "blob": {"type": "binary"},
}}
N = 30
COLORS = ["red", "green", "blue"]
GEO_FORMS = [lambda la, lo: {"lat": la, "lon": lo}, lambda la, lo: f"{la},{lo}", lambda la, lo: [lo, la],
             lambda la, lo: f"POINT ({lo} {la})", lambda la, lo: {"type": "Point", "coordinates": [lo, la]}]


def order_doc(i: int) -> dict:
    doc = {
        "title": f"{COLORS[i % 3]} widget number {i}",
        "sku": f"SKU-{i}",
        "qty": i % 7,
        "price": round(1.25 * i, 2),
        "weight": 0.5,
        "views": 2**64 - 1 - i,
        "ordered_at": (f"2024/01/{1 + i % 28:02d} 10:00:00" if i % 2 else
                       int(dt.datetime(2024, 1, 1 + i % 28, 10, tzinfo=UTC).timestamp() * 1000)),
        "updated": (dt.datetime(2024, 3, 1, tzinfo=UTC) + dt.timedelta(hours=i)).isoformat(),
        "shipped": f"2024-03-01T00:00:00.{i:09d}Z",
        "paid": i % 2 == 0,
        "client_ip": f"10.0.0.{i}",
        "store": GEO_FORMS[i % 5](1.5 + i, 2.5),
        "lines": [{"sku": f"L{i}", "n": 1}, {"sku": f"M{i}", "n": 2}],
        "tags": [COLORS[i % 3]] if i % 2 else COLORS[i % 3],  # a one-element array is its element
        "blob": base64.b64encode(bytes([i])).decode(),
    }
    if i % 3 == 0:
        doc["customer"] = {"name": f"c{i}", "tier": i % 4}
    elif i % 3 == 1:
        doc["customer.name"] = f"c{i}"  # a dotted key is the same field
    if i == 5:
        for k in ("qty", "paid", "title"):
            doc.pop(k)
    return doc


@pytest.fixture(scope="module")
def orders(es_server: EsServer) -> EsServer:
    es_server.load("shop-orders", MAPPING, [order_doc(i) for i in range(N)], ids=[f"o{i}" for i in range(N)])
    return es_server


def connector(url: str, path: str = "shop-orders", action: str = "error", types=None, **params) -> ElasticsearchConnector:
    return ElasticsearchConnector(DatasetSpec(name="orders", path=path, prefix="elasticsearch",
                                              params={"elasticsearch_endpoint": url, **params},
                                              unsupported_type_action=action, column_types=types or {}))


def read(reader: pa.RecordBatchReader) -> pa.Table:
    return reader.read_all()


def test_schema_follows_the_mapping(orders: EsServer) -> None:
    schema = connector(orders.url).schema()
    assert schema.names[0] == "_id"
    types = {f.name: f.type for f in schema}
    assert types["_id"] == pa.string()
    assert types["title"] == pa.string() and types["sku"] == pa.string()
    assert types["qty"] == pa.int32() and types["views"] == pa.uint64()
    assert types["price"] == pa.float64() and types["weight"] == pa.float32()
    assert types["ordered_at"] == pa.timestamp("ms", "UTC") and types["shipped"] == pa.timestamp("ns", "UTC")
    assert types["paid"] == pa.bool_() and types["client_ip"] == pa.string() and types["blob"] == pa.binary()
    assert types["store"] == pa.struct([("lat", pa.float64()), ("lon", pa.float64())])
    assert types["customer"] == pa.struct([("name", pa.string()), ("tier", pa.int16())])
    assert types["lines"] == pa.list_(pa.struct([("n", pa.int32()), ("sku", pa.string())]))
    assert schema.field("title").metadata[b"description"] == b"Product title"


def test_values_in_their_source_forms(orders: EsServer) -> None:
    table = read(connector(orders.url).scan()).sort_by("sku")
    rows = {r["_id"]: r for r in table.to_pylist()}
    assert len(rows) == N
    for i in range(N):
        r = rows[f"o{i}"]
        assert r["store"] == {"lat": 1.5 + i, "lon": 2.5}, f"geo form {i % 5}"
        assert r["ordered_at"] == dt.datetime(2024, 1, 1 + i % 28, 10, tzinfo=UTC)
        assert r["updated"] == dt.datetime(2024, 3, 1, tzinfo=UTC) + dt.timedelta(hours=i)
        assert r["tags"] == COLORS[i % 3]
        assert r["blob"] == bytes([i]) and r["views"] == 2**64 - 1 - i
        assert r["lines"] == [{"n": 1, "sku": f"L{i}"}, {"n": 2, "sku": f"M{i}"}]
        want_customer = ({"name": f"c{i}", "tier": i % 4} if i % 3 == 0 else
                         {"name": f"c{i}", "tier": None} if i % 3 == 1 else None)
        assert r["customer"] == want_customer
    assert rows["o5"]["qty"] is None and rows["o5"]["title"] is None
    shipped = table.filter(pa.compute.equal(table["_id"], "o7"))["shipped"].cast(pa.int64())[0].as_py()
    assert shipped % 10**9 == 7  # nanoseconds kept


def test_selective_filters_are_pushed_down(orders: EsServer, es_proxy: EsProxy) -> None:
    c = connector(es_proxy.url)
    filters = [Filter("sku", "=", "SKU-3"), Filter("qty", ">=", 1)]
    assert c.classify_filters(filters) == [FilterSupport.EXACT, FilterSupport.EXACT]
    es_proxy.clear()
    table = read(c.scan(["_id", "qty"], filters))
    assert table.to_pylist() == [{"_id": "o3", "qty": 3}]
    assert es_proxy.hits_returned() == 1, "the server returned more than the matching document"
    body = es_proxy.searches()[-1].body
    assert body["_source"] == {"includes": ["qty"]}


def test_limit_is_the_request_size(orders: EsServer, es_proxy: EsProxy) -> None:
    es_proxy.clear()
    assert read(connector(es_proxy.url).scan(["sku"], limit=3)).num_rows == 3
    assert es_proxy.hits_returned() == 3 and es_proxy.searches()[-1].body["size"] == 3


def test_pages_through_a_point_in_time_and_closes_it(orders: EsServer, es_proxy: EsProxy) -> None:
    c = connector(es_proxy.url, elasticsearch_page_size="4")
    es_proxy.clear()
    sizes = [b.num_rows for b in c.scan(["sku"])]
    assert sum(sizes) == N and max(sizes) == 4 and len(sizes) == 8  # one batch per page
    assert all("pit" in e.body and "search_after" in e.body for e in es_proxy.searches()[1:])
    assert es_proxy.open_pits() == 0


def test_an_abandoned_reader_closes_its_point_in_time(orders: EsServer, es_proxy: EsProxy) -> None:
    c = connector(es_proxy.url, elasticsearch_page_size="4")
    es_proxy.clear()
    reader = c.scan(["sku"])
    assert reader.read_next_batch().num_rows == 4
    assert es_proxy.open_pits() == 1
    del reader
    gc.collect()
    assert wait_for(lambda: es_proxy.open_pits() == 0, timeout=5)


def test_an_error_mid_scan_closes_the_point_in_time(es_server: EsServer, es_proxy: EsProxy) -> None:
    es_server.load("multi", {"properties": {"tags": {"type": "keyword"}, "n": {"type": "long"}}},
                   [{"tags": "a", "n": 1}, {"tags": "b", "n": 2}, {"tags": ["a", "b"], "n": 3}], ids=["d1", "d2", "d3"])
    c = connector(es_proxy.url, "multi", elasticsearch_page_size="2")
    es_proxy.clear()
    with pytest.raises(ConnectorError, match=r"field 'tags' holds several values in document _id='d3'"):
        read(c.scan(["tags", "n"]))
    assert es_proxy.open_pits() == 0


def test_several_values_follow_the_documented_rule(es_server: EsServer, caplog) -> None:
    es_server.load("multi2", {"properties": {"tags": {"type": "keyword"}}},
                   [{"tags": "a"}, {"tags": ["a", "b"]}, {"tags": []}, {"tags": ["c"]}], ids=["d1", "d2", "d3", "d4"])
    caplog.set_level(logging.WARNING)
    warn = read(connector(es_server.url, "multi2", action="warn").scan()).sort_by("_id").to_pylist()
    assert [r["tags"] for r in warn] == ["a", None, None, "c"]
    assert "holds several values" in caplog.text
    lists = connector(es_server.url, "multi2", types={"tags": pa.list_(pa.string())}).scan()
    assert [r["tags"] for r in read(lists).sort_by("_id").to_pylist()] == [["a"], ["a", "b"], [], ["c"]]


def test_scroll_when_the_server_has_no_point_in_time(orders: EsServer, es_proxy: EsProxy) -> None:
    es_proxy.refuse_pit = True
    c = connector(es_proxy.url, elasticsearch_page_size="7")
    es_proxy.clear()
    assert read(c.scan(["sku"], [Filter("qty", "<", 3)])).num_rows == sum(1 for i in range(N) if i != 5 and i % 7 < 3)
    paths = [e.path for e in es_proxy.snapshot()]
    assert any("scroll=" in p for p in paths) and any(e.method == "DELETE" and "/_search/scroll" in e.path
                                                       for e in es_proxy.snapshot())


def test_count_runs_as__count(orders: EsServer, es_proxy: EsProxy) -> None:
    c = connector(es_proxy.url)
    es_proxy.clear()
    assert c.count([Filter("paid", "=", True)]) == sum(1 for i in range(N) if i != 5 and i % 2 == 0)
    assert c.count([]) == N
    paths = [e.path.split("?")[0] for e in es_proxy.snapshot()]
    assert paths.count("/shop-orders/_count") == 2 and not [p for p in paths if "_search" in p]
    assert es_proxy.hits_returned() == 0


def test_match_is_full_text_on_text_fields(orders: EsServer) -> None:
    c = connector(orders.url)
    f = Filter("title", "match", "red")
    assert c.classify_filters([f, Filter("sku", "match", "x")]) == [FilterSupport.EXACT, FilterSupport.UNSUPPORTED]
    got = sorted(read(c.scan(["_id"], [f]))["_id"].to_pylist())
    assert got == sorted(f"o{i}" for i in range(N) if i % 3 == 0 and i != 5)
    # text fields filter exactly through their keyword multi-field (for strings within ignore_above)
    assert c.classify_filters([Filter("title", "=", "red widget number 3"), Filter("title", "<", "b")]) == \
        [FilterSupport.EXACT, FilterSupport.UNSUPPORTED]
    assert read(c.scan(["_id"], [Filter("title", "=", "red widget number 3")]))["_id"].to_pylist() == ["o3"]


def test_or_and_not_keep_three_valued_logic(orders: EsServer) -> None:
    c = connector(orders.url)
    # NOT (qty > 3 OR paid): rows where both are FALSE; o5 (qty, paid NULL) never passes
    f = Filter("", "not", (Filter("", "or", (Filter("qty", ">", 3), Filter("paid", "=", True))),))
    assert c.classify_filters([f]) == [FilterSupport.EXACT]
    got = sorted(read(c.scan(["_id"], [f]))["_id"].to_pylist())
    assert got == sorted(f"o{i}" for i in range(N) if i != 5 and not (i % 7 > 3 or i % 2 == 0))


def test_ordered_top_n(orders: EsServer) -> None:
    c = connector(orders.url)
    keys = [SortKey("sku", descending=True)]
    assert c.classify_order(keys) and not c.classify_order([SortKey("views")])  # long/unsigned: see README
    got = read(c.scan(["sku"], [], limit=3, order_by=keys))["sku"].to_pylist()
    assert got == sorted((f"SKU-{i}" for i in range(N)), reverse=True)[:3]


def test_time_ranges_push_down(orders: EsServer, es_proxy: EsProxy) -> None:
    c = connector(es_proxy.url)
    since = dt.datetime(2024, 3, 1, 20, tzinfo=UTC)
    assert c.classify_filters([Filter("updated", ">", since)]) == [FilterSupport.EXACT]
    es_proxy.clear()
    got = read(c.scan(["_id"], [Filter("updated", ">", since)]))
    assert got.num_rows == N - 21 and es_proxy.hits_returned() == N - 21
    # microsecond literals against a millisecond field are left to the engine
    assert c.classify_filters([Filter("updated", ">", since + dt.timedelta(microseconds=1))]) == \
        [FilterSupport.UNSUPPORTED]
    # half_float and scaled_float index rounded values: never filtered in ES
    assert c.classify_filters([Filter("weight", "=", 0.5), Filter("price", ">", 1.0)]) == \
        [FilterSupport.UNSUPPORTED] * 2


def test_patterns_merge_mappings_and_conflicts_follow_the_action(es_server: EsServer) -> None:
    es_server.load("logs-a", {"properties": {"msg": {"type": "keyword"}, "code": {"type": "integer"}}},
                   [{"msg": "x", "code": 1}])
    es_server.load("logs-b", {"properties": {"msg": {"type": "keyword"}, "code": {"type": "keyword"},
                                             "extra": {"type": "long"}}}, [{"msg": "y", "code": "E1", "extra": 2}])
    with pytest.raises(UnsupportedType, match=r"column 'code' has different types"):
        connector(es_server.url, "logs-*").schema()
    c = connector(es_server.url, "logs-*", action="string")
    rows = sorted(read(c.scan(["msg", "code", "extra"])).to_pylist(), key=lambda r: r["msg"])
    assert rows == [{"msg": "x", "code": "1", "extra": None}, {"msg": "y", "code": "E1", "extra": 2}]
    assert "code" not in connector(es_server.url, "logs-*", action="ignore").schema().names


def test_credentials_reach_the_server_and_never_an_error(orders: EsServer, es_proxy: EsProxy, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    password, key = "Es-Pa55w0rd-N3ver-Leak", "QXBpS2V5LU4zdmVyLUxlYWs="
    es_proxy.require_authorization = "Basic " + base64.b64encode(f"satchel:{password}".encode()).decode()
    ok = connector(es_proxy.url, elasticsearch_user="satchel", elasticsearch_pass=password)
    assert read(ok.scan(["sku"], limit=2)).num_rows == 2
    wrong = connector(es_proxy.url, elasticsearch_user="satchel", elasticsearch_pass=password + "x")
    with pytest.raises(ConnectorError, match="authentication failed") as err:
        wrong.schema()
    es_proxy.require_authorization = f"ApiKey {key}"
    assert read(connector(es_proxy.url, elasticsearch_api_key=key).scan(["sku"], limit=1)).num_rows == 1
    in_url = connector(es_proxy.url.replace("http://", f"http://satchel:{password}x@"))
    with pytest.raises(ConnectorError) as err2:
        in_url.schema()
    for text in (str(err.value), str(err2.value), caplog.text):
        assert password not in text and key not in text
