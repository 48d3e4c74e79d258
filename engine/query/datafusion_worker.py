"""The federated engine's worker process: runs DataFusion queries one at a time, so the sidecar can
kill one at its deadline wherever it is (DataFusion has no cancel call, and a join that emits
many batches per input batch never yields to its scheduler), and a DataFusion crash or the
kernel's out-of-memory killer takes only the query it was running.

Protocol on one Unix stream socket (engine.query.workers is the other end), per query:
  request   a length-prefixed JSON object, sent with the descriptors of the shared-memory Arrow
            files it names (SCM_RIGHTS): {"sql", "partitions", "pool_bytes", "keep", "tables":
            [{"name", "fd": index, "key"?} | {"name", "parquet": path}]}. A file with a `key` (an
            accelerator's table) stays mapped for the next queries while its key is in `keep`
            (mapping afresh would fault every page in again); a request of `keep` alone, answered
            with nothing, only drops the other mappings
  header    {"ok": true} or {"error": text} (planning failed: no stream follows)
  stream    the result as an Arrow IPC stream, flushed batch by batch
  trailer   {"ok": true} or {"error": text} (execution failed after the batches sent)
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys
from typing import BinaryIO

from engine.process_exit import become_expendable, refuse_imports

if __name__ == "__main__":
    # datafusion imports pandas (optional to it and to pyarrow) though a worker never converts
    # to it: that was half of a worker's start (0.6 -> 0.3 s) and 27 MiB of its memory
    refuse_imports("pandas")

import pyarrow as pa  # noqa: E402
from datafusion import DataFrame, RuntimeEnvBuilder, SessionConfig, SessionContext, SQLOptions  # noqa: E402

from accel.shared_memory import mapped  # noqa: E402

from .engine_aggregates import register as register_aggregates  # noqa: E402
from .json_udfs import register as register_json_functions  # noqa: E402

SQL_OPTIONS = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
MAX_FDS = 253  # SCM_RIGHTS' limit per message
_LENGTH = struct.Struct("!I")


BATCH_ROWS = 32 * 1024  # DataFusion's 8192 made TPC-H SF1 8% slower in total (Q18 630 -> 469 ms)


def session(target_partitions: int, pool_bytes: int | None = None) -> SessionContext:
    config = SessionConfig().with_target_partitions(target_partitions).with_information_schema(False) \
        .with_batch_size(BATCH_ROWS)
    if pool_bytes is None:
        ctx = SessionContext(config)
    else:
        ctx = SessionContext(config, RuntimeEnvBuilder().with_disk_manager_os().with_fair_spill_pool(pool_bytes))
    register_json_functions(ctx)
    register_aggregates(ctx)
    return ctx


def planned(ctx: SessionContext, sql: str) -> DataFrame:
    """`sql` planned as a DataFrame whose schema is the one its batches have. DataFusion's own
    announces a set operation's schema before reconciling its branches' types (its first
    branch's), and its Arrow stream labels every batch with that schema: `SELECT smallint_col
    UNION ALL SELECT decimal_col` came back as SMALLINTs read from the decimals' bytes. The
    optimized plan has the reconciled types."""
    return ctx.create_dataframe_from_logical_plan(ctx.sql_with_options(sql, SQL_OPTIONS).optimized_logical_plan())


_PYTHON_ERROR = re.compile(r"PyErr \{ type: <class '[\w.]+'>, value: \w+\((?P<q>['\"])(?P<text>.*?)(?P=q)\), traceback")


def error_text(e: Exception) -> str:
    """DataFusion's error as text; one a Python function raised (json_udfs) as that function's
    message alone (DataFusion writes the exception's repr and traceback, which hold file paths)."""
    text = str(e)
    found = _PYTHON_ERROR.search(text)
    return f"{text[:found.start()].strip()} {found['text']}" if found else text


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.record_batch([pa.array([], f.type) for f in schema], schema=schema)


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return _LENGTH.pack(len(body)) + body


def read_frame(file: BinaryIO) -> dict:
    """One length-prefixed JSON message; EOFError when the other end is gone."""
    head = file.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("the federated engine's worker closed its socket")
    (size,) = _LENGTH.unpack(head)
    body = file.read(size)
    if len(body) < size:
        raise EOFError("the federated engine's worker closed its socket")
    return json.loads(body)


def _request(sock: socket.socket) -> tuple[dict, list[int]] | None:
    """The next request and its descriptors; None when the sidecar closed the socket. Reads
    exactly one message: its descriptors come with its first bytes, and the next message's
    must not be consumed with this one's."""
    head, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, MAX_FDS)
    body = _exactly(sock, _LENGTH.size - len(head)) if head else None
    if not head or body is None:
        for fd in fds:
            os.close(fd)
        return None
    (size,) = _LENGTH.unpack(head + body)
    data = _exactly(sock, size)
    if data is None:
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(data), fds


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            return None
        data += more
    return data


_MAPPED: dict[str, pa.Table] = {}  # accelerator tables by key, kept mapped between queries


def _keep(keys: list[str]) -> None:
    for key in set(_MAPPED) - set(keys):
        del _MAPPED[key]  # unmapped once no query of this process uses it


def _table(table: dict, fds: list[int]) -> pa.Table:
    key = table.get("key")
    if key is None:
        return mapped(fds[table["fd"]])
    if key not in _MAPPED:
        _MAPPED[key] = mapped(fds[table["fd"]])
    return _MAPPED[key]


def _run(request: dict, fds: list[int], out: BinaryIO) -> None:
    _keep(request.get("keep", []))
    if "sql" not in request:
        return
    ctx = session(request["partitions"], request["pool_bytes"])
    try:
        for table in request["tables"]:
            if "parquet" in table:
                ctx.register_parquet(table["name"], table["parquet"])
            else:
                data = _table(table, fds)
                # a zero-copy import (not `register_dataset`: a pyarrow dataset is scanned through
                # Python, several times slower); one partition keeps the table's row order, and
                # DataFusion still repartitions joins and aggregates over `partitions` cores
                ctx.register_record_batches(table["name"], [data.to_batches() or [empty_batch(data.schema)]])
        reader = pa.RecordBatchReader.from_stream(planned(ctx, request["sql"]))
    except Exception as e:  # DataFusion raises plain Exceptions for planning errors
        out.write(frame({"error": error_text(e)}))
        out.flush()
        return
    finally:
        for fd in fds:
            os.close(fd)  # the mappings outlive the descriptors
    out.write(frame({"ok": True}))
    error = None
    with pa.ipc.new_stream(out, reader.schema) as writer:
        try:
            for batch in reader:
                writer.write_batch(batch)
                out.flush()
        except Exception as e:
            error = error_text(e)
    out.write(frame({"error": error} if error else {"ok": True}))
    out.flush()


def main(argv: list[str]) -> int:
    become_expendable()
    sock = socket.socket(fileno=int(argv[1]))
    out = sock.makefile("wb")
    while (request := _request(sock)) is not None:
        _run(*request, out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (BrokenPipeError, ConnectionResetError):  # the sidecar went away mid-answer
        sys.exit(0)
