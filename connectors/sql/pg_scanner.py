"""A refresh's full read of a large PostgreSQL table through DuckDB's postgres extension (the
wheel `duckdb-extension-postgres`), in a private in-memory DuckDB that only ever runs the one
statement built here, in a process of its own (pg_scanner_process) that streams Arrow IPC back:
the extension is native code, and a crash in it ends that process and fails the refresh, never
the sidecar.

Why: the ADBC PostgreSQL driver spends about four times the CPU the extension does decoding
binary COPY (its wheel's decoder shows un-inlined helpers in a profile), and a refresh shares its
cores with PostgreSQL's own backends. The extension reads the table on several connections in
one exported snapshot (the same consistency as pg_parallel), so a refresh from PostgreSQL runs at
DuckDB's own `CREATE TABLE AS` speed within a few percent (bench/refresh_postgres.py).

Only when every column comes out as exactly the Arrow type the connector announces (checked on
the bound statement's schema, before any row is read); anything else, filtered reads and small
tables keep the ADBC path, and so does a source the extension cannot connect to
(ExtensionUnavailable: it brings its own libpq). The private database is locked down after ATTACH (no file access, no
further ATTACH, no configuration changes). Its connections carry the connector's session options
(read-only, UTC), an application_name of the read's own (a cancelled or dropped read cancels its
statements by that name: DuckDB's interrupt is not seen by a thread blocked in libpq) and, on
PostgreSQL 14+, `client_connection_check_interval`, so a backend whose connection went away stops
within a second even while it waits for a lock.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import re
import shutil
import secrets
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import weakref
from pathlib import Path
from typing import Callable, Iterator, Sequence

import adbc_driver_postgresql.dbapi as adbc_pg
import duckdb
import pyarrow as pa

from engine.process_exit import describe_exit, worker_env

from ..base import CALLER
from ..sql_render import quote_ident
from .pg_scanner_process import FAILED, UNAVAILABLE, sql_text

log = logging.getLogger("satchel.connectors.sql.pg_scanner")

BATCH_ROWS = 122_880  # one DuckDB row group: the accelerator's load re-cuts nothing
MEMORY_LIMIT = "256MB"  # a streamed scan holds a few vectors per thread
CHECK_INTERVAL_MS = 1000
PIPE_BYTES = 1 << 20  # the process's stream: a few batches' columns per read, not 64 KiB
EXIT_WAIT_SECONDS = 5.0  # after its stream ends, a process that has not exited is killed
ERROR_BYTES = 4000
_F_SETPIPE_SZ = 1031

# PostgreSQL types the extension reads as the Arrow types the connector announces for them.
SCANNED_TYPES = frozenset({"int2", "int4", "int8", "float4", "float8", "bool", "text", "varchar", "date",
                           "timestamp", "timestamptz", "numeric"})

_COPY = re.compile(r'"COPY \(.*\) TO STDOUT \(FORMAT "?binary"?\);?"', re.DOTALL)
_EXTENSION_LOCK = threading.Lock()
_extension: list[str | None] = []  # [path], once looked up


def extension_path() -> str | None:
    """The extension's file under the name DuckDB requires (`postgres_scanner.duckdb_extension`,
    linked once per process), or None when its wheel is not installed."""
    with _EXTENSION_LOCK:
        if not _extension:
            _extension.append(_link_extension())
        return _extension[0]


def _link_extension() -> str | None:
    try:
        import duckdb_extension_postgres
    except ImportError:
        return None
    built = Path(duckdb_extension_postgres.__file__).parent / "extensions" / f"v{duckdb.__version__}" \
        / "postgres.duckdb_extension"
    if not built.is_file():
        return None
    directory = tempfile.mkdtemp(prefix="satchel-pg-scanner-")
    atexit.register(shutil.rmtree, directory, True)
    path = os.path.join(directory, "postgres_scanner.duckdb_extension")
    try:
        os.symlink(built, path)
    except OSError:
        shutil.copyfile(built, path)
    return path


def scanner_uri(uri: str, application_name: str, check_interval: bool) -> str:
    """The connector's libpq URI with this read's own application_name (how its sessions are
    found to be cancelled) and, where the server has it (PostgreSQL 14+),
    `client_connection_check_interval` added to its options."""
    parts = urllib.parse.urlsplit(uri)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "application_name"]
    if check_interval:
        query = [(k, f"{v} -c client_connection_check_interval={CHECK_INTERVAL_MS}" if k == "options" else v)
                 for k, v in query]
    query.append(("application_name", application_name))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote)))


def _application_name(uri: str) -> str:
    """The connector's application_name (who connects) and a token naming this read."""
    given = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(uri).query)).get("application_name", "satchel")
    return f"{given[:48]} scan-{secrets.token_hex(6)}"


class ExtensionUnavailable(Exception):
    """The extension could not load or reach the source (its own libpq, its own TLS build): the
    connector reads through ADBC instead."""


class ScanFailed(Exception):
    """The read failed: the source's error, or the scanner's process ended (`crashed`: killed by
    a signal the sidecar did not send)."""

    def __init__(self, message: str, crashed: bool = False) -> None:
        super().__init__(message)
        self.crashed = crashed


