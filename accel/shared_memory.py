"""Arrow tables in anonymous shared-memory files (Linux memfd): the sidecar reads them in place,
and a process handed the file descriptor (the federated engine's worker) maps the same pages
without a copy. No file system is involved, so a container's small /dev/shm does not limit them,
and the memory is freed when the last descriptor and mapping go, whoever is killed.

Layout. DataFusion (arrow-rs) needs a decimal's 16-byte values 16-byte aligned, and copies every
buffer that is not when a table is handed to it: per query, and for every column of the table,
not only those it reads. Arrow's IPC file aligns buffers to 8 bytes only (pyarrow has no option
for more), which left about half of them misaligned. So a table is written as its IPC messages,
each placed where its body starts on a 64-byte boundary, with the decimal columns first in each
body (fixed-size buffers, so they stay aligned), and an index at the end of the file:

    schema message | record batch message, padded to 64 ... | index (JSON) | index size | MAGIC

A table with dictionary-encoded columns (their messages need the dictionaries' own) is written as
a plain Arrow IPC file, which `mapped` reads as well.
"""

from __future__ import annotations

import json
import os
import struct
import weakref
from typing import BinaryIO, Iterable

import pyarrow as pa

MAGIC = b"SATCHEL1"
ALIGNMENT = 64
_SIZE = struct.Struct("<Q")


class SharedTable:
    """An Arrow table mapped from a file in shared memory; `fd` stays open while this object
    lives, so it can be passed to another process (SCM_RIGHTS)."""

    __slots__ = ("table", "fd", "key", "__weakref__")

    def __init__(self, table: pa.Table, fd: int) -> None:
        self.table = table
        self.fd = fd
        info = os.fstat(fd)
        self.key = f"{info.st_dev}:{info.st_ino}"  # names this file in another process's cache of mappings
        weakref.finalize(self, os.close, fd)


def share(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> SharedTable:
    """Write `batches` to a new shared-memory file and map it. Each batch is copied to the file as
    it comes, so a stream never needs to be held in memory twice."""
    fd = os.memfd_create("satchel-arrow", os.MFD_CLOEXEC)
    try:
        with pa.OSFile(_path(fd), "wb") as sink:
            if _has_dictionary(schema):
                with pa.ipc.new_file(sink, schema) as writer:
                    for batch in batches:
                        writer.write_batch(batch)
            else:
                _write_aligned(sink, schema, batches)
        return SharedTable(mapped(fd), fd)
    except BaseException:
        os.close(fd)
        raise


def share_table(table: pa.Table) -> SharedTable:
    return share(table.schema, table.to_batches())


def mapped(fd: int) -> pa.Table:
    """The table in shared-memory file `fd`, read in place (the mapping outlives `fd`)."""
    data = pa.memory_map(_path(fd)).read_buffer()
    if data.size < len(MAGIC) + _SIZE.size or data[-len(MAGIC):].to_pybytes() != MAGIC:
        return pa.ipc.open_file(data).read_all()
    end = data.size - len(MAGIC) - _SIZE.size
    (size,) = _SIZE.unpack(data[end:end + _SIZE.size].to_pybytes())
    index = json.loads(data[end - size:end].to_pybytes())
    stored = pa.ipc.read_schema(data.slice(*index["schema"]))
    back = sorted(range(len(index["order"])), key=index["order"].__getitem__)  # stored position of each column
    schema = pa.schema([stored.field(i) for i in back], metadata=stored.metadata)
    batches = [pa.ipc.read_record_batch(data.slice(*where), stored).select(back) for where in index["batches"]]
    return pa.Table.from_batches(batches, schema=schema)


def _write_aligned(sink: BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> None:
    order = sorted(range(len(schema)), key=lambda i: not pa.types.is_decimal(schema.field(i).type))
    stored = pa.schema([schema.field(i) for i in order], metadata=schema.metadata)
    message = stored.serialize()
    sink.write(message)
    index: dict = {"order": order, "schema": [0, message.size], "batches": []}
    for batch in batches:
        message = batch.select(order).serialize()
        header = message.size - pa.ipc.read_message(message).body.size
        start = -(-(sink.tell() + header) // ALIGNMENT) * ALIGNMENT - header
        sink.write(bytes(start - sink.tell()))
        sink.write(message)
        index["batches"].append([start, message.size])
    text = json.dumps(index).encode()
    sink.write(text)
    sink.write(_SIZE.pack(len(text)))
    sink.write(MAGIC)


def _has_dictionary(schema: pa.Schema) -> bool:
    def holds(t: pa.DataType) -> bool:
        return pa.types.is_dictionary(t) or any(holds(t.field(i).type) for i in range(t.num_fields))
    return any(holds(f.type) for f in schema)


def _path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"
