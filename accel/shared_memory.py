"""Arrow tables in anonymous shared-memory files (Linux memfd): the sidecar reads them in place,
and a process handed the file descriptor (the federated engine's worker) maps the same pages
without a copy. No file system is involved, so a container's small /dev/shm does not limit them,
and the memory is freed when the last descriptor and mapping go, whoever is killed."""

from __future__ import annotations

import os
import weakref
from typing import Iterable

import pyarrow as pa


class SharedTable:
    """An Arrow table mapped from an Arrow IPC file in shared memory; `fd` stays open while
    this object lives, so it can be passed to another process (SCM_RIGHTS)."""

    __slots__ = ("table", "fd", "key", "__weakref__")

    def __init__(self, table: pa.Table, fd: int) -> None:
        self.table = table
        self.fd = fd
        info = os.fstat(fd)
        self.key = f"{info.st_dev}:{info.st_ino}"  # names this file in another process's cache of mappings
        weakref.finalize(self, os.close, fd)


def share(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> SharedTable:
    """Write `batches` to a new shared-memory Arrow IPC file and map it. Each batch is copied
    once as it comes, so a stream never needs to be held in memory twice."""
    fd = os.memfd_create("satchel-arrow", os.MFD_CLOEXEC)
    try:
        with pa.OSFile(_path(fd), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        return SharedTable(mapped(fd), fd)
    except BaseException:
        os.close(fd)
        raise


def share_table(table: pa.Table) -> SharedTable:
    return share(table.schema, table.to_batches())


def mapped(fd: int) -> pa.Table:
    """The table in shared-memory file `fd`, read in place (the mapping outlives `fd`)."""
    return pa.ipc.open_file(pa.memory_map(_path(fd))).read_all()


def _path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"
