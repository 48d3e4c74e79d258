"""The federated engine's JSON functions (engine.query.json_udfs): DuckDB's answers, over every
Arrow string type, many batches on several threads, and errors that quote neither the value
nor a file of ours."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from engine.query.datafusion_worker import error_text, session

DOCS = ['{"name": "a", "n": 3, "nested": {"b": [1, 2]}, "arr": [1, 2, 3]}', None, '{"name": null, "n": "7"}',
        '[10, 20]', '"text"', '{"a.b": {"c\\"d": 5}}']
CALLS = ["json_extract(j, '$.\"nested\"')", "json_extract_string(j, '$.\"nested\".\"b\"[1]')",
         "json_extract_string(j, '$.\"name\"')", "json_extract_string(j, '$[#-1]')", "json_extract_string(j, '$')",
         "json_extract_string(j, '$.\"a.b\".\"c\\\"d\"')", "json_extract(j, '/nested/b/0')", "json_type(j)",
         "json_type(json_extract(j, '$.\"n\"'))", "json_array_length(j)", "json_array_length(json_extract(j, '$.\"arr\"'))"]


def _duckdb_answer(call: str) -> list:
    relation = duckdb.connect().from_arrow(pa.table({"j": pa.array(DOCS)}))
    return [row[0] for row in relation.project(f"{call}::VARCHAR").fetchall()]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.string_view()], ids=str)
@pytest.mark.parametrize("call", CALLS)
def test_each_function_gives_duckdbs_answer(call: str, kind: pa.DataType) -> None:
    ctx = session(2)
    ctx.register_record_batches("docs", [[pa.record_batch({"j": pa.array(DOCS, kind)})]])
    got = ctx.sql(f"SELECT CAST({call} AS VARCHAR) AS v FROM docs").to_arrow_table().column("v").to_pylist()
    assert got == _duckdb_answer(call)


def test_many_batches_on_several_threads() -> None:
    """DataFusion calls the functions from each of its threads at once; each call gets its own
    cursor, and the sums are those of one thread."""
    batches = [pa.record_batch({"j": pa.array([f'{{"n": {i}, "g": "{i % 3}"}}' for i in range(k, k + 5000)])})
               for k in range(0, 100_000, 5000)]
    answers = []
    for partitions in (1, 2):
        ctx = session(partitions)
        ctx.register_record_batches("docs", [batches[: len(batches) // 2], batches[len(batches) // 2:]])
        answers.append(ctx.sql("SELECT json_extract_string(j, '$.\"g\"') AS g, sum(CAST(json_extract_string(j, "
                               "'$.\"n\"') AS BIGINT)) AS s FROM docs GROUP BY 1 ORDER BY 1").to_pylist())
    assert answers[0] == answers[1] == [{"g": str(g), "s": sum(i for i in range(100_000) if i % 3 == g)}
                                        for g in range(3)]


def test_a_value_that_is_not_json_fails_without_quoting_it() -> None:
    ctx = session(1)
    ctx.register_record_batches("docs", [[pa.record_batch({"j": pa.array(['{"a": 1}', "secret-value-123"])})]])
    with pytest.raises(Exception) as failed:
        ctx.sql("SELECT json_extract_string(j, '$.\"a\"') FROM docs").to_arrow_table()
    text = error_text(failed.value)
    assert "a value read as JSON is not JSON (Malformed JSON at byte 0" in text, text
    assert "secret-value-123" not in text and "Traceback" not in text and ".py" not in text, text


def test_containment_by_a_needle_given_directly() -> None:
    """satchel_jsonb_contains / satchel_jsonb_has_key (what `@>` and `?` become) with any constant: its DuckDB
    expression is built from the parsed needle (its keys and values are literals there, never
    SQL), and a needle that is not JSON fails saying so."""
    ctx = session(1)
    ctx.register_record_batches("docs", [[pa.record_batch({"j": pa.array(DOCS)})]])
    got = ctx.sql("""SELECT satchel_jsonb_contains(j, '{"a.b": {"c\\"d": 5}}') AS c, satchel_jsonb_has_key(j, 'name') AS k,
                     satchel_jsonb_contains(j, '{"x''); DROP TABLE t; --": 1}') AS odd FROM docs""").to_pylist()
    assert [r["c"] for r in got] == [False, None, False, False, False, True]
    assert [r["k"] for r in got] == [True, None, True, False, False, False]
    assert [r["odd"] for r in got] == [False, None, False, False, False, False]
    with pytest.raises(Exception) as failed:
        ctx.sql("SELECT satchel_jsonb_contains(j, '{not json') FROM docs").to_arrow_table()
    assert "satchel_jsonb_contains(): its second argument is not JSON" in error_text(failed.value)
