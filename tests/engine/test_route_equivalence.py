"""The planner's routing is an optimisation, never a change of meaning: the same queries over the
same data give the same columns, types and rows whether the tables are DuckDB-accelerated (the
whole query runs in DuckDB), Arrow-accelerated (DataFusion), read live from the files (DataFusion
over pushed-down file scans) or a mix of the three.

Types must match exactly except integer widths and decimal precisions (same family; DuckDB and
DataFusion widen differently and both are exact)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from engine.config import load_pod
from engine.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]

QUERIES = {
    "int_division": "SELECT order_id, quantity / 2 AS half, quantity % 3 AS m, (quantity - 3) / 2 AS neg_div, "
                    "(quantity - 3) % 2 AS neg_mod, 7 / quantity AS by_column, -7 % (quantity + 1) AS mod_column, "
                    "amount FROM {o} WHERE order_id < 100040 ORDER BY order_id",
    "group_by_aggregates": "SELECT status, count(*) AS n, sum(amount) AS total, avg(quantity) AS avg_q, "
                           "min(ordered_at) AS first_at, max(ordered_at) AS last_at, sum(quantity) AS units "
                           "FROM {o} GROUP BY status ORDER BY status",
    "nulls_asc_default": "SELECT order_id, shipped_at FROM {o} ORDER BY shipped_at, order_id LIMIT 20 OFFSET 5115",
    "nulls_desc_default": "SELECT order_id, shipped_at FROM {o} ORDER BY shipped_at DESC, order_id LIMIT 20",
    "nulls_first_explicit": "SELECT order_id, shipped_at FROM {o} ORDER BY shipped_at ASC NULLS FIRST, order_id DESC LIMIT 15",
    "nulls_desc_last": "SELECT order_id, shipped_at FROM {o} ORDER BY shipped_at DESC NULLS LAST, order_id LIMIT 15",
    "like": "SELECT customer_id, name, email FROM {c} WHERE email LIKE '%knuth%' AND name NOT LIKE 'A%' ORDER BY customer_id",
    # backslash escapes (PostgreSQL's default) in one pattern, none in the other
    "like_escapes": "SELECT customer_id, email FROM {c} WHERE email LIKE '%@%\\.%' AND email NOT LIKE '%\\%%' "
                    "AND name NOT ILIKE '%zz%' ORDER BY customer_id",
    "in_list": "SELECT order_id, status FROM {o} WHERE status IN ('returned', 'cancelled') "
               "AND customer_id IN (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144) ORDER BY order_id",
    "between": "SELECT order_id, amount FROM {o} WHERE amount BETWEEN 100 AND 101.5 ORDER BY order_id",
    "case": "SELECT CASE WHEN amount >= 500 THEN 'large' WHEN amount >= 100 THEN 'medium' ELSE 'small' END AS size, "
            "count(*) AS n FROM {o} GROUP BY 1 ORDER BY 1",
    "date_compare": "SELECT count(*) AS n, min(signup_date) AS first_day FROM {c} "
                    "WHERE signup_date >= DATE '2023-01-01' AND signup_date < '2024-01-01'",
    "timestamp_compare": "SELECT count(*) AS n FROM {o} WHERE ordered_at >= TIMESTAMP '2024-06-01 00:00:00' "
                         "AND ordered_at < TIMESTAMPTZ '2024-07-01 00:00:00+00'",
    "timestamp_string_compare": "SELECT order_id FROM {o} WHERE ordered_at > '2024-12-30 12:00:00' ORDER BY order_id",
    "count_distinct": "SELECT count(DISTINCT customer_id) AS customers, count(DISTINCT product_id) AS products, "
                      "count(shipped_at) AS shipped FROM {o}",
    "in_subquery": "SELECT customer_id, name FROM {c} WHERE customer_id IN "
                   "(SELECT customer_id FROM {o} WHERE amount > 1500) ORDER BY customer_id",
    "scalar_subquery": "SELECT c.customer_id, (SELECT count(*) FROM {o} o WHERE o.customer_id = c.customer_id) AS n "
                       "FROM {c} c WHERE c.customer_id <= 20 ORDER BY c.customer_id",
    "cte": "WITH big AS (SELECT customer_id, sum(amount) AS total FROM {o} GROUP BY customer_id) "
           "SELECT c.region, count(*) AS n, max(b.total) AS top FROM big b JOIN {c} c ON c.customer_id = b.customer_id "
           "GROUP BY c.region ORDER BY c.region",
    "union": "SELECT 'customer' AS kind, customer_id AS id FROM {c} WHERE customer_id < 4 UNION "
             "SELECT 'product', product_id FROM {p} WHERE product_id < 4 ORDER BY kind, id",
    "union_all": "SELECT status FROM {o} WHERE order_id < 100005 UNION ALL SELECT status FROM {o} "
                 "WHERE order_id < 100003 ORDER BY status",
    "limit_offset": "SELECT order_id FROM {o} ORDER BY order_id LIMIT 10 OFFSET 20",
    "window_running": "SELECT order_id, customer_id, amount, "
                      "row_number() OVER (PARTITION BY customer_id ORDER BY ordered_at, order_id) AS rn, "
                      "sum(amount) OVER (PARTITION BY customer_id ORDER BY ordered_at, order_id) AS running "
                      "FROM {o} WHERE customer_id <= 5 ORDER BY customer_id, rn",
    "window_rank_lag": "SELECT product_id, category, unit_price, "
                       "rank() OVER (PARTITION BY category ORDER BY unit_price DESC) AS r, "
                       "lag(unit_price) OVER (PARTITION BY category ORDER BY unit_price DESC, product_id) AS prev "
                       "FROM {p} ORDER BY category, r, product_id",
    "three_way_join": "SELECT p.category, c.segment, count(*) AS n, sum(o.amount) AS revenue FROM {o} o "
                      "JOIN {c} c ON c.customer_id = o.customer_id JOIN {p} p ON p.product_id = o.product_id "
                      "GROUP BY p.category, c.segment ORDER BY p.category, c.segment",
    "left_join": "SELECT c.customer_id, count(o.order_id) AS n FROM {c} c LEFT JOIN {o} o "
                 "ON o.customer_id = c.customer_id AND o.status = 'returned' WHERE c.customer_id <= 30 "
                 "GROUP BY c.customer_id ORDER BY c.customer_id",
    "having": "SELECT customer_id, count(*) AS n FROM {o} GROUP BY customer_id HAVING count(*) >= 10 "
              "ORDER BY n DESC, customer_id",
    "arithmetic": "SELECT order_id, amount * 2 AS dbl, round(amount / 3, 2) AS third, quantity * 1.0 / 4 AS qf, "
                  "-quantity AS neg, abs(quantity - 3) AS a FROM {o} WHERE order_id < 100010 ORDER BY order_id",
    "strings": "SELECT upper(name) AS u, lower(email) AS l, length(name) AS len, substring(name, 1, 3) AS s3, "
               "name || '!' AS bang, coalesce(NULL, country) AS cc FROM {c} WHERE customer_id < 10 ORDER BY customer_id",
    "date_trunc": "SELECT date_trunc('month', ordered_at) AS month, count(*) AS n FROM {o} GROUP BY 1 ORDER BY 1",
    "extract": "SELECT extract(year FROM signup_date) AS y, count(*) AS n FROM {c} GROUP BY 1 ORDER BY 1",
    "booleans": "SELECT in_stock, count(*) AS n, min(unit_price) AS cheapest FROM {p} GROUP BY in_stock ORDER BY in_stock",
    "is_null_not_in": "SELECT count(*) AS n FROM {o} WHERE shipped_at IS NULL AND status NOT IN ('processing')",
    "unnamed_columns": "SELECT count(*), sum(quantity), max(amount), 1 + 1 FROM {o}",
    "distinct": "SELECT DISTINCT status FROM {o} ORDER BY status",
    "not_exists": "SELECT p.product_id FROM {p} p WHERE NOT EXISTS (SELECT 1 FROM {o} o "
                  "WHERE o.product_id = p.product_id AND o.quantity > 4) ORDER BY 1",
    "avg_int": "SELECT avg(quantity) AS a, sum(quantity) AS s, count(quantity) AS c, min(quantity) AS mn FROM {o}",
    "float_agg": "SELECT category, sum(unit_price) AS s, avg(unit_price) AS a, stddev(unit_price) AS sd "
                 "FROM {p} GROUP BY category ORDER BY category",
    "select_star": "SELECT * FROM {o} ORDER BY order_id LIMIT 5",
    "coalesce_nullif": "SELECT order_id, coalesce(shipped_at, ordered_at) AS t, nullif(status, 'delivered') AS s "
                       "FROM {o} WHERE order_id < 100012 ORDER BY order_id",
    "casts": "SELECT CAST(amount AS INTEGER) AS ai, CAST(quantity AS VARCHAR) AS qs, CAST(ordered_at AS DATE) AS d, "
             "amount::float AS af, CAST(unit_price * 1.5 AS BIGINT) AS rounded FROM {o} WHERE order_id < 100030 "
             "ORDER BY order_id",
    "string_order": "SELECT name FROM {c} ORDER BY name DESC, customer_id LIMIT 10",
    # DataFusion wrote ISO 8601 (`2024-01-06T10:52:00Z`) where DuckDB and PostgreSQL write `2024-01-06 10:52:00+00`
    "timestamps_as_text": "SELECT order_id, CAST(ordered_at AS TEXT) AS t, shipped_at::varchar AS s, "
                          "CAST(ordered_at + interval '0.12 seconds' AS TEXT) AS f FROM {o} ORDER BY order_id LIMIT 20",
    # PostgreSQL's spelling of round(double, n) casts to numeric first: a DECIMAL on DataFusion only
    "round_doubles": "SELECT status, round(avg(amount), 2) AS a, round(stddev(amount), 1) AS s FROM {o} "
                     "GROUP BY status ORDER BY status",
    "postgres_aggregates_and_sizes": "SELECT every(unit_price > 0) AS e, bool_or(in_stock) AS o, "
                                     "sum(cardinality(tags)) AS tags, sum(octet_length(name)) AS bytes FROM {p}",
    "format_and_epochs": "SELECT format('%s <%s> %s%%', name, email, customer_id) AS f, "
                         "to_timestamp(extract(epoch FROM signup_date)) AS t FROM {c} ORDER BY customer_id LIMIT 5",
    # PostgreSQL forms one engine lacked: FETCH FIRST (DataFusion), LIKE ANY/ALL (both), timestamptz::time (DuckDB)
    "between_symmetric": "SELECT order_id FROM {o} WHERE customer_id BETWEEN SYMMETRIC 10 AND 5 "
                         "AND quantity NOT BETWEEN SYMMETRIC 4 AND 2 ORDER BY order_id LIMIT 10",
    # inside an aggregate too (sqlglot's transform left what was below a rewritten node alone)
    "inside_aggregates": "SELECT sum(CASE WHEN email LIKE '%\\_%' THEN 1 ELSE 0 END) AS underscores, "
                         "sum(quantity / 2) AS halves, sum(length(format('%s-%s', name, customer_id))) AS chars "
                         "FROM {c} JOIN {o} USING (customer_id)",
    "fetch_first": "SELECT order_id FROM {o} ORDER BY order_id OFFSET 3 ROWS FETCH FIRST 4 ROWS ONLY",
    "like_any": "SELECT customer_id, name FROM {c} WHERE name LIKE ANY (ARRAY['%Ada%', 'Alan%', 'B%']) "
                "AND email NOT ILIKE ALL (ARRAY['%zz%', '%qq%']) ORDER BY customer_id LIMIT 10",
    "time_of_day": "SELECT order_id, CAST(ordered_at AS TIME) AS t FROM {o} ORDER BY order_id LIMIT 5",
    # round(x, -1) on DataFusion came back a hundred times too small (a typed -1 hid the scale)
    "floor_of_quotient": "SELECT floor(amount / 100) * 100 AS bucket, ceil(amount / 7) AS c, count(*) AS n FROM {o} "
                         "GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 10",
    "round_to_tens": "SELECT order_id, round(amount, -1) AS tens, round(amount, -2) AS hundreds FROM {o} "
                     "ORDER BY order_id LIMIT 10",
    "percentiles": "SELECT status, percentile_disc(0.5) WITHIN GROUP (ORDER BY amount) AS d, "
                   "percentile_disc(0.9) WITHIN GROUP (ORDER BY shipped_at DESC) AS late, "
                   "percentile_disc(0.25) WITHIN GROUP (ORDER BY quantity) FILTER (WHERE amount > 100) AS q, "
                   "percentile_cont(0.9) WITHIN GROUP (ORDER BY amount) AS c, "
                   "percentile_cont(0.5) WITHIN GROUP (ORDER BY quantity) AS cq FROM {o} GROUP BY status ORDER BY status",
    "width_bucket": "SELECT width_bucket(amount, 0, 1000, 10) AS b, width_bucket(quantity, 5, 1, 4) AS r, "
                    "width_bucket(amount::double precision, 0.5, 900.25, 7) AS f, count(*) AS n "
                    "FROM {o} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    "at_time_zone": "SELECT order_id, ordered_at AT TIME ZONE 'America/New_York' AS ny, "
                    "(ordered_at AT TIME ZONE 'Asia/Kolkata') AT TIME ZONE 'Europe/Paris' AS back, "
                    "date_trunc('day', ordered_at AT TIME ZONE 'Pacific/Auckland') AS nz_day FROM {o} ORDER BY order_id LIMIT 30",
    "regex_substring": "SELECT customer_id, substring(email FROM '@(.*)$') AS domain, substring(email, '[0-9]+') AS digits, "
                       "substring(name FROM 'zzz') AS none FROM {c} ORDER BY customer_id LIMIT 30",
    "grouping_sets": "SELECT status, quantity, count(*) AS n, grouping(status, quantity) AS g FROM {o} "
                     "GROUP BY CUBE (status, quantity) ORDER BY 1 NULLS LAST, 2 NULLS LAST",
    "time_literals": "SELECT count(*) FILTER (WHERE ordered_at >= '2024-06-01 10:00') AS minutes, "
                     "count(*) FILTER (WHERE ordered_at < TIMESTAMP '2024-06-30T23:59') AS iso, "
                     "count(*) FILTER (WHERE ordered_at BETWEEN '2024/03/01' AND '2024-03-31 23:59:59.5') AS slashes, "
                     "count(*) FILTER (WHERE ordered_at > '2024-06-01 10:00:00Z') AS zulu, "
                     "count(*) FILTER (WHERE '2024-06-01 10:00' <= ordered_at) AS text_first, "
                     "count(*) FILTER (WHERE ordered_at IN ('2024-01-06 10:52', '2024-07-03 06:44:00+00')) AS listed, "
                     "CAST('2024-06-01 10:00' AS TIMESTAMP WITH TIME ZONE) AS tz, '2024-06-01 12:00+02:00'::timestamptz AS shifted, "
                     "min(ordered_at::timestamp::timestamptz) AS round_trip, max(ordered_at::date::timestamptz) AS midnight, "
                     "TIMESTAMP '2024-06-01 10:00+02' AS zone_ignored FROM {o}",
    "durations": "SELECT order_id, shipped_at - ordered_at AS took, ordered_at - shipped_at AS back, "
                 "date_trunc('day', shipped_at) - date_trunc('day', ordered_at) AS days, "
                 "shipped_at - ordered_at > INTERVAL '3 days' AS slow FROM {o} ORDER BY order_id LIMIT 40",
    "duration_filters": "SELECT count(*) FILTER (WHERE shipped_at - ordered_at > INTERVAL '3 days') AS slow, "
                        "count(*) FILTER (WHERE shipped_at - ordered_at BETWEEN INTERVAL '1 day' AND INTERVAL '2 days 12 hours') AS mid, "
                        "count(*) FILTER (WHERE INTERVAL '36 hours' >= shipped_at - ordered_at) AS fast, "
                        "count(*) FILTER (WHERE shipped_at - ordered_at < INTERVAL '1 month') AS within_month, "
                        "max(shipped_at - ordered_at) AS longest, min(shipped_at - ordered_at) AS shortest FROM {o}",
    "bare_numeric": "SELECT order_id, CAST(amount AS DECIMAL) AS a, quantity::numeric AS q, "
                    "(amount * 1.5)::float8::numeric AS f, CAST(amount / 7 AS NUMERIC) AS d FROM {o} ORDER BY order_id LIMIT 20",
    "interval_fields": "SELECT order_id, date_part('hour', shipped_at - ordered_at) AS h, "
                       "extract(day FROM shipped_at - ordered_at) AS d, extract(epoch FROM shipped_at - ordered_at) AS e, "
                       "extract(minute FROM ordered_at - shipped_at) AS m FROM {o} WHERE shipped_at IS NOT NULL "
                       "ORDER BY order_id LIMIT 20",
    "aggregates_of_casts": "SELECT status, min(quantity::int) AS a, min(quantity::bigint) AS b, sum(amount) AS s, "
                           "sum(amount::float8) AS f, sum(amount::numeric(20,3)) AS n, min(ordered_at::date) AS d, "
                           "min(ordered_at::timestamp) AS t, count(DISTINCT quantity::text) AS c FROM {o} "
                           "GROUP BY status ORDER BY status",
    "integer_arithmetic": "SELECT order_id, quantity * 30000 AS x, quantity + 1 AS y, (quantity + 1) * 2 - quantity AS w, "
                          "customer_id * 2 AS c, quantity * quantity AS q FROM {o} ORDER BY order_id LIMIT 20",
    "averages": "SELECT status, avg(CASE WHEN quantity > 2 THEN 1.0 ELSE 0 END) AS big_share, avg(amount) AS a, "
                "avg(quantity) AS q, avg(amount::float8) AS f FROM {o} GROUP BY status ORDER BY status",
    "quantified": "SELECT order_id, quantity > ANY (SELECT NULLIF(quantity, 1) FROM {o} WHERE quantity < 3) AS gt_any, "
                  "quantity < ALL (SELECT NULLIF(quantity, 5) FROM {o} WHERE quantity > 3) AS lt_all, "
                  "amount >= ALL (SELECT i.amount FROM {o} i WHERE i.customer_id = {o}.customer_id) AS top, "
                  "quantity >= ALL (SELECT quantity FROM {o} WHERE status = 'none') AS vacuous "
                  "FROM {o} ORDER BY order_id LIMIT 40",
    "quantified_filters": "SELECT status, count(*) AS n FROM {o} WHERE quantity = ANY (SELECT quantity FROM {o} WHERE quantity > 3) "
                          "OR quantity <> ALL (SELECT quantity FROM {o} WHERE quantity > 1) "
                          "AND amount > ALL (SELECT amount FROM {o} WHERE status = 'cancelled' AND quantity = 1) "
                          "GROUP BY status ORDER BY status",
    "byte_order_collation": "SELECT name FROM {c} WHERE name COLLATE \"C\" > 'T' ORDER BY name COLLATE \"C\", customer_id LIMIT 20",
    "lists": "SELECT p.category, array_agg(DISTINCT p.name ORDER BY p.name) AS names, "
             "array_agg(DISTINCT o.quantity ORDER BY o.quantity) AS quantities "
             "FROM {p} p JOIN {o} o ON o.product_id = p.product_id GROUP BY p.category ORDER BY p.category",
    "lateral_unnest": "SELECT t.tag, count(*) AS n, count(DISTINCT p.product_id) AS products FROM {p} p "
                      "CROSS JOIN LATERAL unnest(p.tags) AS t(tag) GROUP BY t.tag ORDER BY n DESC, t.tag",
    "comma_unnest": "SELECT p.name, tag FROM {p} p JOIN {o} o ON o.product_id = p.product_id, unnest(p.tags) AS t(tag) "
                    "WHERE o.order_id < 100030 ORDER BY 1, 2",
    "median_window": "SELECT order_id, median(amount) OVER (PARTITION BY status) AS m, median(quantity) OVER () AS q "
                     "FROM {o} ORDER BY order_id LIMIT 5",
}

# (orders, customers, products) per route; the mixed route joins all three kinds of table
ROUTES = {
    "duckdb": ("orders_d", "customers_d", "products_d"),
    "arrow": ("orders_a", "customers_a", "products_a"),
    "federated": ("orders_f", "customers_f", "products_f"),
    "mixed": ("orders_d", "customers_a", "products_f"),
}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    pod_dir = tmp_path_factory.mktemp("routes")
    shutil.copytree(REPO / "data", pod_dir / "data")
    datasets = []
    for source, short in (("file:data/orders", "orders"), ("file:data/customers.csv", "customers"),
                          ("file:data/products.ndjson", "products")):
        datasets.append(f"  - from: {source}\n    name: {short}_d\n    acceleration:\n      engine: duckdb\n")
        datasets.append(f"  - from: {source}\n    name: {short}_a\n    acceleration:\n      engine: arrow\n")
        datasets.append(f"  - from: {source}\n    name: {short}_f\n")
    (pod_dir / "spicepod.yaml").write_text("version: v1\nkind: Spicepod\nname: routes\ndatasets:\n" + "".join(datasets))
    rt = Runtime(load_pod(pod_dir / "spicepod.yaml"), data_dir=str(pod_dir / ".satchel"))
    rt.start()
    assert rt.wait_ready(60)
    yield rt
    rt.stop()


def type_family(t: pa.DataType) -> object:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_decimal(t):
        return ("decimal", t.scale)
    return str(t)


def normal(value: object) -> object:
    if isinstance(value, (float, decimal.Decimal)):
        f = float(value)
        return round(f, 6) if math.isfinite(f) else f
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc)
    return value


def run(runtime: Runtime, sql: str, route: str) -> pa.Table:
    o, c, p = ROUTES[route]
    return runtime.query(sql.format(o=o, c=c, p=p)).read_all()


def test_routes_are_what_they_claim(runtime):
    sql = "SELECT count(*) FROM {o} o JOIN {c} c ON c.customer_id = o.customer_id JOIN {p} p ON p.product_id = o.product_id"
    explain = {route: runtime.explain(sql.format(o=o, c=c, p=p)) for route, (o, c, p) in ROUTES.items()}
    assert explain["duckdb"].startswith("route: accelerator (served by accelerator)")
    assert explain["arrow"].startswith("route: federated (served by accelerator)")
    assert explain["federated"].startswith("route: federated (served by source)")
    assert explain["mixed"].startswith("route: federated (served by mixed)")
    assert "[duckdb]" in explain["mixed"] and "[arrow]" in explain["mixed"] and "[source]" in explain["mixed"]


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_same_result_on_every_route(runtime, name):
    sql = QUERIES[name]
    results = {route: run(runtime, sql, route) for route in ROUTES}
    reference = results["duckdb"]
    assert reference.num_rows > 0, "a query that returns nothing proves little"
    for route, table in results.items():
        assert table.column_names == reference.column_names, (route, table.column_names, reference.column_names)
        got_types = [type_family(f.type) for f in table.schema]
        want_types = [type_family(f.type) for f in reference.schema]
        assert got_types == want_types, (route, table.schema, reference.schema)
        got = [tuple(normal(v) for v in row.values()) for row in table.to_pylist()]
        want = [tuple(normal(v) for v in row.values()) for row in reference.to_pylist()]
        assert got == want, (route, [(i, a, b) for i, (a, b) in enumerate(zip(got, want)) if a != b][:5],
                             len(got), len(want))


def test_postgres_names_for_unnamed_columns(runtime):
    for route in ROUTES:
        table = run(runtime, QUERIES["unnamed_columns"], route)
        assert table.column_names == ["count", "sum", "max", "?column?"], route


def test_timestamps_are_utc_on_every_route(runtime):
    for route in ROUTES:
        table = run(runtime, "SELECT ordered_at, date_trunc('day', ordered_at) AS day FROM {o} LIMIT 1", route)
        assert table.schema.field("ordered_at").type == pa.timestamp("us", "UTC"), route
        assert table.schema.field("day").type == pa.timestamp("us", "UTC"), route


def test_no_unsigned_or_view_types_leak(runtime):
    sql = "SELECT row_number() OVER (ORDER BY order_id) AS rn, CAST(order_id AS VARCHAR) AS s FROM {o} LIMIT 3"
    for route in ROUTES:
        table = run(runtime, sql, route)
        assert table.schema.types == [pa.int64(), pa.string()], (route, table.schema)


@pytest.mark.parametrize("expression", ["2147483647 + quantity", "quantity * 32767::smallint", "customer_id * 2147483647",
                                        "sum(quantity * 2000000000)"])
def test_integer_overflow_fails_on_every_route(runtime, expression):
    """As in PostgreSQL and DuckDB: DataFusion wrapped around (2147483647 + 1 was -2147483648)."""
    from engine.errors import SqlError

    for route in ROUTES:
        with pytest.raises(SqlError, match="(?i)overflow|out of range|can't cast value"):
            run(runtime, f"SELECT {expression} AS v FROM {{o}}", route).to_pylist()


def test_union_of_different_types_gives_the_reconciled_type_on_every_route(runtime):
    """A set operation whose first branch has the narrower type: DataFusion announced the first
    branch's type and its stream labelled every batch with it, so SMALLINTs were read from the
    bytes of decimals (1.0, 30.90 came back as 100, 0). The schema a client is told first is
    the one the rows come in."""
    sql = ("SELECT quantity AS v, customer_id AS c FROM {o} WHERE order_id < 100004 UNION ALL "
           "SELECT amount, amount::float8 FROM {o} WHERE order_id < 100004 UNION "
           "SELECT 1.5, order_id FROM {o} WHERE order_id = 100001 ORDER BY 1, 2")
    reference = run(runtime, sql, "duckdb")
    assert reference.num_rows == 7
    for route in ROUTES:
        o, c, p = ROUTES[route]
        announced = runtime.query_schema(sql.format(o=o, c=c, p=p))
        table = run(runtime, sql, route)
        assert announced.types == table.schema.types, route
        assert [type_family(t) for t in table.schema.types] == [type_family(t) for t in reference.schema.types], route
        assert [tuple(normal(v) for v in r.values()) for r in table.to_pylist()] == \
            [tuple(normal(v) for v in r.values()) for r in reference.to_pylist()], route


@pytest.mark.parametrize("expression", ["quantity / 0", "quantity / (quantity - quantity)", "quantity % 0",
                                        "amount % (quantity - quantity)", "7 / 0", "sum(quantity % 0)",
                                        "sum(quantity / (quantity - quantity))"])
def test_exact_division_by_zero_fails_on_every_route(runtime, expression):
    """As in PostgreSQL and DataFusion: DuckDB gave NULL for `%` and, for `/`, a cast error about
    infinity. (Float and decimal `/` give Infinity on every route, as DuckDB and DataFusion do.)"""
    from engine.errors import SqlError

    for route in ROUTES:
        with pytest.raises(SqlError) as failure:
            run(runtime, f"SELECT {expression} AS v FROM {{o}}", route).to_pylist()
        assert "division by zero" in str(failure.value).lower().replace("divide by zero", "division by zero"), route
    for route in ROUTES:  # a divisor that is zero on no row costs nothing in meaning
        assert run(runtime, "SELECT quantity / (quantity + 100) AS v, quantity % (quantity + 100) AS m FROM {o} "
                            "ORDER BY order_id LIMIT 2", route).to_pylist() == \
            run(runtime, "SELECT 0 AS v, quantity AS m FROM {o} ORDER BY order_id LIMIT 2", "duckdb").to_pylist(), route


def test_unnamed_columns_take_the_function_names_postgresql_gives_them(runtime):
    """Named as written in PostgreSQL, not after sqlglot's classes (to_char was `time_to_str`,
    generate_series `exploding_generate_series`, string_agg `group_concat`, a window `?column?`)."""
    sql = ("SELECT to_char(ordered_at, 'YYYY'), date_trunc('month', ordered_at), string_agg(status, ',') OVER (), "
           "row_number() OVER (ORDER BY order_id), count(*) FILTER (WHERE quantity > 1) OVER (), "
           "sum(amount) OVER (), position('a' IN status), 1 + 1, to_char(ordered_at, 'YYYY-\"Q\"Q'), "
           "char_length(status) "
           "FROM {o} ORDER BY order_id LIMIT 1")
    for route in ROUTES:
        assert run(runtime, sql, route).column_names == [
            "to_char", "date_trunc", "string_agg", "row_number", "count", "sum", "position", "?column?",
            "to_char", "char_length"], route
        assert run(runtime, "SELECT median(amount), variance(amount) FROM {o}", route).column_names == [
            "median", "variance"], route
    assert runtime.query("SELECT generate_series(1, 2)").read_all().column_names == ["generate_series"]


def test_postgresql_json_constructors_on_the_duckdb_route(runtime):
    """json_agg, jsonb_agg, json_build_object, jsonb_build_object and to_jsonb under DuckDB's names
    (it has none of them; agents write them). DataFusion has no JSON functions: there they fail."""
    import json

    sql = ("SELECT json_agg(status ORDER BY order_id DESC) AS a, jsonb_agg(quantity ORDER BY order_id) AS b, "
           "json_build_object('first', min(order_id), 'status', min(status)) AS c, jsonb_build_object('k', 1) AS d, "
           "to_jsonb(max(order_id)) AS e FROM (SELECT * FROM {o} ORDER BY order_id LIMIT 3) o")
    row = run(runtime, sql, "duckdb").to_pylist()[0]
    first = run(runtime, "SELECT order_id, status, quantity FROM {o} ORDER BY order_id LIMIT 3", "duckdb").to_pylist()
    assert {k: json.loads(v) for k, v in row.items()} == {
        "a": [r["status"] for r in reversed(first)], "b": [r["quantity"] for r in first],
        "c": {"first": first[0]["order_id"], "status": min(r["status"] for r in first)}, "d": {"k": 1},
        "e": first[-1]["order_id"]}
    assert run(runtime, "SELECT json_agg(order_id) AS a FROM {o} WHERE false", "duckdb").to_pylist() == [{"a": None}]
    # with FILTER and OVER, which apply to the aggregate inside (DuckDB refused them on to_json)
    filtered = run(runtime, "SELECT json_agg(order_id ORDER BY order_id) FILTER (WHERE order_id < 100003) AS a "
                            "FROM {o}", "duckdb")
    assert filtered.to_pylist() == [{"a": "[100001,100002]"}]
    windowed = run(runtime, "SELECT jsonb_agg(order_id) OVER (ORDER BY order_id ROWS 1 PRECEDING) AS w "
                            "FROM {o} ORDER BY order_id LIMIT 2", "duckdb")
    assert windowed.to_pylist() == [{"w": "[100001]"}, {"w": "[100001,100002]"}]
    from engine.errors import SqlError

    with pytest.raises(SqlError, match="json_agg"):
        run(runtime, "SELECT json_agg(order_id) AS a FROM {o}", "federated")


def test_a_bound_divisor_of_zero_fails_too(runtime):
    """A parameter's value is not the one its template was planned with: zero still fails."""
    from engine.errors import SqlError

    sql = "SELECT sum(quantity % ?) AS m, sum(quantity / ?) AS d FROM orders_d"
    assert runtime.query(sql, params=[3, 3]).read_all().num_rows == 1
    with pytest.raises(SqlError, match="division by zero"):
        runtime.query(sql, params=[0, 0]).read_all()
    assert runtime.query(sql, params=[2, 2]).read_all().num_rows == 1


