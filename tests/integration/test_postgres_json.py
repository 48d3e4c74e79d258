"""JSON and array columns of a PostgreSQL table, as agents query them: `payload ->> 'name'`,
`payload -> 'a' ->> 'b'`, `(payload ->> 'n')::int`, `'x' = ANY(tags)`, `unnest(tags) AS tag`.
Over the live table, a query that reads into a json/jsonb column only with JSON operators and
functions goes down whole to PostgreSQL; on the DuckDB-accelerated copy DuckDB reads the JSON
text, and on the Arrow-accelerated one the federated engine does, with DuckDB's JSON functions.
Each gives PostgreSQL's answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_pod
from engine.errors import SqlError
from engine.runtime import Runtime
from tests.integration.postgres_server import PgServer, postgres_server  # noqa: F401
from tests.integration.test_postgres_semantics import pod_yaml, run, same_as_postgres

pytestmark = pytest.mark.integration

ROWS = """(1, '{"name": "a", "n": 3, "nested": {"b": "x"}, "arr": [1, 2, 3], "k": 1}', '{"m": 1}', ARRAY['x', 'y']),
          (2, '{"name": "b", "n": 10, "nested": {"b": "y"}, "arr": [], "flag": true}', '{"m": 2}', ARRAY['y', NULL]),
          (3, NULL, NULL, NULL),
          (4, '{"name": null, "n": "7"}', '{}', ARRAY[]::text[])"""


AGENT_KEY = "json-agent-key-1"
POLICY = f"""runtime:
  auth:
    api_key:
      enabled: true
      keys: ["admin-key-1"]
    principals:
      - name: json_agent
        keys: ["{AGENT_KEY}"]
        datasets:
          - name: docs_fed
            columns: {{payload: hash}}
