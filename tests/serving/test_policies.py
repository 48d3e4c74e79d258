"""Per-principal policies on a real sidecar (the default pod): a hostile suite that tries to read a
filtered row or a masked value through every SQL construct, over Flight SQL, HTTP and MCP, and the
catalogs, task history, limits and plan cache as each principal sees them."""

from __future__ import annotations

import json

import adbc_driver_flightsql.dbapi as flightsql
import anyio
import httpx
import pyarrow.csv as pacsv
import pytest

from tests.conftest import REPO

ADMIN, EMEA, LIMITED = "k-admin-1", "k-emea-7", "k-limited-3"
POLICIES = """
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${env:ADMIN_KEY}:ro"]
    principals:
      - name: emea_agent
        keys: ["${env:EMEA_KEY}"]
        attributes: {region: Europe}
        datasets:
          - name: customers
            filter: "region = {{principal.region}}"
            columns: {email: hash, name: partial(3), signup_date: hidden}
          - orders
          - order_details
      - name: limited_agent
        keys: ["${env:LIMITED_KEY}"]
        datasets: [regions]
        limits: {max_rows: 2, queries_per_minute: 6}
      - name: keys_agent
        keys: ["${env:KEYS_KEY}"]
        datasets:
          - name: orders
            columns: {order_id: redact}
          - name: customers
            columns: {customer_id: hidden}
"""
KEYS = "k-keys-5"
ENV = {"ADMIN_KEY": ADMIN, "EMEA_KEY": EMEA, "LIMITED_KEY": LIMITED, "KEYS_KEY": KEYS}

CUSTOMERS = pacsv.read_csv(REPO / "data" / "customers.csv").to_pylist()
EUROPE = [c for c in CUSTOMERS if c["region"] == "Europe"]
EMAILS = {c["email"] for c in CUSTOMERS}
NAMES = {c["name"] for c in CUSTOMERS}


def _constructs() -> list[str]:
    """Ways to reach a filtered row or a masked value; each must give neither."""
    out = []
    for col in ("email", "name", "region", "signup_date"):
        out += [s.format(c=col) for s in [
            "SELECT {c} FROM customers",
            "SELECT {c} FROM customers WHERE region <> 'Europe'",
            "SELECT {c} FROM customers ORDER BY {c} LIMIT 20",
            "SELECT {c}, count(*) AS n FROM customers GROUP BY {c} ORDER BY n DESC LIMIT 20",
            "SELECT DISTINCT {c} FROM customers",
            "SELECT min({c}) AS lo, max({c}) AS hi FROM customers",
            "SELECT c.{c} FROM orders o JOIN customers c ON o.customer_id = c.customer_id LIMIT 50",
            "WITH x AS (SELECT * FROM customers) SELECT {c} FROM x",
            "SELECT {c} FROM (SELECT * FROM public.customers) s",
            "SELECT {c} FROM customers UNION ALL SELECT {c} FROM spice.public.customers",
            "SELECT x.v FROM customers c, LATERAL (SELECT c.{c} AS v) x LIMIT 50",
            "SELECT {c}, rank() OVER (ORDER BY {c}) AS r FROM customers LIMIT 50",
            "SELECT CAST({c} AS INT) AS v FROM customers",
            "SELECT (SELECT max({c}) FROM customers) AS v",
            "SELECT string_agg(CAST({c} AS VARCHAR), ',') AS v FROM customers",
        ]]
    out += [
        "SELECT * FROM customers",
        "SELECT count(*) AS n FROM customers",
        "SELECT count(*) AS n FROM customers WHERE region = 'Asia'",
        "SELECT * FROM customers WHERE customer_id IN (SELECT customer_id FROM customers)",
        f"SELECT * FROM customers WHERE email = '{sorted(EMAILS)[0]}'",
        f"SELECT count(*) AS n FROM customers WHERE name = '{sorted(NAMES)[0]}'",
        "SELECT lower(email) AS e, upper(name) AS u FROM customers LIMIT 20",
        "SELECT 1 / 0 AS boom FROM customers WHERE region <> 'Europe'",
        "EXPLAIN SELECT * FROM customers WHERE region = 'Asia'",
        "SELECT * FROM products", "SELECT * FROM regions", "SELECT * FROM order_details LIMIT 5",
        "SELECT * FROM runtime.task_history",
        "SELECT count(*) AS n FROM customers c JOIN customers d ON c.customer_id = d.customer_id",
        "SELECT * FROM customers c FULL JOIN orders o ON o.customer_id = c.customer_id LIMIT 100",
    ]
    return out


CONSTRUCTS = _constructs()


def leaks(text: str, sql: str = "") -> list[str]:
    """Plain e-mails, full names or other regions in a response (other than what the query says)."""
    found = [e for e in EMAILS if e in text] + [n for n in NAMES if len(n) > 6 and n in text]
    found += [r for r in ("North America", "Asia", "Oceania", "South America", "Africa") if r in text]
    said = " ".join(CONSTRUCTS) if "task_history" in sql else sql  # its own history holds its own queries
    return [f for f in found if f not in said]


