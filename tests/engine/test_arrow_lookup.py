"""Lookups on an Arrow-accelerated table (`Plan.arrow_lookup`): `SELECT columns FROM t WHERE
filters pyarrow applies exactly [[ORDER BY orderable columns] LIMIT n]` is answered by a pyarrow
scan in the sidecar, without a federated engine worker. Every answer here is compared with
DuckDB's over the same data, or with the federated engine's (DataFusion's) own answer where the
two engines differ (NaN and -0.0), and its schema with the one announced before the query runs."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlglot import parse_one

ROWS = 3000

LOOKUPS = [
    "SELECT * FROM {t} WHERE id = 42",
    "SELECT id, name FROM {t} WHERE id = 42",
    "SELECT name, id FROM {t} WHERE id = -1",
    "SELECT id FROM {t} WHERE 42 = id",
    "SELECT * FROM {t} WHERE name = 'O''Brien 7'",
    "SELECT * FROM {t} WHERE name = 'n-- 5'",
    "SELECT id, small FROM {t} WHERE small = 3 AND id < 100",
    "SELECT id FROM {t} WHERE id BETWEEN 10 AND 20",
    "SELECT id FROM {t} WHERE id IN (1, 5, 2999, 4000)",
    "SELECT id FROM {t} WHERE id NOT IN (1, 5) AND id < 10",
    "SELECT id FROM {t} WHERE name IS NULL",
    "SELECT id FROM {t} WHERE name IS NOT NULL AND id < 12",
    "SELECT id FROM {t} WHERE name <> 'x 3' AND id < 12",
    "SELECT id FROM {t} WHERE name LIKE 'x 1_' ",
    "SELECT id FROM {t} WHERE name NOT LIKE 'x%' AND id < 30",
    "SELECT id FROM {t} WHERE id = 1 OR name = 'x 4'",
    "SELECT id FROM {t} WHERE NOT (id > 5 OR name = 'x 1') AND id >= 0",
    "SELECT id FROM {t} WHERE name > 'x 2998'",
    "SELECT * FROM {t} WHERE id >= 100 LIMIT 0",
    "SELECT * FROM {t} WHERE id < 0",
    "SELECT * FROM {t} WHERE id = 42 AND name = 'nobody'",
    "SELECT id, day FROM {t} WHERE day = DATE '2026-01-05'",
    "SELECT id FROM {t} WHERE day BETWEEN '2026-01-03' AND '2026-01-04' AND id < 100",
    "SELECT id, at FROM {t} WHERE at >= TIMESTAMP '2026-03-01 00:00:59' AND at < '2026-03-01 00:01:03'",
    "SELECT id FROM {t} WHERE at_ns > '2026-03-01 00:49:58.000001'",
    "SELECT id FROM {t} WHERE at >= DATE '2026-03-01' AND id < 3",
    "SELECT id FROM {t} WHERE at >= '2026-03-01 00:49' AND at <= '2026-03-01T00:49:01'",  # text Satchel completes
    "SELECT id, price FROM {t} WHERE price = 4.5",
    "SELECT id FROM {t} WHERE price > 1499 OR price IN (0.5, 1)",
    "SELECT id FROM {t} WHERE score >= 0.5 AND id < 20",
    "SELECT id FROM {t} WHERE flag = true AND id < 9",
]
ORDERED = [  # a LIMIT without ORDER BY picks any rows: compared by count and by matching the filter
    ("SELECT id FROM {t} WHERE id > 100 LIMIT 7", 7, lambda r: r["id"] > 100),
    ("SELECT id, name FROM {t} WHERE small = 2 LIMIT 5", 5, lambda r: r["id"] % 7 == 2),
]
NOT_LOOKUPS = [
    "SELECT id FROM {t} WHERE small = 1000",  # out of the int8 column's range
    "SELECT * FROM {t} WHERE price = 4.125",  # not exactly a decimal(10, 2): the engine coerces
    "SELECT * FROM {t} WHERE score > 0.3 AND id < 5",  # 0.3 is no float: the engine coerces
    "SELECT id FROM {t} WHERE day = '2026-1-05'",  # text the engines read otherwise than Python
    "SELECT id FROM {t} WHERE at_utc < TIMESTAMP '2026-03-01 00:00:04'",  # naive against aware
    "SELECT id FROM {t} WHERE at_utc < TIMESTAMPTZ '2026-03-01 00:00:04+00:00'",
    "SELECT id AS k FROM {t} WHERE id = 3",  # renamed
    "SELECT id + 1 AS id1 FROM {t} WHERE id = 3",
    "SELECT id FROM {t} WHERE id = 3 ORDER BY id",
    "SELECT DISTINCT small FROM {t} WHERE id < 10",
    "SELECT id FROM {t} WHERE id = small",
    "SELECT id FROM {t} WHERE lower(name) = 'x 3'",
    "SELECT id FROM {t} WHERE id = 3 LIMIT 1 OFFSET 0",
]


def _data(directory) -> None:
    ids = list(range(ROWS))
    pq.write_table(pa.table({
        "id": pa.array(ids, pa.int64()),
        "small": pa.array([i % 7 for i in ids], pa.int8()),
        "name": pa.array([None if i % 11 == 0 else ("O'Brien 7" if i == 7 else "n-- 5" if i == 5 else f"x {i}")
                          for i in ids], pa.string()),
        "price": pa.array([f"{i / 2:.2f}" for i in ids]).cast(pa.decimal128(10, 2)),
        "score": pa.array([math.nan if i % 500 == 499 else -0.0 if i % 500 == 498 else (i % 10) / 10 for i in ids],
                          pa.float64()),
        "day": pa.array([dt.date(2026, 1, 1) + dt.timedelta(days=i // 100) for i in ids], pa.date32()),
        "at": pa.array([dt.datetime(2026, 3, 1) + dt.timedelta(seconds=i) for i in ids], pa.timestamp("us")),
        "at_ns": pa.array([1_772_323_200_000_000_000 + i * 1_000_000_001 for i in ids], pa.timestamp("ns")),
        "at_utc": pa.array([dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i) for i in ids],
                           pa.timestamp("us", "UTC")),
        "flag": pa.array([i % 3 == 0 for i in ids]),
    }), directory / "t.parquet", row_group_size=500)


@pytest.fixture(scope="module")
def pod_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lookup")


@pytest.fixture(scope="module")
def runtime(pod_dir):
    from engine.config import load_pod
    from engine.runtime import Runtime

    directory = pod_dir
    _data(directory)
    (directory / "spicepod.yaml").write_text("""
