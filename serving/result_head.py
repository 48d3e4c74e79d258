"""The head of a result: its first batches, read before the response starts, and whether they
are the whole of it. A small whole result (most of an agent's) is then sent in one go; a
larger one streams on from where the head ended."""

from __future__ import annotations

import pyarrow as pa

HEAD_BATCHES = 2


def head(reader: pa.RecordBatchReader) -> tuple[list[pa.RecordBatch], bool]:
    """Up to HEAD_BATCHES batches of `reader`, and whether they are the whole result."""
    batches: list[pa.RecordBatch] = []
    for batch in reader:
        batches.append(batch)
        if len(batches) == HEAD_BATCHES:
            return batches, False
    return batches, True
