"""The search table functions vector_search / text_search / rrf in SQL, with the real
all-MiniLM-L6-v2, on a DuckDB-accelerated dataset (HNSW and BM25 from the vss/fts wheels) and
the same data on the Arrow accelerator, over HTTP and Flight SQL (ADBC). Results are checked
against exact answers computed here: cosine similarity of /v1/embeddings vectors, DuckDB's BM25 run
directly on the raw file, and the RRF formula over the two searches."""

from __future__ import annotations

import adbc_driver_flightsql.dbapi as adbc
import duckdb
import httpx
import numpy as np
import pytest

from accel.search import extension_path
from tests.engine import search_corpus

pytestmark = [pytest.mark.llm, pytest.mark.integration]


def _dataset(name: str, engine: str, mode: str = "memory") -> str:
    return f"""
  - from: file:reviews.csv
    name: {name}
    columns:
      - name: body
        embeddings:
          - from: minilm
        full_text_search:
          enabled: true
    acceleration:
      enabled: true
      engine: {engine}
      mode: {mode}
      primary_key: review_id
"""


POD = f"""
version: v1
kind: Spicepod
name: search_pod
embeddings:
  - from: huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2
    name: minilm
datasets:
{_dataset("reviews", "duckdb", "file")}
{_dataset("reviews_arrow", "arrow")}
  - from: file:topics.csv
    name: topics
  - from: file:reviews.csv
    name: plain_reviews
"""


@pytest.fixture(scope="module")
def server(module_satchel_server):
    return module_satchel_server(POD, files={"reviews.csv": search_corpus.csv_text(),
                                             "topics.csv": search_corpus.TOPICS_CSV}, timeout=120)


def _sql(server, query: str) -> list[dict]:
    r = server.sql(query)
    assert r.status_code == 200, r.text
    return r.json()


def _embed(server, texts: list[str]) -> np.ndarray:
    r = httpx.post(f"{server.http_url}/v1/embeddings", json={"model": "minilm", "input": texts}, timeout=60)
    return np.array([d["embedding"] for d in r.json()["data"]])


@pytest.mark.parametrize("dataset", ["reviews", "reviews_arrow"])
def test_vector_search_matches_exact_cosine_ranking(server, dataset) -> None:
    corpus = search_corpus.rows()
    vectors = _embed(server, [r[1] for r in corpus])
    for question in ("my phone battery does not last", "loud music with strong bass", "package arrived late"):
        q = _embed(server, [question])[0]
        exact = np.argsort(-(vectors @ q))[:5]
        got = _sql(server, f"SELECT review_id, _score FROM vector_search({dataset}, '{question}', limit => 5)")
        assert [r["review_id"] for r in got] == [corpus[i][0] for i in exact], question
        assert np.allclose([r["_score"] for r in got], (vectors @ q)[exact], atol=1e-4)


def test_vector_search_options_and_joins(server) -> None:
    rows = _sql(server, "SELECT * FROM vector_search(reviews, 'running shoes', 3)")
    assert len(rows) == 3 and set(rows[0]) == {"review_id", "body", "topic", "created_at", "_score"}
    assert rows[0]["topic"] == "shoes"
    no_score = _sql(server, "SELECT * FROM vector_search(reviews, 'running shoes', column => 'body', limit => 2, "
                            "include_score => false)")
    assert len(no_score) == 2 and "_score" not in no_score[0]
    joined = _sql(server, "SELECT v.review_id, t.owner, v._score FROM vector_search(reviews, 'headphones', limit => 4) v "
                          "JOIN topics t ON t.topic = v.topic WHERE t.owner = 'team_audio' ORDER BY v._score DESC")
    assert joined and all(r["owner"] == "team_audio" for r in joined)
    # with a live (federated) table and an accelerated one in the same query
    mixed = _sql(server, "SELECT count(*) AS n FROM vector_search(reviews, 'kitchen tools', limit => 5) v "
                         "JOIN plain_reviews p USING (review_id) JOIN reviews r USING (review_id)")
    assert mixed == [{"n": 5}]
    hybrid = _sql(server, "SELECT a.review_id FROM vector_search(reviews, 'bass', limit => 3) a "
                          "JOIN vector_search(reviews_arrow, 'bass', limit => 3) b USING (review_id)")
    assert len(hybrid) == 3