"""


@pytest.fixture(scope="module")
def runtime(postgres_server: PgServer, tmp_path_factory) -> Runtime:
    server = postgres_server
    server.execute("DROP TABLE IF EXISTS public.docs",
                   "CREATE TABLE public.docs (id int PRIMARY KEY, payload jsonb, meta json, tags text[])",
                   f"INSERT INTO public.docs VALUES {ROWS}", "GRANT SELECT ON public.docs TO satchel")
    directory = Path(tmp_path_factory.mktemp("docs_pod"))
    (directory / "spicepod.yaml").write_text(pod_yaml(server, "public.docs", "docs") + POLICY)
    rt = Runtime(load_pod(directory / "spicepod.yaml"), data_dir=str(directory / ".satchel"))
    rt.start()
    assert rt.wait_ready(30), rt.status()
    yield rt
    rt.stop()


JSON_READS = [
    "payload ->> 'name'", "payload -> 'nested' ->> 'b'", "(payload ->> 'n')::int", "meta ->> 'm'",
    "payload -> 'arr' -> 0", "(payload ->> 'flag')::boolean", "coalesce(payload ->> 'name', '?')",
    "jsonb_array_length(payload -> 'arr')", "payload::text",
    "payload #>> '{{nested,b}}'", "payload #>> ARRAY['arr', '1']", "(payload #> ARRAY['nested']) ->> 'b'",
    "jsonb_typeof(payload -> 'n')", "jsonb_typeof(payload)", "json_typeof(meta -> 'm')", "jsonb_typeof(payload -> 'flag')",
    "payload -> 'name' #>> '{{}}'", "payload -> 'arr' ->> -1", "payload -> 'arr' ->> (1)", "json_extract_path_text(meta, 'm')",
]
CONTAINMENT = [  # jsonb's @>, <@, ?, ?| and ?&, as PostgreSQL defines them (objects at any depth, scalars in arrays)
    """payload @> '{{"name": "a"}}'""", """payload @> '{{"n": 3}}'""", """payload @> '{{"n": 3.0}}'""",
    """payload @> '{{"n": "7"}}'""", """payload @> '{{"nested": {{"b": "x"}}}}'""", """payload @> '{{"nested": {{}}}}'""",
    """payload @> '{{"arr": [1, 3]}}'""", """payload @> '{{"arr": [4]}}'""", """payload @> '{{}}'""",
    """payload @> '{{"name": null}}'""", """payload @> '{{"flag": true}}'""", """payload -> 'arr' @> '2'""",
    """payload -> 'arr' @> '[2, 1]'""", """'{{"k": 1}}' <@ payload""", """meta::jsonb @> '{{"m": 1}}'""",
    "payload ? 'flag'", "payload ? 'zzz'", "payload -> 'arr' ? 'x'", "payload ?| ARRAY['flag', 'k']",
    "payload ?& ARRAY['name', 'k']", """payload @> '{{"arr": {{"x": 1}}}}'""", """payload @> '{{"name": {{"x": 1}}}}'""",
    """payload @> '{{"nested": {{"b": "x", "c": null}}}}'""", """payload @> '[]'""", """payload -> 'arr' @> '[]'""",
]
ARRAYS = ["'x' = ANY(tags)", "NOT ('y' = ANY(tags))", "'z' <> ALL(tags)", "array_length(tags, 1)", "cardinality(tags)",
          "tags[1]", "array_to_string(tags, ',')"]
QUERIES = [
    "SELECT payload ->> 'name' AS n, count(*) AS c FROM {t} GROUP BY 1 ORDER BY 1 NULLS FIRST",
    "SELECT id, payload, payload ->> 'name' AS n FROM {t} WHERE meta IS NOT NULL ORDER BY id",
    "SELECT id FROM {t} WHERE payload ->> 'name' = 'a'",
    "SELECT id FROM {t} WHERE (payload ->> 'n')::int > 5 ORDER BY id",
    "SELECT id FROM {t} WHERE NOT ('y' = ANY(tags)) ORDER BY id",
    "SELECT tag, count(*) AS c FROM {t}, unnest(tags) AS tag GROUP BY tag ORDER BY tag NULLS FIRST",
    "SELECT d.id, tag FROM {t} d CROSS JOIN LATERAL unnest(d.tags) AS tag ORDER BY 1, 2",
]


def _same_as_postgres(rt: Runtime, server: PgServer, sql: str, tables: tuple[str, ...]) -> None:
    same_as_postgres(rt, server, sql, tables, source="public.docs")


@pytest.mark.parametrize("sql", [f"SELECT id, {e} AS v FROM {{t}} ORDER BY id" for e in JSON_READS + CONTAINMENT]
                         + QUERIES[:4] + ["""SELECT id FROM {t} WHERE payload @> '{{"nested": {{"b": "y"}}}}'"""])
def test_json_reads_answer_as_postgres(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    """On the DuckDB-accelerated copy (DuckDB's JSON functions), the Arrow-accelerated one (the
    same functions in the federated engine) and the live table (PostgreSQL)."""
    _same_as_postgres(runtime, postgres_server, sql, ("docs", "docs_arrow", "docs_fed"))


@pytest.mark.parametrize("sql", [f"SELECT id, {e} AS v FROM {{t}} ORDER BY id" for e in ARRAYS] + QUERIES[4:])
def test_array_columns_answer_as_postgres(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    """A NULL list is NULL to `= ANY` (DuckDB said false, and NOT (...) kept the row)."""
    _same_as_postgres(runtime, postgres_server, sql, ("docs", "docs_arrow", "docs_fed"))


SPREADS = [
    "SELECT DISTINCT jsonb_object_keys(payload) AS k FROM {t} ORDER BY 1",
    "SELECT id, jsonb_array_elements_text(payload -> 'arr') AS e FROM {t} ORDER BY 1, 2",
    "SELECT id, jsonb_array_elements(payload -> 'arr') AS e, json_object_keys(meta) AS m FROM {t} ORDER BY 1, 2",
    "SELECT k, count(*) AS c FROM (SELECT jsonb_object_keys(payload) AS k FROM {t}) x GROUP BY k ORDER BY k",
]


@pytest.mark.parametrize("sql", SPREADS)
def test_json_spread_into_rows_in_a_select_list(runtime: Runtime, postgres_server: PgServer, sql: str) -> None:
    """jsonb_object_keys and jsonb_array_elements(_text) in a select list, as an agent explores
    an unknown JSON column; in FROM, the error says to write them so."""
    _same_as_postgres(runtime, postgres_server, sql, ("docs", "docs_arrow", "docs_fed"))
    with pytest.raises(SqlError, match=r"spread JSON into rows in the select list: SELECT t.id, "
                                       r"jsonb_array_elements_text\(t.payload -> 'tags'\) AS tag FROM t"):
        run(runtime, "SELECT d.id, e FROM docs_arrow d, jsonb_array_elements_text(d.payload -> 'arr') AS e")


def test_json_reads_go_down_whole_and_other_uses_stay(runtime: Runtime) -> None:
    """Reading into the JSON is PostgreSQL's work on the JSON value; comparing or ordering the
    column itself would compare jsonb, not the text the other routes have, and stays here."""
    def explain(sql: str) -> str:
        return "\n".join(run(runtime, "EXPLAIN " + sql).column("plan").to_pylist())

    pushed = explain("SELECT id, payload ->> 'name' AS n FROM docs_fed WHERE (payload ->> 'n')::int > 5")
    assert "pushed down whole" in pushed and "->> 'name'" in pushed, pushed
    shown = explain("SELECT id, payload, payload ->> 'name' AS n FROM docs_fed WHERE meta IS NOT NULL")
    assert "pushed down whole" in shown, shown  # output as it is, and NULL tests, mean the same there
    for sql in ("SELECT id FROM docs_fed WHERE payload ->> 'name' = 'a' ORDER BY payload",
                "SELECT DISTINCT payload, payload ->> 'name' AS n FROM docs_fed",
                "SELECT payload, payload ->> 'name' AS n FROM docs_fed ORDER BY 1"):
        assert "pushed down whole" not in explain(sql), sql
    assert run(runtime, "SELECT id FROM docs_fed WHERE meta::text = '{}'").to_pylist() == [{"id": 4}]


def test_what_the_federated_engine_lacks_says_where_it_runs(runtime: Runtime, postgres_server: PgServer) -> None:
    """On the Arrow-accelerated copy (DataFusion) a JSON read with a key that is not constant, a
    JSON operator or a function it lacks fails naming it, and saying where it does run."""
    with pytest.raises(SqlError) as json_read:
        run(runtime, "SELECT payload ->> (id::text) AS n FROM docs_arrow")
    assert "JSON operator ->> runs in the federated engine" in str(json_read.value)
    assert "only with a constant key" in str(json_read.value) and "engine: duckdb" in str(json_read.value)
    with pytest.raises(SqlError, match="the JSON operator @> runs in the federated engine .* only with constant JSON "
                                       "whose arrays list only scalars"):
        run(runtime, """SELECT id FROM docs_arrow WHERE payload @> '{"arr": [{"k": 1}]}'""")
    with pytest.raises(SqlError) as function:
        run(runtime, "SELECT quote_ident(payload ->> 'name') AS m FROM docs_arrow")
    assert str(function.value).startswith("query failed in the federated engine: function quote_ident() does not exist")
    assert "live PostgreSQL tables" in str(function.value)
    sql = """SELECT id FROM {t} WHERE payload @> '{{"arr": [{{"k": 1}}]}}'"""  # as written, where the whole query runs
    _same_as_postgres(runtime, postgres_server, sql, ("docs_fed",))


def test_what_duckdb_lacks_says_where_it_runs(runtime: Runtime, postgres_server: PgServer) -> None:
    """On the DuckDB-accelerated copy, a PostgreSQL function DuckDB lacks, and a containment it
    cannot write, fail saying they run over live PostgreSQL tables (DuckDB said "Scalar Function
    with name jsonb_pretty does not exist!", "No function matches ... '@>(VARCHAR, ...)'")."""
    with pytest.raises(SqlError, match=r"^function jsonb_pretty\(\) does not exist in DuckDB .*; did you mean "
                                       r"json_pretty\(\)\?; it runs over live PostgreSQL tables"):
        run(runtime, "SELECT jsonb_pretty(payload) AS p FROM docs")
    with pytest.raises(SqlError, match=r"^function strpos2\(\) does not exist in DuckDB [^;]*; did you mean strpos\(\)\?$"):
        run(runtime, "SELECT strpos2(payload, 'a') AS p FROM docs")
    with pytest.raises(SqlError, match=r"^the JSON operator @> runs in DuckDB only with constant JSON whose arrays "
                                       r"list only scalars .*; it runs as written over live PostgreSQL tables$"):
        run(runtime, """SELECT id FROM docs WHERE payload @> '{"arr": [{"k": 1}]}'""")
    with pytest.raises(SqlError, match=r"^the JSON operator \? runs in DuckDB only with constant keys .*; it runs as "
                                       r"written over live PostgreSQL tables$"):
        run(runtime, "SELECT id FROM docs WHERE payload ? (id::text)")
    _same_as_postgres(runtime, postgres_server, "SELECT id, jsonb_pretty(payload) AS p FROM {t} ORDER BY id", ("docs_fed",))


def test_json_reads_in_a_query_across_sources(runtime: Runtime, postgres_server: PgServer) -> None:
    """A join of the Arrow-accelerated copy and the live table runs in the federated engine,
    reading the JSON on both sides."""
    got = run(runtime, "SELECT a.id, l.payload -> 'nested' ->> 'b' AS b FROM docs_arrow a "
                       "JOIN docs_fed l ON a.payload ->> 'name' = l.payload ->> 'name' ORDER BY 1")
    assert got.to_pylist() == [{"id": 1, "b": "x"}, {"id": 2, "b": "y"}]
    explain = "\n".join(run(runtime, "EXPLAIN SELECT payload -> 'nested' ->> 'b' AS b FROM docs_arrow")
                        .column("plan").to_pylist())
    assert """JSON_EXTRACT_STRING("docs_arrow"."payload", '$."nested"."b"')""" in explain, explain  # one read


def test_a_masked_json_column_is_never_read_into_in_postgres(runtime: Runtime) -> None:
    """Under a mask the column is its hash: the query stays here, where a JSON operator cannot
    read into a hash, rather than reading the JSON itself in PostgreSQL."""
    agent = runtime.authenticate(AGENT_KEY)
    sql = "SELECT id, payload ->> 'name' AS n FROM docs_fed ORDER BY id"
    explain = "\n".join(runtime.query("EXPLAIN " + sql, agent).read_all().column("plan").to_pylist())
    assert "pushed down whole" not in explain, explain
    with pytest.raises(SqlError) as failed:
        runtime.query(sql, agent).read_all()
    assert "a value read as JSON is not JSON (Malformed JSON" in str(failed.value)
    assert hashed_text(runtime, agent) not in str(failed.value)  # no value in the error
    hashed = hashed_text(runtime, agent)
    assert hashed is not None and "name" not in hashed


def hashed_text(runtime: Runtime, agent) -> str | None:
    return runtime.query("SELECT payload FROM docs_fed WHERE id = 1", agent).read_all().column(0)[0].as_py()
