"""information_schema, SHOW TABLES, SHOW COLUMNS and DESCRIBE: the catalog an agent writing SQL
reads first, as its principal sees it (its datasets, views and columns only), from the same
table list as Flight SQL's GetTables and /v1/datasets."""

from __future__ import annotations

import pytest

from engine.errors import ReadOnlyViolation, SqlError, UnknownDataset

POD = """\
version: v1
kind: Spicepod
name: catalog
datasets:
  - from: file:customers.csv
    name: customers
    description: Registered customers, one row each.
    columns:
      - name: email
        description: Contact address.
    acceleration:
      enabled: true
      engine: duckdb
      primary_key: customer_id
  - from: file:orders.csv
    name: Orders
    description: Order lines.
views:
  - name: big_orders
    description: Orders over 100.
    sql: SELECT * FROM "Orders" WHERE amount > 100
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${env:ADMIN_KEY}"]
    principals:
      - name: agent
        keys: ["${env:AGENT_KEY}"]
        datasets:
          - name: customers
            columns: {email: hash, phone: hidden}
"""
FILES = {"customers.csv": "customer_id,name,email,phone\n1,Ada,ada@example.com,555\n2,Bo,bo@example.com,556\n",
         "orders.csv": "order_id,customer_id,amount\n10,1,250.5\n11,2,20\n"}
ENV = {"ADMIN_KEY": "admin-key", "AGENT_KEY": "agent-key"}


@pytest.fixture
def runtime(make_runtime):
    rt = make_runtime(POD, files=FILES, env=ENV, start=True)
    assert rt.wait_ready(60)
    return rt


def _rows(rt, sql: str, key: str = "admin-key") -> list[dict]:
    return rt.query(sql, rt.authenticate(key)).read_all().to_pylist()


def test_show_tables_lists_what_a_query_may_name_with_descriptions(runtime):
    rows = _rows(runtime, "SHOW TABLES")
    listed = {(r["table_schema"], r["table_name"]): (r["table_type"], r["description"]) for r in rows}
    assert listed[("public", "customers")] == ("BASE TABLE", "Registered customers, one row each.")
    assert listed[("public", "Orders")] == ("BASE TABLE", "Order lines.")
    assert listed[("public", "big_orders")] == ("VIEW", "Orders over 100.")
    assert listed[("runtime", "task_history")][0] == "BASE TABLE"
    assert {n for s, n in listed if s == "information_schema"} == {"tables", "columns", "schemata"}
    assert all(r["table_catalog"] == "spice" for r in rows)
    assert [(r["table_schema"], r["table_name"]) for r in rows] == sorted(listed)
    # each name listed is one a query can read, as written
    for schema, name in listed:
        runtime.query(f'SELECT * FROM "{schema}"."{name}" LIMIT 0', runtime.authenticate("admin-key")).read_all()


def test_describe_and_show_columns_give_types_in_postgresql_spelling_and_descriptions(runtime):
    described = _rows(runtime, "DESCRIBE customers")
    assert [(r["column_name"], r["data_type"], r["is_nullable"]) for r in described] == [
        ("customer_id", "bigint", "YES"), ("name", "varchar", "YES"), ("email", "varchar", "YES"),
        ("phone", "bigint", "YES")]
    assert described[2]["description"] == "Contact address." and described[0]["description"] is None
    assert _rows(runtime, "desc table public.customers;") == described
    assert _rows(runtime, 'DESCRIBE "ORDERS"') == _rows(runtime, "DESCRIBE orders")  # names resolve as in queries
    shown = _rows(runtime, "SHOW COLUMNS FROM spice.public.big_orders")
    assert [r["column_name"] for r in shown] == ["order_id", "customer_id", "amount"]
    assert {r["table_name"] for r in shown} == {"big_orders"}
    assert [r["column_name"] for r in _rows(runtime, "SHOW COLUMNS IN runtime.task_history")][:2] == ["task_id", "task"]