@pytest.mark.parametrize("dataset", ["reviews", "reviews_arrow"])
def test_text_search_is_duckdb_bm25_over_the_column(server, dataset, tmp_path) -> None:
    con = duckdb.connect()
    con.execute(f"LOAD '{extension_path('fts')}'")
    con.execute("CREATE TABLE r (review_id BIGINT, body VARCHAR)")
    con.executemany("INSERT INTO r VALUES (?, ?)", [(r[0], r[1]) for r in search_corpus.rows()])
    con.execute("PRAGMA create_fts_index('r', 'review_id', 'body', stemmer = 'porter', stopwords = 'english', "
                "lower = 1, strip_accents = 1)")
    for question in ("bass", "battery charger", "water rain boots"):
        expected = con.execute("SELECT review_id, score FROM (SELECT review_id, fts_main_r.match_bm25(review_id, ?) "
                               "AS score FROM r) WHERE score IS NOT NULL ORDER BY score DESC, review_id LIMIT 4",
                               [question]).fetchall()
        got = _sql(server, f"SELECT review_id, _score FROM text_search({dataset}, '{question}', limit => 4) "
                           f"ORDER BY _score DESC, review_id")
        assert [(r["review_id"], round(r["_score"], 6)) for r in got] == \
            [(i, round(s, 6)) for i, s in expected], question
    assert _sql(server, f"SELECT * FROM text_search({dataset}, 'zzzunknownword')") == []


def test_rrf_fuses_the_two_rankings(server) -> None:
    v = _sql(server, "SELECT review_id FROM vector_search(reviews, 'battery charging', limit => 5)")
    t = _sql(server, "SELECT review_id FROM text_search(reviews, 'battery charging', limit => 5)")
    expected: dict[int, float] = {}
    for ranking in (v, t):
        for rank, row in enumerate(ranking, start=1):
            expected[row["review_id"]] = expected.get(row["review_id"], 0.0) + 1 / (60 + rank)
    got = _sql(server, "SELECT review_id, fused_score FROM rrf(vector_search(reviews, 'battery charging', limit => 5), "
                       "text_search(reviews, 'battery charging', limit => 5), join_key => 'review_id', k => 60, "
                       "limit => 20) ORDER BY fused_score DESC, review_id")
    assert {r["review_id"]: round(r["fused_score"], 9) for r in got} == \
        {k: round(s, 9) for k, s in expected.items()}
    top = _sql(server, "SELECT review_id, body FROM rrf(vector_search(reviews, 'battery charging'), "
                       "text_search(reviews, 'battery charging')) LIMIT 1")
    assert "batter" in top[0]["body"].lower()


def test_search_over_flight_sql_with_a_parameter(server) -> None:
    with adbc.connect(server.flight_uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT review_id, topic, _score FROM vector_search(reviews, ?, limit => 3)",
                    ("the parcel was lost by the courier",))
        table = cur.fetch_arrow_table()
    assert table.num_rows == 3 and table.column("topic").to_pylist()[0] == "delivery"
    assert table.schema.field("_score").type == "double"


def test_search_errors(server) -> None:
    cases = {
        "SELECT * FROM vector_search(nope, 'x')": (404, "unknown dataset 'nope'"),
        "SELECT * FROM vector_search(reviews, 'x', column => 'topic')": (400, "columns with it: body"),
        "SELECT * FROM vector_search(reviews, 'x', limit => 5000)": (400, "maximum of 1000"),
        "SELECT * FROM vector_search(reviews, 'x', limit => 0)": (400, "positive integer"),
        "SELECT * FROM vector_search(reviews, body)": (400, "must be a constant"),
        "SELECT * FROM vector_search(reviews, 'x', colour => 'red')": (400, "unknown argument 'colour'"),
        "SELECT * FROM vector_search(plain_reviews, 'x')": (400, "has no search index"),
        "SELECT * FROM text_search(topics, 'x')": (400, "has no search index"),
        "SELECT * FROM rrf(vector_search(reviews, 'x'))": (400, "two or more"),
        "SELECT * FROM rrf(vector_search(reviews, 'x'), text_search(reviews_arrow, 'x'))": (400, "same dataset"),
        "SELECT * FROM rrf(vector_search(reviews, 'x'), text_search(reviews, 'x'), join_key => 'nope')":
            (400, "join_key column 'nope'"),
    }
    for query, (status, text) in cases.items():
        r = server.sql(query)
        assert r.status_code == status and text in r.json()["error"]["message"], (query, r.text)
    history = _sql(server, "SELECT count(*) AS n FROM runtime.task_history WHERE query_text LIKE '%colour%' "
                           "AND error_code = 'sql_error'")
    assert history == [{"n": 1}]


def test_explain_names_the_index_that_answers(server) -> None:
    plan = [r["plan"] for r in _sql(server, "EXPLAIN SELECT * FROM vector_search(reviews, 'x', limit => 2)")]
    assert any("vector_search(reviews.body, limit 2): HNSW index (vss, cosine) in the duckdb accelerator" in p
               for p in plan), plan
    plan = [r["plan"] for r in _sql(server, "EXPLAIN SELECT * FROM rrf(vector_search(reviews_arrow, 'x'), "
                                            "text_search(reviews_arrow, 'x'))")]
    assert any("rrf of vector_search(reviews_arrow.body, limit 10): HNSW index" in p and
               "text_search(reviews_arrow.body, limit 10): BM25 index (fts)" in p for p in plan), plan
