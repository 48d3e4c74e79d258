"""The process one read through DuckDB's postgres extension runs in (pg_scanner starts it).

The extension is native code that holds libpq connections; a crash in it (SIGSEGV) inside the
sidecar would end the sidecar. Here it ends this process only: the refresh fails, saying how
the process ended, and the sidecar keeps serving the last good data.

Protocol: the request, one JSON line on stdin (it holds the source's credentials, so it is
never an argument); the result, an Arrow IPC stream on stdout. Exit code 0 only after the whole
stream was written; on failure the message goes to stderr and the code says whose: 2 the
read's (the source's error), 3 the extension could not load or reach the source.
"""

from __future__ import annotations

import json
import os
import sys

from engine.process_exit import become_expendable

FAILED, UNAVAILABLE = 2, 3
PIPE_WRITE_BYTES = 1 << 20


def sql_text(text: str) -> str:
    """`text` inside a SQL string literal."""
    if "\x00" in text:
        raise ValueError("text holds a NUL character")
    return text.replace("'", "''")


def _fail(code: int, message: str) -> None:
    sys.stderr.write(message)
    sys.stderr.flush()
    os._exit(code)  # no teardown: the stream must not look finished


def _attach(request: dict):
    """The private database, connected to the source and locked down."""
    import duckdb

    threads = int(request["threads"])
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "threads": threads, "memory_limit": request["memory_limit"], "preserve_insertion_order": False})
    con.execute("SET TimeZone = 'UTC'")  # timestamptz as timestamp[us, UTC]
    con.execute(f"LOAD '{sql_text(request['extension'])}'")
    con.execute(f"SET pg_pool_max_connections = {threads}")
    con.execute(f"SET pg_connection_limit = {threads}")
    if request.get("timeout_ms"):
        con.execute(f"SET pg_statement_timeout_millis = {int(request['timeout_ms'])}")
    con.execute(f"ATTACH '{sql_text(request['uri'])}' AS pg (TYPE postgres, READ_ONLY, "
                f"SCHEMA '{sql_text(request['schema'])}')")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def main() -> int:
    become_expendable()
    request = json.loads(sys.stdin.readline())
    import duckdb
    import pyarrow as pa

    try:
        con = _attach(request)
    except duckdb.Error as e:
        _fail(UNAVAILABLE, str(e))
    try:
        reader = con.execute(request["sql"]).to_arrow_reader(int(request["batch_rows"]))
        # buffered: a raw pipe write may be short. No `with`: a failed read must not end its
        # stream as if whole.
        out = os.fdopen(sys.stdout.fileno(), "wb", buffering=PIPE_WRITE_BYTES, closefd=False)
        stream = pa.ipc.new_stream(out, reader.schema)
        for batch in reader:
            stream.write_batch(batch)
        stream.close()
        out.flush()
    except BrokenPipeError:
        os._exit(1)  # the sidecar stopped reading: nobody is left to tell
    except Exception as e:  # noqa: BLE001 - duckdb and libpq errors, worded by the sidecar
        _fail(FAILED, str(e))
    os._exit(0)  # the stream is whole; DuckDB's teardown has nothing left to add


if __name__ == "__main__":
    main()