def test_information_schema_answers_any_query_and_joins_data(runtime):
    counts = _rows(runtime, "SELECT table_name, count(*) AS n FROM information_schema.columns "
                            "WHERE table_schema = 'public' GROUP BY 1 ORDER BY 1")
    assert counts == [{"table_name": "Orders", "n": 3}, {"table_name": "big_orders", "n": 3},
                      {"table_name": "customers", "n": 4}]
    positions = _rows(runtime, "SELECT column_name, ordinal_position, column_default FROM information_schema.columns "
                               "WHERE table_name = 'customers' ORDER BY ordinal_position DESC LIMIT 1")
    assert positions == [{"column_name": "phone", "ordinal_position": 4, "column_default": None}]
    assert _rows(runtime, "SELECT schema_name FROM information_schema.schemata ORDER BY 1") == [
        {"schema_name": "information_schema"}, {"schema_name": "public"}, {"schema_name": "runtime"}]
    joined = _rows(runtime, "SELECT c.name, k.data_type FROM customers c JOIN information_schema.columns k "
                            "ON k.column_name = 'name' AND k.table_name = 'customers' ORDER BY c.name")
    assert joined == [{"name": "Ada", "data_type": "varchar"}, {"name": "Bo", "data_type": "varchar"}]
    assert _rows(runtime, "SELECT column_name FROM information_schema.columns WHERE table_name = 'columns' "
                          "AND table_schema = 'information_schema' ORDER BY ordinal_position")[0] == {
        "column_name": "table_catalog"}


def test_a_principal_sees_only_its_tables_and_columns(runtime):
    tables = {(r["table_schema"], r["table_name"]) for r in _rows(runtime, "SHOW TABLES", "agent-key")}
    assert ("public", "customers") in tables and ("public", "Orders") not in tables
    assert ("public", "big_orders") not in tables  # a view over a table it may not read
    described = {r["column_name"]: r["data_type"] for r in _rows(runtime, "DESCRIBE customers", "agent-key")}
    assert described == {"customer_id": "bigint", "name": "varchar", "email": "varchar"}  # phone hidden; email hashed
    for hidden in ("DESCRIBE orders", "DESCRIBE big_orders", "SHOW COLUMNS FROM nope"):
        with pytest.raises(UnknownDataset, match="unknown table"):
            _rows(runtime, hidden, "agent-key")
    assert _rows(runtime, "SELECT count(*) AS n FROM information_schema.columns WHERE table_name IN "
                          "('Orders', 'big_orders') OR column_name = 'phone'", "agent-key") == [{"n": 0}]
    # the same as the catalog Flight SQL and /v1/datasets give this principal
    expected = {(t.schema, t.name) for t in runtime.tables(runtime.authenticate("agent-key"))}
    assert tables - {t for t in tables if t[0] == "information_schema"} == expected


def test_other_show_statements_and_bad_names_are_clear_errors(runtime):
    for sql in ("SHOW search_path", "SHOW ALL", "SHOW TABLES FROM public", "DESCRIBE", "SHOW COLUMNS FROM"):
        with pytest.raises(ReadOnlyViolation, match="SHOW TABLES, SHOW COLUMNS FROM <table> and DESCRIBE <table> are"):
            _rows(runtime, sql)
    for sql in ("DESCRIBE SELECT 1", "DESCRIBE orders x", "SHOW COLUMNS FROM orders WHERE 1 = 1"):
        with pytest.raises(SqlError, match="take a table name"):
            _rows(runtime, sql)
    with pytest.raises(UnknownDataset, match="unknown catalog 'other'"):
        _rows(runtime, "DESCRIBE other.public.customers")
    with pytest.raises(UnknownDataset, match="unknown table 'information_schema.views'"):
        _rows(runtime, "SELECT * FROM information_schema.views")


def test_the_catalog_follows_the_pod_and_is_never_a_cached_answer(make_runtime):
    pod = POD.replace("  - from: file:orders.csv\n    name: Orders\n    description: Order lines.\n", "") \
        .replace('    sql: SELECT * FROM "Orders" WHERE amount > 100', "    sql: SELECT * FROM customers") \
        + "  results_cache:\n    enabled: true\n"
    rt = make_runtime(pod.replace("runtime:\n  auth:", "runtime:\n  auth:", 1), files=FILES, env=ENV, start=True)
    assert rt.wait_ready(60)
    admin, agent = rt.authenticate("admin-key"), rt.authenticate("agent-key")
    for _ in range(2):  # the same text for two principals, twice: each gets its own catalog every time
        assert {r["table_name"] for r in rt.query("SHOW TABLES", admin).read_all().to_pylist()} >= {"customers", "big_orders"}
        assert "big_orders" not in {r["table_name"] for r in rt.query("SHOW TABLES", agent).read_all().to_pylist()}
    history = rt.query("SELECT served_by FROM runtime.task_history WHERE query_text = 'SHOW TABLES'", admin)
    assert set(history.read_all().column("served_by").to_pylist()) == {"runtime"}
