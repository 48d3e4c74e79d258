"""A refresh's full read of a large PostgreSQL table through DuckDB's postgres extension (the
wheel `duckdb-extension-postgres`), in a private in-memory DuckDB that only ever runs the one
statement built here.

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
import logging
import os
import re
import shutil
import secrets
import tempfile
import threading
import urllib.parse
import weakref
from pathlib import Path
from typing import Callable, Iterator, Sequence

import adbc_driver_postgresql.dbapi as adbc_pg
import duckdb
import pyarrow as pa

from ..base import CALLER
from ..sql_render import quote_ident

log = logging.getLogger("satchel.connectors.sql.pg_scanner")

BATCH_ROWS = 122_880  # one DuckDB row group: the accelerator's load re-cuts nothing
MEMORY_LIMIT = "256MB"  # a streamed scan holds a few vectors per thread
CHECK_INTERVAL_MS = 1000

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


class ScannerRead:
    """`SELECT <names> FROM <schema>.<table>` on `threads` connections; `open()` binds it and
    returns its reader, or None when the schema the extension gives is not `out`'s (the caller
    then reads through ADBC). Once a reader is handed out, `release` gives the caller's gate
    slots back when the read ends, fails or is dropped; the task's cancel scope stops it. Errors
    reach the reader's consumer as `error(e)`."""

    def __init__(self, uri: str, schema_name: str, table_name: str, names: Sequence[str], out: pa.Schema,
                 threads: int, release: Callable[[], None], error: Callable[[BaseException], Exception],
                 check_interval: bool) -> None:
        self._uri, self._schema_name, self._table_name = uri, schema_name, table_name
        self._names, self._out, self._threads = list(names), out, threads
        self._release, self._error, self._check_interval = release, error, check_interval
        self._con: duckdb.DuckDBPyConnection | None = None
        self._closed = threading.Lock()
        self._reading = False  # open() handed out a reader: closing it gives the slots back
        self._done = False  # the reader reached its end
        self._cancelled = False  # by the task's cancel scope
        self._application_name = _application_name(uri)

    def open(self, extension: str) -> pa.RecordBatchReader | None:
        """Raises ExtensionUnavailable when the extension cannot reach the source at all, else
        duckdb.Error (the caller words both without secrets)."""
        try:
            con = self._attach(extension)
        except duckdb.Error as e:
            self.close()
            raise ExtensionUnavailable(str(self.reason(e))) from None
        except BaseException:
            self.close()
            raise
        try:
            scope = CALLER.get().scope
            if scope is not None:
                scope.add(self._cancel)
            columns = ", ".join(quote_ident(n) for n in self._names)
            reader = con.execute(f"SELECT {columns} FROM pg.{quote_ident(self._schema_name)}."
                                 f"{quote_ident(self._table_name)}").to_arrow_reader(BATCH_ROWS)
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

    def _attach(self, extension: str) -> duckdb.DuckDBPyConnection:
        """The private database, connected to the source and locked down."""
        con = self._con = duckdb.connect(":memory:", config={
            "autoinstall_known_extensions": False, "autoload_known_extensions": False,
            "threads": self._threads, "memory_limit": MEMORY_LIMIT, "preserve_insertion_order": False})
        con.execute("SET TimeZone = 'UTC'")  # timestamptz as timestamp[us, UTC]
        con.execute(f"LOAD '{_sql_text(extension)}'")
        con.execute(f"SET pg_pool_max_connections = {self._threads}")
        con.execute(f"SET pg_connection_limit = {self._threads}")
        left = CALLER.get().seconds_left()
        if left is not None:
            con.execute(f"SET pg_statement_timeout_millis = {max(1, int(left * 1000))}")
        uri = scanner_uri(self._uri, self._application_name, self._check_interval)
        con.execute(f"ATTACH '{_sql_text(uri)}' AS pg (TYPE postgres, READ_ONLY, "
                    f"SCHEMA '{_sql_text(self._schema_name)}')")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    def _batches(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                yield pa.RecordBatch.from_arrays(batch.columns, schema=self._out)
            self._done = True
        except GeneratorExit:
            raise
        except Exception as e:  # noqa: BLE001 - duckdb and libpq errors, worded by the connector
            raise self._error(self.reason(e)) from None
        finally:
            self.close()

    def reason(self, e: BaseException) -> BaseException:
        """What to tell of `e`: the cancel when there was one, else the error without the COPY
        statement DuckDB quotes in it."""
        if self._cancelled:
            return RuntimeError("canceling statement: the task was cancelled")
        return RuntimeError(_COPY.sub("reading the table", str(e)))

    def _cancel(self) -> None:
        """The task was cancelled: stop DuckDB, and the statements a thread may be blocked on in
        libpq (DuckDB's interrupt is only seen between chunks)."""
        con = self._con
        if con is None or self._closed.locked():
            return
        self._cancelled = True
        try:
            con.interrupt()
        except duckdb.Error:  # closed meanwhile
            pass
        threading.Thread(target=self._cancel_backends, name="satchel-pg-scan-cancel", daemon=True).start()

    def _cancel_backends(self) -> None:
        """pg_cancel_backend on this read's sessions (a role may cancel its own), from a session of
        its own: the read's connections are busy."""
        try:
            with adbc_pg.connect(self._uri, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = "
                            f"'{_sql_text(self._application_name)}' AND pid <> pg_backend_pid()")
                cur.fetchall()
        except Exception as e:  # noqa: BLE001 - the sessions end with the database's close anyway
            log.warning("could not cancel a PostgreSQL read's statements (%s)", type(e).__name__)

    def close(self) -> None:
        """Close the private database (its connections end, so their backends stop) and, once a
        reader was handed out, give the gate slots back; once."""
        if not self._closed.acquire(blocking=False):
            return
        try:
            if self._con is not None:
                self._con.interrupt()
                if self._reading and not self._done:  # ended early: its threads may be blocked in libpq
                    self._cancel_backends()
                self._con.close()
        finally:
            if self._reading:
                self._release()


def _sql_text(text: str) -> str:
    if "\x00" in text:
        raise ValueError("text holds a NUL character")
    return text.replace("'", "''")