@pytest.fixture(scope="module")
def server(module_satchel_server, module_demo_pod_dir):
    pod = (module_demo_pod_dir / "spicepod.yaml").read_text() + POLICIES
    policy_dir = module_demo_pod_dir.parent / "policy_pod"
    policy_dir.mkdir(exist_ok=True)
    (policy_dir / "data").exists() or (policy_dir / "data").symlink_to(module_demo_pod_dir / "data")
    srv = module_satchel_server(pod, pod_dir=policy_dir, env=ENV)
    # the admin's own queries (with values in their text) must stay out of the agent's task history
    httpx.post(f"{srv.http_url}/v1/sql", content=f"SELECT * FROM customers WHERE email = '{sorted(EMAILS)[1]}'",
               headers={"X-API-Key": ADMIN}, timeout=60)
    return srv


def http(server, sql: str, key: str = EMEA) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/sql", content=sql, headers={"X-API-Key": key}, timeout=60)


@pytest.mark.parametrize("sql", CONSTRUCTS)
def test_http_never_leaks(server, sql):
    r = http(server, sql)
    assert not leaks(r.text, sql), (sql, leaks(r.text, sql))
    if r.status_code == 200 and "region" in r.text and "EXPLAIN" not in sql:
        assert {row.get("region", "Europe") for row in r.json()} <= {"Europe"}


