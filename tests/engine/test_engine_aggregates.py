"""The federated engine's mode() (engine.query.engine_aggregates), straight in DataFusion: the
most frequent value across batches and partitions, ties to the first in order, NULLs ignored."""

from __future__ import annotations

import pyarrow as pa

from engine.query.datafusion_worker import session


def _modes(batches: list[pa.RecordBatch], partitions: int) -> list[dict]:
    ctx = session(partitions)
    half = len(batches) // 2
    ctx.register_record_batches("t", [batches[:half], batches[half:]])
    return ctx.sql("SELECT g, satchel_mode_bigint(x, false) AS lo, satchel_mode_bigint(x, true) AS hi, "
                   "satchel_mode_varchar(s, false) AS s FROM t GROUP BY g ORDER BY g").to_pylist()


def test_mode_across_batches_and_partitions() -> None:
    # group 0: 7 three times (spread over batches), 1 and 9 twice; group 1: 4 and 5 tie; group 2: only NULLs
    rows = [(0, 7, "b"), (0, 1, "a"), (1, 5, "y"), (0, 7, "b"), (2, None, None), (0, 9, "a"), (1, 4, "x"),
            (0, 1, None), (0, 7, "c"), (0, 9, None), (1, None, "x")]
    batches = [pa.record_batch({"g": pa.array([r[0] for r in rows[i:i + 3]], pa.int64()),
                                "x": pa.array([r[1] for r in rows[i:i + 3]], pa.int64()),
                                "s": pa.array([r[2] for r in rows[i:i + 3]], pa.string())})
               for i in range(0, len(rows), 3)]
    want = [{"g": 0, "lo": 7, "hi": 7, "s": "a"}, {"g": 1, "lo": 4, "hi": 5, "s": "x"},
            {"g": 2, "lo": None, "hi": None, "s": None}]
    assert _modes(batches, 1) == _modes(batches, 2) == want