class ScannerRead:
    """`SELECT <names> FROM <schema>.<table>` on `threads` connections, in a process of its own
    (pg_scanner_process: the extension's native code cannot take the sidecar down); `open()`
    starts it and returns its reader, or None when the schema the extension gives is not `out`'s
    (the caller then reads through ADBC). Once a reader is handed out, `release` gives the
    caller's gate slots back when the read ends, fails or is dropped; the task's cancel scope
    stops it. Errors reach the reader's consumer as `error(ScanFailed)`."""

    def __init__(self, uri: str, schema_name: str, table_name: str, names: Sequence[str], out: pa.Schema,
                 threads: int, release: Callable[[], None], error: Callable[[ScanFailed], Exception],
                 check_interval: bool) -> None:
        self._uri, self._schema_name, self._table_name = uri, schema_name, table_name
        self._names, self._out, self._threads = list(names), out, threads
        self._release, self._error, self._check_interval = release, error, check_interval
        self._proc: subprocess.Popen | None = None
        self._closed = threading.Lock()
        self._reading = False  # open() handed out a reader: closing it gives the slots back
        self._done = False  # the reader reached its end
        self._cancelled = False  # by the task's cancel scope
        self._application_name = _application_name(uri)

    def open(self, extension: str) -> pa.RecordBatchReader | None:
        """Raises ExtensionUnavailable when the extension cannot reach the source at all, else
        ScanFailed (the caller words both without secrets)."""
        try:
            self._start(extension)
            scope = CALLER.get().scope
            if scope is not None:
                scope.add(self._cancel)
            try:
                reader = pa.ipc.open_stream(self._proc.stdout)  # its schema: the statement is bound
            except (pa.ArrowException, OSError):
                raise self._failure() from None
        except BaseException:
            self.close()
            raise
        if [f.type for f in reader.schema] != [f.type for f in self._out]:
            self.close()
            return None
        self._reading = True
        batches = self._batches(reader)
        weakref.finalize(batches, self.close)  # dropped unread
        return pa.RecordBatchReader.from_batches(self._out, batches)

    def _start(self, extension: str) -> None:
        left = CALLER.get().seconds_left()
        columns = ", ".join(quote_ident(n) for n in self._names)
        request = {"extension": extension, "threads": self._threads, "memory_limit": MEMORY_LIMIT,
                   "uri": scanner_uri(self._uri, self._application_name, self._check_interval),
                   "schema": self._schema_name, "batch_rows": BATCH_ROWS,
                   "timeout_ms": None if left is None else max(1, int(left * 1000)),
                   "sql": f"SELECT {columns} FROM pg.{quote_ident(self._schema_name)}.{quote_ident(self._table_name)}"}
        errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty process never blocks on it
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "connectors.sql.pg_scanner_process"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                          bufsize=PIPE_BYTES, start_new_session=True, env=worker_env())
        except OSError as e:
            errors.close()
            raise ScanFailed(f"could not start the postgres extension's process ({e.strerror or e})") from None
        except BaseException:
            errors.close()
            raise
        self._errors = errors
        try:
            fcntl.fcntl(self._proc.stdout.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:  # a smaller pipe only means more, smaller reads
            pass
        try:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.close()
        except OSError:  # it ended already; how shows when its stream is read
            pass

    def _batches(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        try:
            try:
                for batch in reader:
                    yield pa.RecordBatch.from_arrays(batch.columns, schema=self._out)
            except (pa.ArrowException, OSError):
                raise self._failure() from None
            if self._exit_code() != 0:  # the stream ended without its process finishing the read
                raise self._failure()
            self._done = True
        except GeneratorExit:
            raise
        except ScanFailed as e:
            raise self._error(e) from None
        finally:
            self.close()

    def _exit_code(self) -> int:
        try:
            return self._proc.wait(EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()

    def _failure(self) -> Exception:
        """Why the read's stream ended early: the cancel, the source's error, or how the process
        ended."""
        code = self._exit_code()
        self._errors.seek(0)
        said = _COPY.sub("reading the table", self._errors.read(ERROR_BYTES).decode("utf-8", "replace")).strip()
        if self._cancelled:
            return ScanFailed("canceling statement: the task was cancelled")
        if code == UNAVAILABLE:
            return ExtensionUnavailable(said)
        if code != FAILED or not said:
            return ScanFailed(f"the postgres extension's process ended ({describe_exit(code)})", crashed=code < 0)
        return ScanFailed(said)

    def _cancel(self) -> None:
        """The task was cancelled: end the process, and the statements its connections may have
        left running in PostgreSQL."""
        proc = self._proc
        if proc is None or self._closed.locked():
            return
        self._cancelled = True
        _kill(proc)
        threading.Thread(target=self._cancel_backends, name="satchel-pg-scan-cancel", daemon=True).start()

    def _cancel_backends(self) -> None:
        """pg_cancel_backend on this read's sessions (a role may cancel its own), from a session of
        its own: a backend learns of its client's end only when it next writes or checks."""
        try:
            with adbc_pg.connect(self._uri, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = "
                            f"'{sql_text(self._application_name)}' AND pid <> pg_backend_pid()")
                cur.fetchall()
        except Exception as e:  # noqa: BLE001 - the sessions end with their connections anyway
            log.warning("could not cancel a PostgreSQL read's statements (%s)", type(e).__name__)

    def close(self) -> None:
        """End the process (its connections close, so their backends stop) and, once a reader was
        handed out, give the gate slots back; once."""
        if not self._closed.acquire(blocking=False):
            return
        try:
            proc = self._proc
            if proc is not None:
                if proc.poll() is None:
                    _kill(proc)
                    if self._reading and not self._done:  # ended early: its statements may still run
                        self._cancel_backends()
                proc.wait()
                proc.stdout.close()
                self._errors.close()
        finally:
            if self._reading:
                self._release()


def _kill(proc: subprocess.Popen) -> None:
    try:
        proc.kill()
    except ProcessLookupError:
        pass