version: v1
kind: Spicepod
name: lookup
datasets:
  - from: file:t.parquet
    name: t_arrow
    acceleration:
      engine: arrow
  - from: file:t.parquet
    name: t_duckdb
    acceleration:
      engine: duckdb
""")
    rt = Runtime(load_pod(directory / "spicepod.yaml"), data_dir=str(directory / ".satchel"))
    rt.start()
    assert rt.wait_ready(60)
    yield rt
    rt.stop()


def _rows(runtime, sql: str, params=None) -> tuple[pa.Schema, list[dict]]:
    table = runtime.query(sql, params=params).read_all()
    return table.schema, sorted(table.to_pylist(), key=lambda r: tuple((v is None, str(v)) for v in r.values()))


@pytest.mark.parametrize("sql", LOOKUPS)
def test_a_lookup_is_answered_in_the_sidecar_as_duckdb_answers_it(runtime, sql: str) -> None:
    assert "lookup: answered by a scan of the Arrow table" in runtime.explain(sql.format(t="t_arrow"))
    lookup = runtime.plan(parse_one(sql.format(t="t_arrow"), read="postgres")).arrow_lookup
    scanned = runtime.routes.arrow.exact_scan("t_arrow", lookup.columns, lookup.filters, lookup.limit)
    assert scanned is not None
    schema, rows = _rows(runtime, sql.format(t="t_arrow"))
    assert rows == _rows(runtime, sql.format(t="t_duckdb"))[1]
    assert schema == runtime.query_schema(sql.format(t="t_arrow"))  # as GetFlightInfo announced it


@pytest.mark.parametrize("sql,count,matches", ORDERED)
def test_a_lookup_with_a_limit_gives_that_many_matching_rows(runtime, sql: str, count: int, matches) -> None:
    _, rows = _rows(runtime, sql.format(t="t_arrow"))
    assert len(rows) == count and all(matches(r) for r in rows)


@pytest.mark.parametrize("sql", NOT_LOOKUPS)
def test_other_queries_still_run_in_the_federated_engine(runtime, sql: str) -> None:
    assert "lookup:" not in runtime.explain(sql.format(t="t_arrow"))
    assert _rows(runtime, sql.format(t="t_arrow"))[1] == _rows(runtime, sql.format(t="t_duckdb"))[1]


@pytest.mark.parametrize("cond", ["score >= 0.5", "score > 0.5", "score = 0", "score = -0.0", "score <> 0.5",
                                  "score IN (0, 0.5)", "score NOT IN (0)", "score < 0", "score <= 0",
                                  "NOT (score > 0.5)", "score > 0.5 OR id = 1"])
def test_float_conditions_treat_nan_and_negative_zero_as_the_engine_does(runtime, cond: str) -> None:
    """NaN ranks above every number and equals itself; -0.0 equals 0.0 (the federated engine's
    own answer, the same query made no lookup by an expression, is the reference)."""
    lookup, engine = f"SELECT id FROM t_arrow WHERE {cond}", f"SELECT id + 0 AS id FROM t_arrow WHERE {cond}"
    assert "lookup:" in runtime.explain(lookup) and "lookup:" not in runtime.explain(engine)
    rows = _rows(runtime, lookup)[1]
    assert rows == _rows(runtime, engine)[1]
    ids = {r["id"] for r in rows}
    assert (499 in ids) == (cond in ("score >= 0.5", "score > 0.5", "score <> 0.5", "score NOT IN (0)",  # NaN
                                     "score > 0.5 OR id = 1"))
    assert (498 in ids) == (cond in ("score = 0", "score = -0.0", "score IN (0, 0.5)", "score <= 0",  # -0.0
                                     "score <> 0.5", "NOT (score > 0.5)"))


def test_values_written_in_the_text_and_bound_values_reach_the_lookup(runtime) -> None:
    for value in (3, 17, 2500, 99999):  # one template: each instance gets its own values
        sql = f"SELECT id, name FROM t_arrow WHERE id = {value}"
        assert _rows(runtime, sql)[1] == _rows(runtime, sql.replace("t_arrow", "t_duckdb"))[1]
    for small in (3, 1000):  # 1000 is out of the int8 column's range: that instance goes to the engine
        got = _rows(runtime, "SELECT id FROM t_arrow WHERE small = ? AND id < 50", [small])[1]
        assert got == _rows(runtime, "SELECT id FROM t_duckdb WHERE small = ? AND id < 50", [small])[1]
    for name in ("x 12", "O'Brien 7", "nobody"):
        got = _rows(runtime, "SELECT id FROM t_arrow WHERE name = ?", [name])[1]
        assert got == _rows(runtime, "SELECT id FROM t_duckdb WHERE name = ?", [name])[1]
    for low, limit in ((5, 3), (2990, 50), (10, 0)):
        # a bound LIMIT is not a filter's value: such a template is not answered as a lookup
        _, rows = _rows(runtime, "SELECT id FROM t_arrow WHERE id >= ? LIMIT ?", [low, limit])
        assert len(rows) == min(limit, ROWS - low) and all(r["id"] >= low for r in rows)


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM {t}",
    "SELECT count(*) AS n FROM {t} WHERE day = DATE '2026-01-05' AND name LIKE 'x%'",
    "SELECT COUNT(*) AS n FROM {t} AS e WHERE e.id BETWEEN 10 AND 20 OR e.name IS NULL",
    "SELECT count(*) AS n FROM {t} WHERE id < 0",
    "SELECT count(*) AS n FROM {t} WHERE score > 0.5",
    "SELECT min(id) AS lo, max(id) AS hi, count(name) AS named, count(*) AS n FROM {t} WHERE small = 3",
    "SELECT max(at) AS latest, min(day) AS first_day FROM {t}",
    "SELECT min(name) AS a, max(name) AS z, count(name) AS c FROM {t} WHERE id < 0",
    "SELECT max(price) AS p, min(at_ns) AS t0, max(at_utc) AS t1, count(score) AS s FROM {t} WHERE id BETWEEN 5 AND 50",
    "SELECT max(name) AS z FROM {t} WHERE day = '2026-01-02'",
])
def test_counts_and_extremes_of_matching_rows_are_answered_in_the_sidecar(runtime, sql: str) -> None:
    arrow = sql.format(t="t_arrow")
    assert "lookup: answered by a scan" in runtime.explain(arrow)
    table = runtime.query(arrow).read_all()
    assert table.schema == runtime.query_schema(arrow)
    if "score" in sql:  # NaN scores: the engine's own count (an expression makes it no lookup) is the reference
        assert table.to_pylist() == runtime.query(f"{arrow} AND id + 0 = id").read_all().to_pylist()
    else:
        assert table.to_pylist() == runtime.query(sql.format(t="t_duckdb")).read_all().to_pylist()


@pytest.mark.parametrize("sql", [
    "SELECT max(score) AS m FROM {t}",  # a float: NaN is the engine's greatest, pyarrow skips it
    "SELECT count(DISTINCT small) AS n FROM {t}",
    "SELECT max(id) AS m FROM {t} GROUP BY small",
    "SELECT max(id) + 1 AS m FROM {t}",
    "SELECT max(id) AS m FROM {t} LIMIT 1",
    "SELECT max(id) AS m, id FROM {t} GROUP BY id",
])
def test_other_aggregates_stay_in_the_engine(runtime, sql: str) -> None:
    arrow = sql.format(t="t_arrow")
    assert "lookup:" not in runtime.explain(arrow)
    if "score" not in sql:
        assert _rows(runtime, arrow)[1] == _rows(runtime, sql.format(t="t_duckdb"))[1]


def test_dates_and_timestamps_given_as_text_reach_the_lookup_of_a_template(runtime, monkeypatch) -> None:
    """Texts that differ only in their values share a template, planned with sentinels in place
    of the values; the instances' values are bound into its lookup (a timestamp's text as
    planning writes it), and each is scanned in the sidecar."""
    scans, scan = [], runtime.routes.arrow.exact_scan
    monkeypatch.setattr(runtime.routes.arrow, "exact_scan",
                        lambda *a, **k: scans.append(scan(*a, **k)) or scans[-1])
    for text in ("2026-03-01 00:10", "2026-03-01 00:20:05", "2026-03-01T00:30:00.5"):
        sql = f"SELECT id FROM {{t}} WHERE at >= '{text}' AND id < 2000 ORDER BY id LIMIT 5"
        rows = _rows(runtime, sql.format(t="t_arrow"))[1]
        assert len(rows) == 5 and rows == _rows(runtime, sql.format(t="t_duckdb"))[1]
    for at, day in (("2026-03-01 00:07:30", "2026-01-05"), ("2026-03-01 00:00:50", "2026-01-01")):
        sql = "SELECT id, day FROM {t} WHERE at < ? AND day = ?"
        rows = _rows(runtime, sql.format(t="t_arrow"), [at, day])[1]
        assert rows and rows == _rows(runtime, sql.format(t="t_duckdb"), [at, day])[1]
    for day in ("2026-01-03", "2026-01-09", "2026-02-01"):  # a lifted count: one template, each day its count
        sql = f"SELECT count(*) AS n FROM {{t}} WHERE day = DATE '{day}' AND small <> 2"
        assert runtime.query(sql.format(t="t_arrow")).read_all().to_pylist() == \
            runtime.query(sql.format(t="t_duckdb")).read_all().to_pylist()
    assert len(scans) == 8 and all(s is not None for s in scans)


def test_a_lookup_sees_the_table_a_refresh_swapped_in(runtime, pod_dir) -> None:
    sql = "SELECT id, name FROM t_arrow WHERE id = 1"
    assert _rows(runtime, sql)[1] == [{"id": 1, "name": "x 1"}]
    table = pq.read_table(pod_dir / "t.parquet")
    names = table.column("name").to_pylist()
    names[1] = "renamed"
    pq.write_table(table.set_column(2, "name", pa.array(names, pa.string())), pod_dir / "t.parquet")
    try:
        runtime.refresh("t_arrow", wait=True)
        assert _rows(runtime, sql)[1] == [{"id": 1, "name": "renamed"}]  # the same plan, the new table
    finally:
        _data(pod_dir)
        runtime.refresh("t_arrow", wait=True)


TOP_N = [  # keys unique together, so the first n rows are one answer
    "SELECT * FROM {t} WHERE id >= 1500 ORDER BY id LIMIT 20",
    "SELECT id, name FROM {t} ORDER BY id DESC LIMIT 7",
    "SELECT id FROM {t} WHERE small = 3 ORDER BY id LIMIT 5",
    "SELECT id, small FROM {t} ORDER BY small DESC, id LIMIT 30",
    "SELECT id, name FROM {t} WHERE id < 40 ORDER BY name, id LIMIT 12",  # NULL names last
    "SELECT id, name FROM {t} WHERE id < 40 ORDER BY name DESC, id DESC LIMIT 12",  # NULLs first
    "SELECT id, name FROM {t} WHERE id < 40 ORDER BY name NULLS FIRST, id NULLS FIRST LIMIT 9",
    "SELECT id, name FROM {t} WHERE id < 60 ORDER BY name NULLS FIRST, id DESC NULLS LAST LIMIT 9",
    "SELECT id FROM {t} WHERE id > 2990 ORDER BY id LIMIT 100",  # fewer rows than the limit
    "SELECT id FROM {t} WHERE id < 0 ORDER BY id LIMIT 3",
    "SELECT id FROM {t} ORDER BY id LIMIT 0",
    "SELECT id, at FROM {t} WHERE day >= '2026-01-20' ORDER BY at DESC LIMIT 10",  # the latest rows
    "SELECT id, at_ns FROM {t} ORDER BY at_ns LIMIT 4",
    "SELECT id, at_utc FROM {t} WHERE id < 900 ORDER BY at_utc DESC LIMIT 6",
    "SELECT id, day FROM {t} WHERE small = 1 ORDER BY day DESC, id LIMIT 8",
    "SELECT id, price FROM {t} WHERE price < 100 ORDER BY price DESC LIMIT 5",
]


@pytest.mark.parametrize("sql", TOP_N)
def test_the_first_rows_in_an_order_are_duckdbs(runtime, sql: str) -> None:
    arrow = sql.format(t="t_arrow")
    assert "lookup: answered by a scan" in runtime.explain(arrow)
    table = runtime.query(arrow).read_all()
    assert table.to_pylist() == runtime.query(sql.format(t="t_duckdb")).read_all().to_pylist()  # in order
    assert table.schema == runtime.query_schema(arrow)


@pytest.mark.parametrize("sql", [
    "SELECT id FROM {t} ORDER BY id",  # no limit: a sort of every row stays in the engine (it spills)
    "SELECT id FROM {t} ORDER BY id LIMIT 20000",  # more rows than a lookup holds
    "SELECT id FROM {t} ORDER BY score LIMIT 3",  # a float key
    "SELECT id FROM {t} ORDER BY id + 1 LIMIT 3",
])
def test_other_orders_stay_in_the_engine(runtime, sql: str) -> None:
    assert "lookup:" not in runtime.explain(sql.format(t="t_arrow"))
    assert runtime.query(sql.format(t="t_arrow")).read_all().num_rows == \
        runtime.query(sql.format(t="t_duckdb")).read_all().num_rows
