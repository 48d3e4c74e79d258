"""Embedding columns (Spice's `columns[].embeddings`, chunking included) with the real
all-MiniLM-L6-v2: vectors are computed at refresh into the accelerator, only for rows that are
new or whose text changed (full, append), and a file-mode DuckDB keeps them across a restart
(no model call after it). Each model call is an `embeddings` row in runtime.task_history."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from engine.config import Chunking
from engine.search.chunking import chunks

REVIEWS = [
    (1, "The battery lasts all day and charges quickly.", "2024-01-01"),
    (2, "Screen cracked after one week, very disappointed with the build quality.", "2024-01-02"),
    (3, "Great sound from these headphones, deep bass and clear highs.", "2024-01-03"),
    (4, "Shipping was slow but the customer service team was helpful.", "2024-01-04"),
    (5, "This cookbook has delicious pasta recipes for weeknight dinners.", "2024-01-05"),
]


def _csv(rows) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["review_id", "body", "created_at"])
    w.writerows(rows)
    return out.getvalue()


def _pod(engine: str, mode: str = "memory", refresh_mode: str = "full", chunking: str = "") -> str:
    return f"""
version: v1
kind: Spicepod
name: embed_cols
embeddings:
  - from: huggingface:huggingface.co/sentence-transformers/all-MiniLM-L6-v2
    name: minilm
datasets:
  - from: file:reviews.csv
    name: reviews
    time_column: created_at
    columns:
      - name: body
        embeddings:
          - from: minilm
            row_id: review_id
{chunking}
    acceleration:
      enabled: true
      engine: {engine}
      mode: {mode}
      refresh_mode: {refresh_mode}
      primary_key: review_id
      params:
        refresh_min_interval: 0s
"""


def _embedded(server) -> int:
    """Texts (chunks) embedded so far: the `rows` of every embeddings call."""
    rows = server.sql("SELECT coalesce(sum(rows), 0) AS n FROM runtime.task_history "
                      "WHERE task = 'embeddings' AND error IS NULL").json()
    return int(rows[0]["n"])


def _vectors(server) -> int:
    info = next(d for d in httpx.get(f"{server.http_url}/v1/datasets").json() if d["name"] == "reviews")
    return info["embeddings"][0]["vectors"]


def _refresh(server) -> dict:
    r = httpx.post(f"{server.http_url}/v1/datasets/reviews/acceleration/refresh", timeout=60)
    assert r.status_code in (200, 201, 202), r.text
    return r.json()


def _wait_refreshed(server, count: int) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = next(d for d in httpx.get(f"{server.http_url}/v1/datasets").json() if d["name"] == "reviews")
        if info["refresh_count"] >= count and info["status"] == "ready":
            assert info["last_error"] is None, info["last_error"]
            return
        time.sleep(0.1)
    raise AssertionError("refresh did not finish")


@pytest.mark.llm
@pytest.mark.integration
def test_duckdb_file_mode_embeds_only_changes_and_keeps_vectors_across_a_restart(satchel_server, tmp_path) -> None:
    pod_dir, data_dir = tmp_path / "pod", tmp_path / "data"
    server = satchel_server(_pod("duckdb", "file"), files={"reviews.csv": _csv(REVIEWS)}, pod_dir=pod_dir,
                            data_dir=data_dir, timeout=120)
    assert _embedded(server) == 5 and _vectors(server) == 5
    changed = [r for r in REVIEWS if r[0] != 3]  # 3 deleted
    changed[0] = (1, "The battery died after two days.", "2024-01-01")  # 1 changed
    changed.append((6, "Comfortable running shoes with good grip.", "2024-01-06"))  # 6 new
    (pod_dir / "reviews.csv").write_text(_csv(changed))
    _refresh(server)
    _wait_refreshed(server, 2)
    assert _embedded(server) == 5 + 2  # the changed row and the new one, nothing else
    assert _vectors(server) == 5
    server.stop()

    again = satchel_server(_pod("duckdb", "file"), pod_dir=pod_dir, data_dir=data_dir, timeout=120)
    info = next(d for d in httpx.get(f"{again.http_url}/v1/datasets").json() if d["name"] == "reviews")
    assert info["refresh_count"] == 0  # reopened from the file, not reloaded
    assert _vectors(again) == 5 and _embedded(again) == 0  # no model call after the restart
    _refresh(again)
    _wait_refreshed(again, 1)
    assert _embedded(again) == 0  # nothing changed: nothing embedded


@pytest.mark.llm
@pytest.mark.integration
def test_arrow_append_embeds_only_new_rows_and_chunks_long_text(satchel_server, tmp_path) -> None:
    chunking = """            chunking:
              enabled: true
              target_chunk_size: 12
              overlap_size: 2"""
    long = " ".join(f"word{i}" for i in range(30))  # 30 words -> chunks of 12 overlapping by 2: 3 chunks
    rows = REVIEWS[:4] + [(5, long, "2024-01-05")]
    pod_dir = tmp_path / "pod"
    server = satchel_server(_pod("arrow", refresh_mode="append", chunking=chunking),
                            files={"reviews.csv": _csv(rows)}, pod_dir=pod_dir, timeout=120)
    assert _embedded(server) == 4 + 3  # texts embedded: the short ones (up to 11 words) are one chunk each
    assert _vectors(server) == 7
    (pod_dir / "reviews.csv").write_text(_csv(rows + [(6, "Comfortable running shoes.", "2024-01-06")]))
    _refresh(server)
    _wait_refreshed(server, 2)
    assert _embedded(server) == 8  # the appended row only (the overlap re-reads row 5: same text, kept)
    assert _vectors(server) == 8


def test_chunks() -> None:
    on = Chunking(enabled=True, target_chunk_size=3, overlap_size=1)
    assert chunks("one two", on) == ["one two"]
    assert chunks("a b c d e f g", on) == ["a b c", "c d e", "e f g"]
    assert chunks("  a  b c d  ", Chunking(enabled=True, target_chunk_size=2, overlap_size=0)) == ["a  b", "c d"]
    assert chunks("a b c", Chunking(enabled=False, target_chunk_size=1)) == ["a b c"]
    assert chunks("a b c d", None) == ["a b c d"]
    assert chunks("", on) == [""]
    keep = Chunking(enabled=True, target_chunk_size=2, overlap_size=0, trim_whitespace=False)
    assert chunks("a b c d", keep) == ["a b ", "c d"]
