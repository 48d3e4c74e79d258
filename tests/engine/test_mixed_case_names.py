"""Datasets and columns named with capitals (CSV headers, pandas Parquet, camelCase documents):
every route answers them, quoted as PostgreSQL wants, with a hint when the quotes are missing.
(sqlglot folded the planner's own column names to lower case: `SELECT *` of such a table failed,
an accelerated one never loaded, and a quoted name was "not found".)"""

from __future__ import annotations

import pytest

from engine.errors import SqlError

CSV = "order_id,Customer,Amount,shipTo\n10,1,250.5,Paris\n11,2,20,Lyon\n12,1,75,Paris\n"
POD = """\
version: v1
kind: Spicepod
name: cases
datasets:
  - from: file:orders.csv
    name: {name}
{acceleration}
views:
  - name: BigOrders
    sql: SELECT "Customer", "Amount" FROM "{name}" WHERE "Amount" > 50
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${{env:ADMIN_KEY}}"]
    principals:
      - name: agent
        keys: ["${{env:AGENT_KEY}}"]
        datasets:
          - name: {name}
            filter: '"shipTo" = ''Paris'''
            columns: {{Amount: hidden}}
"""
ROUTES = {"federated": "", "duckdb": "    acceleration:\n      enabled: true\n      engine: duckdb",
          "arrow": "    acceleration:\n      enabled: true\n      engine: arrow"}


@pytest.fixture(params=[(route, name) for route in ROUTES for name in ("Orders", "orders")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def pod(request, make_runtime):
    route, name = request.param
    rt = make_runtime(POD.format(name=name, acceleration=ROUTES[route]), files={"orders.csv": CSV},
                      env={"ADMIN_KEY": "admin", "AGENT_KEY": "agent"}, start=True)
    assert rt.wait_ready(60), [ds.last_error for ds in rt.datasets.values()]
    return rt, name


def _rows(rt, sql: str, key: str = "admin") -> list[dict]:
    return rt.query(sql, rt.authenticate(key)).read_all().to_pylist()


def test_capitalised_names_answer_on_every_route(pod):
    rt, name = pod
    assert _rows(rt, f'SELECT * FROM "{name}" ORDER BY order_id LIMIT 1') == [
        {"order_id": 10, "Customer": 1, "Amount": 250.5, "shipTo": "Paris"}]
    assert _rows(rt, 'SELECT "Customer", sum("Amount") AS total FROM orders WHERE "shipTo" = \'Paris\' '
                     'GROUP BY "Customer" ORDER BY "Customer"') == [{"Customer": 1, "total": 325.5}]
    assert _rows(rt, 'SELECT o."shipTo", count(*) AS n FROM ORDERS o JOIN orders p ON o."Customer" = p."Customer" '
                     'GROUP BY 1 ORDER BY 1') == [{"shipTo": "Lyon", "n": 1}, {"shipTo": "Paris", "n": 4}]
    assert _rows(rt, 'SELECT * FROM "BigOrders" ORDER BY "Amount"') == [{"Customer": 1, "Amount": 75.0},
                                                                        {"Customer": 1, "Amount": 250.5}]
    assert _rows(rt, "SELECT order_id FROM orders WHERE order_id = ?".replace("?", "11")) == [{"order_id": 11}]
    assert rt.query('SELECT "Amount" FROM orders WHERE "Amount" > ?', rt.authenticate("admin"),
                    params=[100]).read_all().to_pylist() == [{"Amount": 250.5}]


def test_a_policy_filters_and_hides_capitalised_columns(pod):
    rt, _ = pod
    assert _rows(rt, "SELECT * FROM orders ORDER BY order_id", "agent") == [
        {"order_id": 10, "Customer": 1, "shipTo": "Paris"}, {"order_id": 12, "Customer": 1, "shipTo": "Paris"}]
    with pytest.raises(SqlError, match="Amount"):
        _rows(rt, 'SELECT "Amount" FROM orders', "agent")


def test_an_unquoted_capitalised_name_says_how_to_write_it(pod):
    rt, _ = pod
    with pytest.raises(SqlError, match=r'did you mean "shipTo"\? \(a name with capitals is written in double quotes\)'):
        _rows(rt, "SELECT shipTo FROM orders")
    with pytest.raises(SqlError) as plain:
        _rows(rt, "SELECT nothing FROM orders")
    assert "did you mean" not in str(plain.value)


def test_a_misspelt_column_names_the_close_ones_the_caller_may_see(pod):
    rt, _ = pod
    with pytest.raises(SqlError, match=r"did you mean order_id\?"):
        _rows(rt, "SELECT ordr_id FROM orders")
    with pytest.raises(SqlError, match=r'did you mean "shipTo"\?'):
        _rows(rt, "SELECT o.shipto_ FROM orders o")
    with pytest.raises(SqlError) as hidden:  # the agent's policy hides "Amount": never suggested to it
        _rows(rt, "SELECT amount FROM orders", "agent")
    assert "Amount" not in str(hidden.value) and "did you mean" not in str(hidden.value)
