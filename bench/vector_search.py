"""Vector search quality and speed: the HNSW index Satchel builds for an embedding column against
an exact (brute-force) scan of the same vectors, in the same run.

A corpus of N rows (default 100,000) of 384-dimension unit vectors (all-MiniLM-L6-v2's size)
drawn around 2,000 topics, as sentence embeddings cluster; queries are held-out points near the
corpus. Both searches go through `accel.search.SearchStore.vector_search` (the code
`vector_search()` and `POST /v1/search` run), approximate and `exact=True`. Reports recall@10 of
the approximate search against the exact one, and p50/p90 latency of each.

Computing 100k real embeddings with the local model takes hours on 2 cores, so the vectors are
synthetic; the index, its options and the query path are the product's.

    /tmp/venv/bin/python bench/vector_search.py [--rows 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, table, write_results  # noqa: E402

from accel.search import IndexSpec, SearchStore, load_extensions  # noqa: E402

DIM = 384
TOPICS = 2000
K = 10


def corpus(rows: int, queries: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((TOPICS, DIM)).astype(np.float32)
    points = centres[rng.integers(0, TOPICS, rows + queries)] + 0.35 * rng.standard_normal((rows + queries, DIM)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points[:rows], points[rows:]


def build(vectors: np.ndarray) -> tuple[SearchStore, IndexSpec, float]:
    con = duckdb.connect(":memory:")
    load_extensions(con)
    rows = len(vectors)
    docs = pa.table({"id": pa.array(np.arange(rows, dtype=np.int64)),
                     "body": pa.array([f"doc {i}" for i in range(rows)])})
    con.register("docs_src", docs)
    con.execute("CREATE TABLE docs AS SELECT * FROM docs_src")
    con.unregister("docs_src")
    store = SearchStore(con, threading.Lock(), lambda cur, ds: ds)
    spec = IndexSpec("vector", "docs", "body", ("id",), "bench")
    flat = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), DIM)
    side = pa.table({"id": docs["id"], "__digest": docs["body"], "__chunk": pa.array(np.zeros(rows, np.int32)),
                     "__text": docs["body"], "__vector": flat})
    started = time.perf_counter()
    for offset in range(0, rows, 10_000):  # as refreshes write them: batch by batch into the indexed table
        store.write_vectors(spec, side.slice(offset, 10_000))
    return store, spec, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    vectors, queries = corpus(args.rows, args.queries)
    store, spec, build_s = build(vectors)
    assert store.uses_index(spec, DIM), "DuckDB did not plan the search with the HNSW index"
    approx_ms, exact_ms, recalls = [], [], []
    for q in queries:  # alternate, so machine noise hits both alike
        started = time.perf_counter()
        approx = store.vector_search(spec, q.tolist(), K)
        approx_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        exact = store.vector_search(spec, q.tolist(), K, exact=True)
        exact_ms.append((time.perf_counter() - started) * 1000)
        recalls.append(len(set(approx["id"].to_pylist()) & set(exact["id"].to_pylist())) / K)

    recall = sum(recalls) / len(recalls)
    rows = [["HNSW (vector_search)", f"{recall:.3f}", f"{percentile(approx_ms, 50):.1f}", f"{percentile(approx_ms, 90):.1f}"],
            ["exact scan", "1.000", f"{percentile(exact_ms, 50):.1f}", f"{percentile(exact_ms, 90):.1f}"]]
    ratio = percentile(exact_ms, 50) / percentile(approx_ms, 50)
    body = (f"{args.rows:,} vectors of {DIM} dimensions, {args.queries} queries, top {K}; index built in "
            f"{build_s:.1f} s.\n\n" + table(["search", f"recall@{K}", "p50 ms", "p90 ms"], rows)
            + f"\n\nHNSW p50 is {ratio:.1f}x faster than the exact scan; recall@{K} {recall:.3f} "
              f"(target: at least 0.95).")
    print(body)
    write_results("vector_search", "Vector search: HNSW vs exact scan", body, [
        ("HNSW p50 speed vs exact scan", f"{ratio:.1f}x", "> 1x"), (f"HNSW recall@{K}", f"{recall:.3f}", ">= 0.95")])


if __name__ == "__main__":
    main()