def test_decimal_sums_have_one_type_on_every_route(runtime):
    """SUM(decimal) is DECIMAL(38, s) on every route, as DuckDB gives it: plain, windowed, and
    read through a derived table or a LATERAL subquery (DataFusion gives p + 10)."""
    sql = ("SELECT o.order_id, sum(o.amount) OVER (ORDER BY o.order_id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS running, "
           "sum(o.amount) OVER (PARTITION BY o.status) AS per_status, x.total FROM {o} o CROSS JOIN LATERAL "
           "(SELECT sum(i.amount) AS total FROM {o} i WHERE i.customer_id = o.customer_id) x ORDER BY o.order_id LIMIT 5")
    for route in ROUTES:
        table = run(runtime, sql, route)
        assert [table.schema.field(c).type for c in ("running", "per_status", "total")] == [pa.decimal128(38, 2)] * 3, route


def test_a_subquery_test_in_a_select_list_runs_on_the_federated_route(runtime):
    """EXISTS / IN (SELECT ...) in a select list run on the federated route as counts (DataFusion
    runs them only as conditions); one correlated by other than equality says what to write."""
    from engine.errors import SqlError

    for sql in ("SELECT c.customer_id, EXISTS (SELECT 1 FROM {o} WHERE amount > 900) AS e FROM {c} c ORDER BY 1 LIMIT 3",
                "SELECT customer_id, customer_id IN (SELECT customer_id FROM {o}) AS has_orders FROM {c} ORDER BY 1",
                "SELECT c.customer_id, EXISTS (SELECT 1 FROM {o} o WHERE o.customer_id = c.customer_id AND o.amount > 300) "
                "AS big FROM {c} c ORDER BY 1"):
        assert run(runtime, sql, "arrow").to_pylist() == run(runtime, sql, "duckdb").to_pylist()
    with pytest.raises(SqlError, match=r"EXISTS / IN in a select list.*correlated by equality"):
        run(runtime, "SELECT order_id, EXISTS (SELECT 1 FROM {o} u WHERE u.amount < o.amount) AS e FROM {o} o", "arrow")
    with pytest.raises(SqlError, match=r"over a subquery that groups, aggregates or limits its rows run on the federated "
                                       r"engine only as conditions .* count the rows instead"):
        run(runtime, "SELECT customer_id, customer_id IN (SELECT customer_id FROM {o} GROUP BY customer_id "
                     "HAVING count(*) > 1) AS repeat FROM {c}", "arrow")
    # a scalar subquery correlated by other than equality
    sql = "SELECT order_id, (SELECT count(*) FROM {o} u WHERE u.amount < o.amount) AS cheaper FROM {o} o LIMIT 3"
    assert run(runtime, sql, "duckdb").num_rows == 3
    with pytest.raises(SqlError, match=r"correlated by equality .* join and aggregate instead"):
        run(runtime, sql, "arrow")
