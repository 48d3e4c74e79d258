"""The MongoDB connector against a MongoDB-wire server (mongoeco, tests/integration/mongo_server.py):
schema inference over nested orders, push-down proven by counting the documents the server
returns, top-N and count, type conflicts in later documents, changes, secrets, and SQL through
the runtime (live, DuckDB- and Arrow-accelerated, append refresh) and the real sidecar."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import threading
from collections import Counter
from pathlib import Path

import bson
import pyarrow as pa
import pymongo
import pymongo.monitoring
import pytest

import connectors.mongodb.connector as mongodb_module
from connectors.base import DatasetSpec, Filter, FilterSupport, SortKey
from connectors.mongodb.connector import MongoConnector
from engine.errors import ConnectorError
from tests.integration.mongo_server import (DB, LATE_FROM, MONGO_PASSWORD, MongoServer, mongo_server,  # noqa: F401
                                            order_documents)

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc
ORDERS = order_documents()


class DocCounter(pymongo.monitoring.CommandListener):
    """Counts the documents the server returns in find / getMore / aggregate replies."""

    def __init__(self) -> None:
        self.docs = 0
        self.commands: list[dict] = []
        self._lock = threading.Lock()

    def started(self, event) -> None:
        if event.command_name in ("find", "aggregate", "count"):
            with self._lock:
                self.commands.append(dict(event.command))

    def succeeded(self, event) -> None:
        if event.command_name in ("find", "getMore", "aggregate"):
            cursor = event.reply.get("cursor", {})
            batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
            # raw-batch cursors report a batch as one bytes blob of concatenated documents
            n = sum(len(bson.decode_all(b)) if isinstance(b, bytes) else 1 for b in batch)
            with self._lock:
                self.docs += n

    def failed(self, event) -> None:
        pass


@pytest.fixture
def counter() -> DocCounter:
    return DocCounter()


def orders(server: MongoServer, counter: DocCounter | None = None, action: str = "error", name: str = "orders",
           **params) -> MongoConnector:
    conn = MongoConnector(DatasetSpec(name=name, path=params.pop("collection", "orders"), prefix="mongodb",
                                      params={**server.params(), **params}, unsupported_type_action=action))
    if counter is not None:  # the connector's client, with a command listener attached
        conn._client = pymongo.MongoClient(server.uri(), event_listeners=[counter], **conn.settings.client_options)
        conn.schema()  # the inference sample is not what the tests count
        counter.docs, counter.commands = 0, []
    return conn


# -- schema and values ---------------------------------------------------------------------------

def test_schema_is_inferred_from_nested_documents(mongo_server: MongoServer) -> None:
    schema = orders(mongo_server).schema()
    assert schema.field("_id").type == pa.string()  # ObjectId as its hex text
    assert schema.field("total").type == pa.decimal128(38, 2)  # Decimal128
    assert schema.field("placed_at").type == pa.timestamp("us", "UTC")
    assert schema.field("customer").type == pa.struct([
        ("name", pa.string()), ("email", pa.string()), ("tier", pa.int64()),
        ("address", pa.struct([("city", pa.string()), ("country", pa.string())]))])
    assert schema.field("items").type == pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64()),
                                                             ("price", pa.float64())]))
    assert schema.field("tags").type == pa.list_(pa.string())
    assert schema.field("discount").type == pa.float64()  # ints and doubles widen to double
    assert schema.field("note").type == pa.string()
    assert "coupon" not in schema.names  # first seen after the 400-document sample


def test_full_scan_reads_every_document_faithfully(mongo_server: MongoServer) -> None:
    table = orders(mongo_server).scan().read_all()
    assert table.num_rows == len(ORDERS)
    rows = {r["order_no"]: r for r in table.to_pylist()}
    for doc in (ORDERS[0], ORDERS[3], ORDERS[11], ORDERS[2999]):
        row = rows[doc["order_no"]]
        assert row["_id"] == str(doc["_id"])
        assert row["total"] == doc["total"].to_decimal()
        assert row["placed_at"] == doc["placed_at"]
        assert row["customer"] == doc["customer"]
        assert row["items"] == doc["items"]
        assert row["status"] == doc.get("status")  # missing -> NULL
        assert row["note"] == doc.get("note")
        assert row["discount"] == float(doc["discount"])


def test_scan_streams_bounded_batches(mongo_server: MongoServer, monkeypatch) -> None:
    monkeypatch.setattr(mongodb_module, "BATCH_DOCS", 500)
    sizes = [b.num_rows for b in orders(mongo_server).scan(["order_no", "customer"])]
    assert sum(sizes) == len(ORDERS) and len(sizes) >= 6 and max(sizes) <= 500


# -- push-down -------------------------------------------------------------------------------------

def test_selective_filters_and_projection_run_in_mongodb(mongo_server: MongoServer, counter: DocCounter) -> None:
    conn = orders(mongo_server, counter)
    filters = [Filter("status", "=", "paid"), Filter("order_no", "<", 200),
               Filter("", "or", (Filter("note", "is_null"), Filter("discount", ">", 3)))]
    assert conn.classify_filters(filters) == [FilterSupport.EXACT] * 3
    table = conn.scan(["order_no", "customer"], filters).read_all()
    expected = [d for d in ORDERS if d.get("status") == "paid" and d["order_no"] < 200
                and (d.get("note") is None or d["discount"] > 3)]
    assert sorted(table.column("order_no").to_pylist()) == sorted(d["order_no"] for d in expected)
    assert counter.docs == len(expected) < len(ORDERS) / 10  # the server sent only the matches
    find = next(c for c in counter.commands if "find" in c)
    assert find["projection"] == {"order_no": 1, "customer": 1, "_id": 0}


def test_limit_is_pushed(mongo_server: MongoServer, counter: DocCounter) -> None:
    table = orders(mongo_server, counter).scan(["order_no"], [Filter("status", "like", "ship%")], 7).read_all()
    assert table.num_rows == 7 and counter.docs == 7
    assert orders(mongo_server).scan(["order_no"], [], 0).read_all().num_rows == 0


def test_not_and_null_semantics_match_sql(mongo_server: MongoServer) -> None:
    conn = orders(mongo_server)
    cases = {
        # SQL: NULL status never passes <> nor NOT (=)
        Filter("status", "!=", "paid"): lambda d: d.get("status") is not None and d["status"] != "paid",
        Filter("", "not", (Filter("status", "=", "paid"),)): lambda d: d.get("status") not in (None, "paid"),
        Filter("status", "not_in", ("paid", "shipped")): lambda d: d.get("status") not in (None, "paid", "shipped"),
        Filter("note", "is_null"): lambda d: d.get("note") is None,
        Filter("", "not", (Filter("note", "like", "note 1%"),)):
            lambda d: d.get("note") is not None and not d["note"].startswith("note 1"),
        Filter("placed_at", ">=", dt.datetime(2024, 2, 1, tzinfo=UTC)): lambda d: d["placed_at"] >= dt.datetime(2024, 2, 1, tzinfo=UTC),
        Filter("total", "<", decimal.Decimal("100.5")): lambda d: d["total"].to_decimal() < decimal.Decimal("100.5"),
        Filter("_id", "=", str(ORDERS[42]["_id"])): lambda d: d["_id"] == ORDERS[42]["_id"],
    }
    for f, want in cases.items():
        assert conn.classify_filters([f]) == [FilterSupport.EXACT], f
        got = sorted(conn.scan(["order_no"], [f]).read_all().column("order_no").to_pylist())
        assert got == sorted(d["order_no"] for d in ORDERS if want(d)), f
        assert conn.count([f]) == len(got), f


def test_count_runs_count_documents(mongo_server: MongoServer, counter: DocCounter) -> None:
    conn = orders(mongo_server, counter)
    assert conn.count([Filter("status", "is_null")]) == sum(1 for d in ORDERS if "status" not in d)
    assert conn.count() == len(ORDERS)
    assert not any("find" in c for c in counter.commands)  # counted by the server, no documents read
    assert counter.docs <= 2


@pytest.mark.parametrize("descending,nulls_first", [(False, False), (False, True), (True, True), (True, False)])
def test_order_by_limit_is_pushed_with_sql_null_placement(mongo_server: MongoServer, counter: DocCounter,
                                                          descending: bool, nulls_first: bool) -> None:
    conn = orders(mongo_server, counter)
    keys = [SortKey("status", descending, nulls_first), SortKey("order_no", True, False)]
    assert conn.classify_order(keys)
    got = conn.scan(["status", "order_no"], [Filter("order_no", "<", 300)], 60, order_by=keys).read_all().to_pylist()
    rows = [(d.get("status"), d["order_no"]) for d in ORDERS if d["order_no"] < 300]
    present = sorted((r for r in rows if r[0] is not None), key=lambda r: (r[0], -r[1]), reverse=False)
    if descending:
        present = sorted((r for r in rows if r[0] is not None), key=lambda r: (r[0], r[1]), reverse=True)
    nulls = sorted((r for r in rows if r[0] is None), key=lambda r: -r[1])
    want = (nulls + present if nulls_first else present + nulls)[:60]
    assert [(r["status"], r["order_no"]) for r in got] == want
    assert counter.docs == 60


def test_orders_that_cannot_be_reproduced_are_refused(mongo_server: MongoServer) -> None:
    conn = orders(mongo_server)
    assert not conn.classify_order([SortKey("discount")])  # NaN sorts differently
    assert not conn.classify_order([SortKey("customer")])
    assert not orders(mongo_server, action="warn").classify_order([SortKey("status")])


# -- types in later documents ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def drifting(mongo_server: MongoServer) -> MongoServer:
    docs = [{"_id": i, "n": i, "tag": f"t{i}"} for i in range(5)]
    docs += [{"_id": 5, "n": "five", "tag": "t5", "late": 1}, {"_id": 6, "n": None, "tag": "t6"}]
    mongo_server.insert(DB, "drifting", docs)
    mongo_server.insert(DB, "mixed", [{"_id": 1, "v": 1}, {"_id": 2, "v": "two"}, {"_id": 3, "v": {"a": [1]}},
                                      {"_id": 4, "v": dt.datetime(2024, 1, 1, tzinfo=UTC)}])
    return mongo_server


def test_unexpected_type_in_a_later_document_errors_clearly(drifting: MongoServer) -> None:
    conn = orders(drifting, collection="drifting", mongodb_num_docs_to_infer_schema="5")
    assert conn.schema().names == ["_id", "n", "tag"]
    with pytest.raises(ConnectorError, match=r"field 'n' holds a value of type str where the schema .* has int64"):
        conn.scan().read_all()


@pytest.mark.parametrize("action", ["warn", "ignore", "string"])
def test_unexpected_type_reads_null_and_filters_stay_right(drifting: MongoServer, action: str, caplog) -> None:
    conn = orders(drifting, action=action, name=f"drifting_{action}", collection="drifting",
                  mongodb_num_docs_to_infer_schema="5")
    with caplog.at_level(logging.WARNING):
        rows = conn.scan(["_id", "n"]).read_all().to_pylist()
    assert rows[5] == {"_id": 5, "n": None}
    assert "field 'n' holds values of type str" in caplog.text
    # the value read as NULL must not be missed by IS NULL, nor counted by a pushed limit
    assert conn.classify_filters([Filter("n", "is_null"), Filter("n", ">", 1), Filter("n", "!=", 1)]) == \
        [FilterSupport.UNSUPPORTED, FilterSupport.INEXACT, FilterSupport.INEXACT]
    assert not conn.classify_order([SortKey("n")])


def test_string_action_serves_extended_json(drifting: MongoServer) -> None:
    conn = orders(drifting, action="string", collection="mixed")
    assert conn.schema().field("v").type == pa.string()
    values = conn.scan(["v"]).read_all().column("v").to_pylist()
    assert values == ["1", "two", '{"a": [1]}', '{"$date": "2024-01-01T00:00:00Z"}']
    assert conn.classify_filters([Filter("v", "=", "two")]) == [FilterSupport.UNSUPPORTED]  # mixed values


def test_pod_column_types_win(mongo_server: MongoServer) -> None:
    spec = DatasetSpec(name="orders", path="orders", prefix="mongodb", params=mongo_server.params(),
                       column_types={"order_no": pa.int32(), "coupon": pa.string()})
    conn = MongoConnector(spec)
    assert conn.schema().field("order_no").type == pa.int32()
    table = conn.scan(["order_no", "coupon"]).read_all()
    # coupon declared: read although the sample never saw it (its filters are left to the engine)
    assert table.column("coupon").drop_null().to_pylist() == [f"C{i}" for i in range(LATE_FROM, len(ORDERS))]
    assert conn.classify_filters([Filter("coupon", "is_not_null")]) == [FilterSupport.UNSUPPORTED]


# -- changes and secrets ---------------------------------------------------------------------------

def test_changes_need_a_replica_set(mongo_server: MongoServer) -> None:
    conn = orders(mongo_server)
    with pytest.raises(ConnectorError, match="change streams, which need a replica set or a sharded cluster"):
        conn.start_changes()
    with pytest.raises(ConnectorError, match=r"primary_key: \[_id\]"):
        conn.read_changes(["order_no"])
    assert conn.read_changes(["_id"]) is None  # nothing committed yet: the engine loads in full


def test_secrets_never_appear_in_errors_reprs_or_logs(mongo_server: MongoServer, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-Pa55-N3ver-Leak"
    conn = orders(mongo_server, mongodb_connection_string=mongo_server.uri(password=wrong))
    with pytest.raises(ConnectorError) as info:
        conn.schema()
    assert "Authentication failed" in str(info.value)
    for text in (str(info.value), repr(conn.settings), caplog.text):
        assert wrong not in text and MONGO_PASSWORD not in text
    good = orders(mongo_server)
    assert MONGO_PASSWORD not in repr(good.settings)


# -- SQL through the runtime -----------------------------------------------------------------------

POD = """version: v1
kind: Spicepod
name: mongo
datasets:
  - from: mongodb:orders
    name: orders
    params: &mongo
      mongodb_connection_string: ${secrets:MONGO_URI}
      mongodb_db: shop
  - from: mongodb:orders
    name: orders_duck
    params: *mongo
    acceleration: {enabled: true, engine: duckdb}
  - from: mongodb:orders
    name: orders_arrow
    params: *mongo
    acceleration: {enabled: true, engine: arrow}
  - from: mongodb:growing
    name: growing
    params: *mongo
    time_column: at
    acceleration: {enabled: true, engine: duckdb, refresh_mode: append, primary_key: [_id]}
  - from: file:regions.csv
    name: regions
