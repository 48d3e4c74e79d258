"""A result's next batches converted on a thread of their own while the consumer handles the
current one: DuckDB's conversion of a chunk to Arrow then overlaps the transport's encoding and
sending of the previous one (one thread did both in turn), which a large result's throughput
is made of. Results of one or two batches (most of an agent's queries) start no thread."""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

import pyarrow as pa

DEPTH = 2  # batches converted ahead: a bounded few, whatever the result's size
_END = object()


def read_ahead(reader: pa.RecordBatchReader, interrupt: Callable[[], None]) -> Iterator[pa.RecordBatch]:
    """`reader`'s batches, from the third on read by a helper thread (at most DEPTH ahead).
    Its errors are raised here, as they were raised there. Abandoned early, the helper is
    stopped (`interrupt` ends a conversion in progress) and joined before this returns, so the
    caller may then close what the reader reads from."""
    for _ in range(2):
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
    ahead: queue.Queue = queue.Queue(maxsize=DEPTH)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for batch in reader:
                if not put(batch):
                    return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - raised again in the consuming thread
            put(e)

    helper = threading.Thread(target=pump, name="satchel-read-ahead", daemon=True)
    helper.start()
    finished = False
    try:
        while True:
            item = ahead.get()
            if item is _END:
                finished = True
                return
            if isinstance(item, BaseException):
                finished = True
                raise item
            yield item
    finally:
        if not finished:
            stop.set()
            interrupt()
        helper.join()