@pytest.fixture(scope="module")
def flight_cursor(server):
    conn = flightsql.connect(f"grpc://127.0.0.1:{server.flight_port}", autocommit=True,
                             db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {EMEA}"})
    with conn, conn.cursor() as cur:
        yield cur


@pytest.mark.parametrize("sql", CONSTRUCTS)
def test_flight_sql_never_leaks(flight_cursor, sql):
    try:
        flight_cursor.execute(sql)
        text = json.dumps(flight_cursor.fetch_arrow_table().to_pylist(), default=str)
    except Exception as e:  # noqa: BLE001 - the error text is what a client sees
        text = str(e)
    assert not leaks(text, sql), (sql, leaks(text, sql))


def test_mcp_never_leaks(server):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    texts: dict[str, str] = {}

    async def main() -> None:
        import httpx2

        client = httpx2.AsyncClient(headers={"X-API-Key": EMEA}, timeout=60)
        async with streamable_http_client(f"{server.http_url}/v1/mcp", http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                listed = await session.call_tool("list_datasets", {})
                texts["list_datasets"] = listed.content[0].text
                described = await session.call_tool("describe_dataset", {"name": "customers"})
                texts["describe_dataset"] = described.content[0].text
                for sql in CONSTRUCTS:
                    res = await session.call_tool("query", {"sql": sql, "max_rows": 500})
                    texts[sql] = " ".join(getattr(c, "text", "") for c in res.content)

    anyio.run(main)
    bad = {sql: leaks(text, sql) for sql, text in texts.items() if leaks(text, sql)}
    assert not bad
    datasets = {d["name"] for d in json.loads(texts["list_datasets"])["datasets"]}
    assert datasets == {"customers", "orders", "runtime.task_history"}
    columns = {c["name"]: c.get("masked") for c in json.loads(texts["describe_dataset"])["columns"]}
    assert "signup_date" not in columns and columns["email"] == "hash" and columns["name"] == "partial"


def test_filter_and_masks_hold_with_exact_answers(server):
    assert http(server, "SELECT count(*) AS n FROM customers").json() == [{"n": len(EUROPE)}]
    assert http(server, "SELECT count(*) AS n FROM customers WHERE region = 'Asia'").json() == [{"n": 0}]
    rows = http(server, "SELECT customer_id, name, email FROM customers ORDER BY customer_id LIMIT 3").json()
    first = min(EUROPE, key=lambda c: c["customer_id"])
    assert rows[0]["customer_id"] == first["customer_id"] and rows[0]["name"] == "***" + first["name"][-3:]
    assert len(rows[0]["email"]) == 32 and rows[0]["email"] != first["email"]
    again = http(server, "SELECT email FROM customers ORDER BY customer_id LIMIT 1").json()
    assert again[0]["email"] == rows[0]["email"]  # hashed: stable
    # the admin (a key without a principal) sees everything
    assert http(server, "SELECT count(*) AS n FROM customers", ADMIN).json() == [{"n": len(CUSTOMERS)}]


def test_a_view_over_a_table_the_principal_cannot_see_is_refused(server):
    r = http(server, "SELECT * FROM order_details LIMIT 1")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_dataset"
    assert "order_details" in r.json()["error"]["message"] and "products" not in r.text


def test_unknown_and_forbidden_tables_answer_alike(server):
    forbidden, missing = http(server, "SELECT * FROM products"), http(server, "SELECT * FROM no_such")
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.json()["error"]["message"].replace("products", "X") == \
        missing.json()["error"]["message"].replace("no_such", "X")


def test_an_unknown_table_gets_a_close_name_only_among_those_the_principal_sees(server):
    """`customer` -> `did you mean 'customers'?`; `product` names no table for the EMEA agent
    (products is not its to see), so it gets how to list them, as a name close to nothing does."""
    def message(sql: str, key: str = EMEA) -> str:
        r = http(server, sql, key)
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_dataset"
        return r.json()["error"]["message"]

    assert message("SELECT * FROM customer") == "unknown table 'customer'; did you mean 'customers'?"
    assert message("SELECT * FROM product") == "unknown table 'product'; SHOW TABLES lists the tables"
    assert message("SELECT * FROM product", ADMIN).endswith("did you mean 'products'?")
    assert "information_schema.tables" in message("SELECT * FROM pg_catalog.pg_tables")


def test_explain_shows_the_rule_but_not_the_salt(server, tmp_path):
    plan = " ".join(r["plan"] for r in http(server, "EXPLAIN SELECT email FROM customers").json())
    assert "__policy" in plan and "MD5('<salt>'" in plan and "'Europe'" in plan


def test_catalogs_show_the_principals_world(server, flight_cursor):
    names = {d["name"] for d in httpx.get(f"{server.http_url}/v1/datasets", headers={"X-API-Key": EMEA}).json()}
    assert names == {"customers", "orders"}  # order_details reads products, which it may not see
    objects = flight_cursor.connection.adbc_get_objects(depth="columns").read_all().to_pylist()
    tables = {t["table_name"]: [c["column_name"] for c in t["table_columns"]]
              for cat in objects for s in cat["catalog_db_schemas"] for t in s["db_schema_tables"]}
    assert "products" not in tables and "signup_date" not in tables["customers"]
    status = httpx.get(f"{server.http_url}/v1/status", headers={"X-API-Key": EMEA}).json()
    assert {d["name"] for d in status["datasets"]} == {"customers", "orders"}
    r = httpx.post(f"{server.http_url}/v1/datasets/products/acceleration/refresh", headers={"X-API-Key": EMEA})
    assert r.status_code == 404


def test_keys_are_shown_only_over_columns_seen_unmasked(server):
    """A model told a column is a key relies on it being unique: a redacted key is not, and the
    visible part of a key with a hidden column is no key at all."""
    def keys(api_key: str) -> dict[str, tuple[list, list]]:
        listed = httpx.get(f"{server.http_url}/v1/datasets", headers={"X-API-Key": api_key}).json()
        return {d["name"]: (d["primary_key"], d["unique_keys"]) for d in listed}

    admin, emea, masked = keys(ADMIN), keys(EMEA), keys(KEYS)
    assert admin["orders"] == emea["orders"] == (["order_id"], [["order_id"]])
    assert admin["customers"][0] == emea["customers"][0] == ["customer_id"]  # emea's masks are on other columns
    assert masked["orders"] == ([], []) and masked["customers"] == ([], [])


def test_task_history_shows_only_the_principals_rows(server):
    rows = http(server, "SELECT DISTINCT principal FROM runtime.task_history").json()
    assert rows == [{"principal": "emea_agent"}]
    assert sorted(EMAILS)[1] not in http(server, "SELECT * FROM runtime.task_history").text  # the admin's query
    admin = http(server, "SELECT DISTINCT principal FROM runtime.task_history", ADMIN).json()
    assert {"emea_agent", "api_key_1"} <= {r["principal"] for r in admin}


def test_the_plan_cache_never_serves_one_principals_plan_to_another(server):
    sql = "SELECT count(*) AS n FROM customers"
    for _ in range(2):
        assert http(server, sql, ADMIN).json() == [{"n": len(CUSTOMERS)}]
        assert http(server, sql, EMEA).json() == [{"n": len(EUROPE)}]


def test_limits_rows_and_rate(server):
    rows = http(server, "SELECT * FROM regions", LIMITED).json()
    assert len(rows) == 2  # max_rows: 2
    statuses = [http(server, "SELECT 1 AS one", LIMITED).status_code for _ in range(10)]
    assert 429 in statuses and statuses.count(200) <= 6
    r = http(server, "SELECT 1 AS one", LIMITED)
    assert r.status_code == 429 and "queries per minute" in r.json()["error"]["message"]
    assert r.json()["error"]["code"] == "overloaded"
    refused = http(server, "SELECT principal, error_code FROM runtime.task_history WHERE error_code = 'overloaded'",
                   ADMIN).json()
    assert refused and all(row["principal"] == "limited_agent" for row in refused)


def test_prepared_statement_parameters_cannot_widen_the_filter(flight_cursor):
    flight_cursor.execute("SELECT count(*) AS n FROM customers WHERE region = ?", ("Asia",))
    assert flight_cursor.fetchall() == [(0,)]
    flight_cursor.execute("SELECT count(*) AS n FROM customers WHERE region <> ? OR 1 = 1", ("Europe",))
    assert flight_cursor.fetchall() == [(len(EUROPE),)]

