"""The plan cache (engine.query.planner.PlanCache) and result schemas found without reading data."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.query.planner import Binding, PlanCache, RecordingResolver

SCHEMA = pa.schema([("id", pa.int64()), ("amount", pa.decimal128(12, 2)), ("tag", pa.string())])


def _pod(directory: Path, rows: int) -> str:
    table = pa.table({"id": pa.array(range(rows), pa.int64()),
                      "amount": pa.array([f"{i}.25" for i in range(rows)]).cast(pa.decimal128(12, 2)),
                      "tag": pa.array([f"t{i % 3}" for i in range(rows)])})
    pq.write_table(table, directory / "t.parquet")
    return """
version: v1
kind: Spicepod
name: plan_cache
datasets:
  - from: file:t.parquet
    name: t_duckdb
    acceleration:
      engine: duckdb
  - from: file:t.parquet
    name: t_arrow
    acceleration:
      engine: arrow
  - from: file:t.parquet
    name: t_source
"""


@pytest.fixture
def runtime(make_runtime, tmp_path):
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    rt = make_runtime(_pod(pod_dir, 10), pod_dir=pod_dir, start=True)
    assert rt.wait_ready(30)
    return rt


def test_cache_entry_is_reused_only_while_tables_resolve_the_same() -> None:
    cache = PlanCache(8)
    duck = Binding("t", SCHEMA, "duckdb", "duckdb:memory", "t")
    current = {"t": duck}
    resolve = lambda db, name: current.get(name)  # noqa: E731
    recorder = RecordingResolver(resolve)
    assert recorder(None, "t") is duck
    cache.put("k", "plan", recorder)
    assert cache.get("k", resolve) == "plan"
    current["t"] = Binding("t", SCHEMA, "source", None, "t")  # e.g. falls back to its source
    assert cache.get("k", resolve) is None
    current["t"] = Binding("t", SCHEMA.append(pa.field("x", pa.int32())), "duckdb", "duckdb:memory", "t")
    assert cache.get("k", resolve) is None  # the schema changed
    current["t"] = Binding("t", pa.schema(list(SCHEMA)), "duckdb", "duckdb:memory", "t")
    assert cache.get("k", resolve) == "plan"  # an equal schema (another object) is the same table
    del current["t"]
    assert cache.get("k", resolve) is None


def test_cache_is_bounded_and_can_be_turned_off() -> None:
    cache = PlanCache(2)
    resolve = lambda db, name: None  # noqa: E731
    for key in "abc":
        cache.put(key, key.upper(), ())
    assert cache.get("a", resolve) is None and cache.get("c", resolve) == "C"
    off = PlanCache(0)
    off.put("a", "A", ())
    assert off.get("a", resolve) is None


@pytest.mark.parametrize("table", ["t_duckdb", "t_arrow", "t_source"])
def test_repeated_query_reuses_its_plan_and_sees_new_data(runtime, tmp_path, table) -> None:
    sql = f"SELECT count(*) AS n, sum(amount) AS total FROM {table} WHERE tag = 't1'"
    first = runtime.query(sql).read_all().to_pylist()
    hits = runtime.queries.plans.hits
    assert runtime.query(sql).read_all().to_pylist() == first
    assert runtime.queries.plans.hits == hits + 1
    _pod(tmp_path / "pod", 100)  # new data in the source file
    if table != "t_source":
        runtime.refresh(table, wait=True)
    again = runtime.query(sql).read_all().to_pylist()
    assert again[0]["n"] == 33 and again != first


def test_parameters_of_different_types_get_different_plans(runtime) -> None:
    sql = "SELECT ? AS v FROM t_duckdb LIMIT 1"
    assert runtime.query(sql, params=[1]).read_all().schema.field("v").type != \
        runtime.query(sql, params=[True]).read_all().schema.field("v").type


@pytest.mark.parametrize("table", ["t_duckdb", "t_arrow", "t_source"])
def test_query_schema_is_the_result_schema_and_reads_no_source_data(runtime, monkeypatch, table) -> None:
    sql = (f"SELECT tag, count(*) AS n, sum(amount) AS total, avg(amount) AS mean, sum(id) AS ids, "
           f"max(id) / 2 AS half FROM {table} GROUP BY tag ORDER BY tag")
    connector = runtime.datasets["t_source"].connector
    scans = []
    original = connector.scan
    monkeypatch.setattr(connector, "scan", lambda *a, **k: scans.append(a) or original(*a, **k))
    schema = runtime.query_schema(sql)
    assert scans == []
    result = runtime.query(sql).read_all()
    assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in result.schema]
    assert schema.types == [pa.string(), pa.int64(), pa.decimal128(38, 2), pa.float64(), pa.int64(), pa.int64()]


def test_a_constant_query_runs_once_and_is_then_served_from_the_cache(runtime) -> None:
    """`SELECT 1` (an agent's liveness probe) is computed once; each call is still one
    task-history row. Anything that may change (now(), random(), a table, a table function) or
    a large constant runs every time."""
    first = runtime.query("SELECT 1 AS one, 'a' || 'b' AS ab, CAST(2 AS DOUBLE) AS two").read_all()
    hits = runtime.queries.plans.hits
    again = runtime.query("SELECT 1 AS one, 'a' || 'b' AS ab, CAST(2 AS DOUBLE) AS two").read_all()
    assert again.equals(first) and again.to_pylist() == [{"one": 1, "ab": "ab", "two": 2.0}]
    assert runtime.queries.plans.hits >= hits + 2  # the plan and the result
    rows = runtime.query("SELECT task_id FROM runtime.task_history WHERE query_text LIKE 'SELECT 1 AS one%'").read_all()
    assert rows.num_rows == 2
    for sql in ["SELECT now() AS t", "SELECT random() AS r", "SELECT count(*) AS n FROM t_source",
                "SELECT unnest([1, 2, 3]) AS u", "SELECT '" + "x" * 70_000 + "' AS big"]:
        runtime.query(sql).read_all()
        hits = runtime.queries.plans.hits
        runtime.query(sql).read_all()
        assert runtime.queries.plans.hits == hits + 1, sql  # the plan only, never the result
    randoms = {runtime.query("SELECT random() AS r").read_all().column(0)[0].as_py() for _ in range(3)}
    assert len(randoms) == 3


def test_a_parameterised_query_is_planned_once_for_all_its_values(runtime, monkeypatch) -> None:
    """An agent's `... WHERE id = ?` with a new value each time: planned once (a template), each
    value spliced in as planning renders it (strings quoted, negative numbers intact), every
    result the same as with the values written in the SQL. One task-history row per query."""
    import engine.query.service as service

    plans = []
    original = service.plan_query
    monkeypatch.setattr(service, "plan_query", lambda *a, **k: plans.append(a) or original(*a, **k))
    sql = "SELECT id, tag FROM t_duckdb WHERE id >= ? AND tag <> ? AND id - ? > -100 ORDER BY id LIMIT 3"
    values = [(0, "t1", 1), (4, "it's -- not a comment", -5), (2, "t0", -2147483647), (1, "", 0)]
    for params in values:
        got = runtime.query(sql, params=list(params)).read_all().to_pylist()
        literal = (f"SELECT id, tag FROM t_duckdb WHERE id >= {params[0]} AND tag <> '{params[1].replace(chr(39), 2 * chr(39))}' "
                   f"AND id - ({params[2]}) > -100 ORDER BY id LIMIT 3")
        assert got == runtime.query(literal).read_all().to_pylist(), params
    assert len([p for p in plans if "?" not in str(p[0])]) - len(values) == 1  # the template; each literal SQL once
    assert runtime.query_schema(sql, params=[7, "x", 8]) == runtime.query(sql, params=[7, "x", 8]).read_all().schema
    rows = runtime.query(f"SELECT count(*) AS n FROM runtime.task_history WHERE query_text = '{sql}'").read_all()
    assert rows.column(0)[0].as_py() == len(values) + 1


def test_values_written_in_the_sql_are_planned_once_per_query_shape(runtime, monkeypatch, tmp_path) -> None:
    """Agents write their values into the text: the literals a query compares columns with are
    lifted into parameters, so `... WHERE id = 3`, `... WHERE id = 7` ... are planned once (a
    template) and each runs with its own values: the same rows as planning each text gives.
    Literals elsewhere (LIMIT, ORDER BY 1, arithmetic) stay part of the text."""
    import engine.query.service as service

    shapes = [
        ("SELECT id, tag FROM t_duckdb WHERE id >= {0} AND tag <> {1} ORDER BY 1 LIMIT 3",
         [(0, "'t1'"), (4, "'it''s -- not a comment'"), (2, "''"), (9, "'t0'")]),
        ("SELECT count(*) AS n FROM t_duckdb WHERE {0} < id AND tag IN ({1}, 't2') AND amount BETWEEN 2 AND {2}",
         [(1, "'t0'", 8), (3, "'t1'", 9), (0, "'x'", 3)]),
    ]
    import duckdb

    oracle = duckdb.connect()  # the same texts on the same file, planned by DuckDB alone
    for table in ("t_duckdb", "t_arrow"):
        oracle.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{tmp_path / 'pod' / 't.parquet'}')")
    plans = []
    original = service.plan_query
    monkeypatch.setattr(service, "plan_query", lambda *a, **k: plans.append(a) or original(*a, **k))
    for table in ("t_duckdb", "t_arrow"):  # DuckDB-accelerated; Arrow-accelerated (the federated engine)
        for sql, cases in shapes:
            for values in cases:
                text = sql.replace("t_duckdb", table).format(*values)
                want = oracle.execute(text).to_arrow_table().to_pylist()
                assert runtime.query(text).read_all().to_pylist() == want, text
                assert runtime.query_schema(text) == runtime.query(text).read_all().schema
    assert len(plans) == 2 * len(shapes)  # one template per shape and table, planned once
    assert "3" in runtime.explain("SELECT id FROM t_duckdb WHERE id = 3")  # EXPLAIN shows its own values


def test_what_is_lifted_and_what_stays_in_the_text() -> None:
    from engine.query.sql_limits import SqlLimits
    from engine.query.templates import MAX_VALUES, Lifts

    lifted = Lifts(SqlLimits()).get

    found = lifted("SELECT a FROM t WHERE 5 = id AND name = 'it''s' AND x IN (1, 2) AND y BETWEEN 3 AND 4 "
                   "AND z > 1.5 AND w = -3 AND v = f(7) ORDER BY 1 LIMIT 10;")
    assert found.sql == ("SELECT a FROM t WHERE $1 = id AND name = $2 AND x IN ($3, $4) AND y BETWEEN $5 AND $6 "
                         "AND z > 1.5 AND w = -3 AND v = f(7) ORDER BY 1 LIMIT 10")
    assert found.values == (5, "it's", 1, 2, 3, 4)
    assert lifted("SELECT * FROM t WHERE id = ? AND b = 3") is None  # parameters of its own
    assert lifted("SELECT * FROM t WHERE s LIKE 'a%' AND f(DATE '2024-01-05') = 1") is None  # LIKE, no column
    typed = lifted("SELECT * FROM t WHERE d = DATE '2024-01-01' AND ts < timestamp '2024-01-01 10:00' "
                   "AND z >= CAST('2024-01-02' AS DATE) AND y > '2024-01-03'::timestamptz "
                   "AND q = TIMESTAMP WITH TIME ZONE '2024-01-04' AND f(DATE '2024-01-05') = 1")
    assert typed.sql == ("SELECT * FROM t WHERE d = CAST($1 AS DATE) AND ts < CAST($2 AS TIMESTAMP) "
                         "AND z >= CAST($3 AS DATE) AND y > $4::timestamptz "
                         "AND q = TIMESTAMP WITH TIME ZONE '2024-01-04' AND f(DATE '2024-01-05') = 1")
    assert typed.values == ("2024-01-01", "2024-01-01 10:00", "2024-01-02", "2024-01-03")
    assert lifted("SELECT * FROM t WHERE s = 'a' 'b' AND h = $$x$$ AND u = U&'d\\0061t'") is None  # not one token
    assert lifted("EXPLAIN SELECT * FROM t WHERE id = 3") is None  # EXPLAIN shows the query's own values
    many = ", ".join(map(str, range(MAX_VALUES + 1)))
    assert lifted(f"SELECT * FROM t WHERE id IN ({many})") is None  # a long list is planned as written


def test_texts_alike_but_for_their_literals_are_lifted_without_parsing(runtime, monkeypatch, tmp_path) -> None:
    """A text whose tokens, literals aside, are those of a text seen before is lifted from its
    tokens alone; a literal that cannot be lifted (1.5 where the first text had an integer) and
    literals that are not compared with a column (LIMIT) stay in its text. Every answer is
    DuckDB's own answer to the same text."""
    import duckdb

    import engine.query.templates as templates

    oracle = duckdb.connect()
    oracle.execute(f"CREATE VIEW t_duckdb AS SELECT * FROM read_parquet('{tmp_path / 'pod' / 't.parquet'}')")
    parsed = []
    original = templates.parse_query
    monkeypatch.setattr(templates, "parse_query", lambda *a, **k: parsed.append(a[0]) or original(*a, **k))
    shape = "SELECT id, tag FROM t_duckdb WHERE id >= {0} AND tag <> {1} ORDER BY id LIMIT {2}"
    cases = [(1, "'t1'", 5), (3, "'it''s'", 5), (1.5, "'t0'", 5), (0, "'a\\'", 2), (7, "''", 9)]
    for values in cases:
        text = shape.format(*values)
        assert runtime.query(text).read_all().to_pylist() == oracle.execute(text).to_arrow_table().to_pylist(), text
    assert parsed == [shape.format(*cases[0])]  # where the literals are was learnt once
    lifts = runtime.queries.lifts
    assert lifts.peek(shape.format(*cases[1])).sql == shape.format("$1", "$2", 5)
    assert lifts.peek(shape.format(*cases[2])).sql == shape.format(1.5, "$1", 5)
    assert lifts.peek(shape.format(*cases[4])).values == (7, "")


def test_lifted_values_that_change_the_plan_are_planned_with_their_values(runtime) -> None:
    """Different values give their own answers, whether the query is a template (DuckDB- or
    Arrow-accelerated) or planned with its own values (a source's scan takes them as filters)."""
    for table in ("t_arrow", "t_source", "t_duckdb"):
        got = [runtime.query(f"SELECT count(*) AS n FROM {table} WHERE id > {v}").read_all().column(0)[0].as_py()
               for v in (3, 5, 3, 8, 100)]
        assert got == [6, 4, 6, 1, 0], table


def test_parameters_that_cannot_be_templated_are_planned_with_their_values(runtime) -> None:
    """Floats, booleans, NULLs, big integers beside small ones, and queries reading a source are
    planned with their values, as before."""
    for table in ("t_duckdb", "t_arrow", "t_source"):
        sql = f"SELECT count(*) AS n FROM {table} WHERE id > ?"
        assert runtime.query(sql, params=[3]).read_all().column(0)[0].as_py() == 6
        assert runtime.query(sql, params=[5]).read_all().column(0)[0].as_py() == 4
        assert runtime.query(sql, params=[2.5]).read_all().column(0)[0].as_py() == 7
        assert runtime.query(sql, params=[None]).read_all().column(0)[0].as_py() == 0
        assert runtime.query(sql, params=[3_000_000_000]).read_all().column(0)[0].as_py() == 0
    assert runtime.query("SELECT ? AS b FROM t_duckdb LIMIT 1", params=[True]).read_all().column(0)[0].as_py() is True


def test_the_cache_bounds_the_sum_of_its_entries_texts() -> None:
    """A plan's trees take about 150 bytes per character of its SQL: an agent sending large
    distinct queries must not grow the cache's memory, so the entries' texts are bounded in sum
    (least recently used first out) and a text past the whole budget is never kept."""
    cache = PlanCache(size=100, text_budget=10_100)
    resolve = lambda db, name: None  # noqa: E731
    for i in range(5):
        cache.put(("query", None, f"{i}" * 3_000, None), i, ())
    assert [cache.get(("query", None, f"{i}" * 3_000, None), resolve) for i in range(5)] == [None, None, 2, 3, 4]
    cache.put(("query", None, "x" * 3_000, (("y" * 1_000),)), "p", ())  # parameters count too
    assert cache.get(("query", None, "2" * 3_000, None), resolve) is None
    assert cache.get(("query", None, "x" * 3_000, ("y" * 1_000,)), resolve) == "p"
    cache.put(("query", None, "z" * 10_100, None), "too big", ())
    assert cache.get(("query", None, "z" * 10_100, None), resolve) is None
    assert cache.get(("query", None, "4" * 3_000, None), resolve) == 4  # nothing evicted for it
    cache.put(("query", None, "4" * 3_000, None), 44, ())  # replacing an entry does not count it twice
    assert cache.get(("query", None, "3" * 3_000, None), resolve) == 3


def test_long_texts_are_not_lifted_nor_remembered(runtime) -> None:
    from engine.query.templates import MAX_LIFTED_TEXT

    padding = " " * MAX_LIFTED_TEXT
    sql = f"SELECT count(*) AS n FROM t_duckdb WHERE id > 3{padding}"
    assert runtime.query(sql).read_all().column(0)[0].as_py() == 6
    assert runtime.queries.lifts.get(sql) is None and runtime.queries.lifts.peek(sql) is None


def test_large_distinct_queries_keep_the_cache_within_its_text_budget(make_runtime, tmp_path, monkeypatch) -> None:
    """The hostile input itself, through a runtime: an agent sending large distinct queries (long
    IN lists) gets answers, and the plan cache holds no more SQL text than its budget."""
    monkeypatch.setenv("SATCHEL_PLAN_CACHE_TEXT", "60000")
    pod_dir = tmp_path / "budget"
    pod_dir.mkdir()
    rt = make_runtime(_pod(pod_dir, 10), pod_dir=pod_dir, start=True)
    assert rt.wait_ready(30)
    for i in range(5):
        values = ", ".join(str(j + i) for j in range(5_000))  # about 29,000 characters per text
        sql = f"SELECT count(*) AS n FROM t_duckdb WHERE id IN ({values})"
        assert rt.query(sql).read_all().column(0)[0].as_py() == 10 - i
        assert rt.queries.plans._text <= 60_000
    assert rt.queries.plans._text > 0  # the latest plans are still cached


def test_timestamps_in_lifted_lookups_are_read_as_postgresql_reads_them(make_runtime, tmp_path) -> None:
    """A lookup's timestamp written as PostgreSQL takes it (no seconds, `T`, `Z`, `+02`, ` UTC`,
    slashes) finds the same rows on every route, though DuckDB and DataFusion each read only
    some of these forms: planning rewrites them, and a template rewrites each value spliced in
    a timestamp's place (the first text makes the template, the next ones reuse it)."""
    import datetime as dt

    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    stamps = [dt.datetime(2024, 6, 1, h, m, tzinfo=dt.timezone.utc) for h in (8, 10, 12) for m in (0, 30)]
    pq.write_table(pa.table({"id": range(len(stamps)), "at": pa.array(stamps, pa.timestamp("us", "UTC")),
                             "local": pa.array([s.replace(tzinfo=None) for s in stamps], pa.timestamp("us"))}),
                   pod_dir / "e.parquet")
    rt = make_runtime("""
version: v1
kind: Spicepod
name: stamps
datasets:
  - from: file:e.parquet
    name: e_duckdb
    acceleration:
      engine: duckdb
  - from: file:e.parquet
    name: e_arrow
    acceleration:
      engine: arrow
  - from: file:e.parquet
    name: e_source
""", pod_dir=pod_dir, start=True)
    assert rt.wait_ready(30)
    written = {"2024-06-01 10:00": 10, "2024-06-01T10:30": 10.5, "2024-06-01 12:00:00Z": 12,
               "2024-06-01 10:00+02": 8, "2024-06-01 08:30 UTC": 8.5, "2024/06/01 12:30": 12.5}
    for table in ("e_duckdb", "e_arrow", "e_source"):
        for text, hour in written.items():
            want = [[8, 8.5, 10, 10.5, 12, 12.5].index(hour)]
            sql = f"SELECT id FROM {table} WHERE at = '{text}'"
            assert rt.query(sql).read_all().column("id").to_pylist() == want, (table, text)
        # a timestamp without time zone ignores a zone written with it, as PostgreSQL does
        got = rt.query(f"SELECT id FROM {table} WHERE local = '2024-06-01 10:00+02'").read_all()
        assert got.column("id").to_pylist() == [2], table
    # typed literals are lifted too (`CAST($1 AS TIMESTAMP)`): the same rows as each text planned alone
    typed = {"TIMESTAMPTZ '2024-06-01 10:00+02'": [0], "TIMESTAMPTZ '2024-06-01 12:00:00Z'": [4],
             "TIMESTAMP '2024-06-01 10:30'": [3], "TIMESTAMP '2024-06-01 12:30+02'": [5],
             "CAST('2024-06-01T08:30' AS TIMESTAMP)": [1], "'2024/06/01 10:00'::timestamp": [2]}
    for table in ("e_duckdb", "e_arrow", "e_source"):
        for column in ("local", "at"):
            for text, want in typed.items():
                if column == "local" and "TIMESTAMPTZ" in text:
                    continue  # a zoned value against a local time depends on the session's zone
                sql = f"SELECT id FROM {table} WHERE {column} = {text}"
                assert rt.query(sql).read_all().column("id").to_pylist() == want, (table, sql)
        dated = f"SELECT count(*) AS n FROM {table} WHERE local >= DATE '2024-06-0{{}}'"
        assert [rt.query(dated.format(d)).read_all().column("n")[0].as_py() for d in (1, 2, 1)] == [6, 0, 6], table