"""


@pytest.fixture(scope="module")
def runtime(mongo_server: MongoServer, tmp_path_factory, monkeypatch_module=None):
    from engine.config import load_pod
    from engine.runtime import Runtime

    start = dt.datetime(2024, 5, 1, tzinfo=UTC)
    mongo_server.insert(DB, "growing", [{"_id": i, "at": start + dt.timedelta(hours=i), "v": i} for i in range(10)])
    pod = tmp_path_factory.mktemp("mongo-pod")
    (pod / "spicepod.yaml").write_text(POD)
    (pod / "regions.csv").write_text("country,region\nPT,Europe\nDE,Europe\nCH,Europe\nJP,Asia\nUS,Americas\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("MONGO_URI", mongo_server.uri())
    rt = Runtime(load_pod(pod / "spicepod.yaml"), data_dir=str(pod / ".satchel"))
    rt.start()
    assert rt.wait_ready(60)
    yield rt
    rt.stop()
    mp.undo()


def sql(rt, query: str) -> list[dict]:
    return rt.query(query).read_all().to_pylist()


@pytest.mark.parametrize("table", ["orders", "orders_duck", "orders_arrow"])
def test_sql_live_and_accelerated(runtime, table: str) -> None:
    paid = sum(1 for d in ORDERS if d.get("status") == "paid")
    assert sql(runtime, f"SELECT count(*) AS n FROM {table} WHERE status = 'paid'") == [{"n": paid}]
    assert sql(runtime, f"SELECT customer.name AS a, customer['address']['city'] AS c FROM {table} "
                        f"WHERE order_no = 7") == [{"a": "Customer 7", "c": ORDERS[7]["customer"]["address"]["city"]}]
    top = sql(runtime, f"SELECT order_no, total FROM {table} WHERE status IS NOT NULL ORDER BY total DESC, order_no LIMIT 3")
    want = sorted((d for d in ORDERS if "status" in d), key=lambda d: (-d["total"].to_decimal(), d["order_no"]))[:3]
    assert [r["order_no"] for r in top] == [d["order_no"] for d in want]
    by_country = sql(runtime, f"SELECT r.region, count(*) AS n FROM {table} o JOIN regions r "
                              f"ON o.customer.address.country = r.country GROUP BY 1 ORDER BY 1")
    want_regions = Counter({"PT": "Europe", "DE": "Europe", "CH": "Europe", "JP": "Asia", "US": "Americas"}[
        d["customer"]["address"]["country"]] for d in ORDERS)
    assert by_country == [{"region": k, "n": v} for k, v in sorted(want_regions.items())]


def test_sql_pushes_into_the_live_collection(runtime) -> None:
    plan = runtime.explain("SELECT order_no FROM orders WHERE status = 'paid' AND NOT (order_no < 10) "
                           "ORDER BY order_no LIMIT 5")
    assert "limit=5" in plan and "order=order_no" in plan, plan
    rows = sql(runtime, "SELECT order_no FROM orders WHERE status = 'paid' AND NOT (order_no < 10) ORDER BY order_no LIMIT 5")
    assert [r["order_no"] for r in rows] == [d["order_no"] for d in ORDERS if d.get("status") == "paid"
                                             and d["order_no"] >= 10][:5]


def test_append_refresh_reads_new_documents(runtime, mongo_server: MongoServer) -> None:
    assert sql(runtime, "SELECT count(*) AS n, max(v) AS m FROM growing") == [{"n": 10, "m": 9}]
    start = dt.datetime(2024, 5, 1, tzinfo=UTC)
    with mongo_server.client() as c:
        c[DB]["growing"].insert_many([{"_id": i, "at": start + dt.timedelta(hours=i), "v": i} for i in range(10, 13)])
    result = runtime.refresh("growing", wait=True)
    assert result["mode"] == "append"
    assert sql(runtime, "SELECT count(*) AS n, max(v) AS m FROM growing") == [{"n": 13, "m": 12}]


# -- the real sidecar ------------------------------------------------------------------------------

def test_sidecar_serves_mongodb_over_http(mongo_server: MongoServer, satchel_server) -> None:
    pod = POD.split("  - from: mongodb:growing")[0]
    server = satchel_server(pod, env={"MONGO_URI": mongo_server.uri()})
    response = server.sql("SELECT customer['name'] AS name, count(*) AS n FROM orders_duck "
                          "WHERE customer.tier = 2 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1")
    assert response.status_code == 200, response.text
    live = server.sql("SELECT count(*) AS n FROM orders WHERE placed_at >= '2024-02-01T00:00:00Z'")
    assert live.status_code == 200, live.text
    assert live.json() == [{"n": sum(1 for d in ORDERS if d["placed_at"] >= dt.datetime(2024, 2, 1, tzinfo=UTC))}]
    history = server.sql("SELECT query FROM runtime.task_history")
    assert MONGO_PASSWORD not in history.text and MONGO_PASSWORD not in server.log()
