"""`satchel sql`: a small Flight SQL client (pyarrow.flight) that prints results as tables."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Iterable

import pyarrow as pa
from pyarrow import flight

from google.protobuf import any_pb2

from engine.errors import SatchelError

from .flight_sql import flight_sql_pb2 as pb


def pack(message) -> bytes:
    """A Flight SQL command as the serialized `google.protobuf.Any` servers expect."""
    wrapper = any_pb2.Any()
    wrapper.Pack(message)
    return wrapper.SerializeToString()


def connect(address: str, api_key: str | None, tls_root_certs: str | None) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
    scheme = "grpc+tls" if tls_root_certs else "grpc+tcp"
    location = address if "://" in address else f"{scheme}://{address}"
    kwargs = {}
    if tls_root_certs:
        with open(tls_root_certs, "rb") as f:
            kwargs["tls_root_certs"] = f.read()
    client = flight.FlightClient(location, **kwargs)
    headers = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else []
    return client, flight.FlightCallOptions(headers=headers)


def fetch(client: flight.FlightClient, options: flight.FlightCallOptions, sql: str) -> pa.Table:
    """Run one statement and collect its (streamed) endpoints."""
    descriptor = flight.FlightDescriptor.for_command(pack(pb.CommandStatementQuery(query=sql)))
    info = client.get_flight_info(descriptor, options)
    tables = [client.do_get(ep.ticket, options).read_all() for ep in info.endpoints]
    return pa.concat_tables(tables) if tables else info.schema.empty_table()


def run_one(args: argparse.Namespace) -> int:
    client, options = connect(args.flight, args.api_key, args.tls_root_certs)
    try:
        table = fetch(client, options, args.query)
    except pa.ArrowException as e:  # Flight errors, and ArrowInvalid/ArrowKeyError/... for
        raise SatchelError(_message(e)) from None  # INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED
    _print_table(table, args.format, args.max_rows, args.query.lstrip().lower().startswith("explain"))
    return 0


HELP = """\
  \\d           list datasets and views       \\d NAME    columns of one
  \\dt          list datasets (tables only)   \\x         expanded display on/off
  \\timing      statement timing on/off       \\q         quit (or Ctrl-D)
  \\?           this help
End SQL with ';'. Ctrl-C cancels the running statement, or clears the line being typed."""


class InfoCalls:
    """GetFlightInfo over grpcio, whose calls can be cancelled (pyarrow's cannot): planning may
    wait on a source, and a cancelled call makes the server cancel that source work."""

    def __init__(self, address: str, api_key: str | None, tls_root_certs: str | None) -> None:
        import grpc

        target = address.split("://", 1)[-1]
        if tls_root_certs:
            with open(tls_root_certs, "rb") as f:
                self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(f.read()))
        else:
            self.channel = grpc.insecure_channel(target)
        self.call = self.channel.unary_unary("/arrow.flight.protocol.FlightService/GetFlightInfo")
        self.metadata = [("authorization", f"Bearer {api_key}")] if api_key else []

    def start(self, descriptor: flight.FlightDescriptor):  # -> grpc.Future
        return self.call.future(descriptor.serialize(), metadata=self.metadata)


class Cancelled(Exception):
    """The statement was cancelled (Ctrl-C)."""


class Statement:
    """One statement on a worker thread, so that the prompt's thread can cancel it (Ctrl-C):
    cancelling its GetFlightInfo call or its DoGet stream makes the server cancel the source work."""

    def __init__(self, client: flight.FlightClient, options: flight.FlightCallOptions, sql: str,
                 info_calls: InfoCalls) -> None:
        self.client, self.options, self.sql, self.info_calls = client, options, sql, info_calls
        self._call = None  # the GetFlightInfo call while it runs
        self.table: pa.Table | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._reader: flight.FlightStreamReader | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="satchel-sql", daemon=True)

    def result(self) -> pa.Table:
        """Run to the end (KeyboardInterrupt while it runs: cancelled, then re-raised)."""
        self._thread.start()
        try:
            while self._thread.is_alive():
                self._thread.join(0.1)
        except KeyboardInterrupt:
            self.cancel()
            self._thread.join(2)  # planning (GetFlightInfo) cannot be cancelled: not waited for
            raise
        if self.error is not None:
            raise self.error
        assert self.table is not None
        return self.table

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._call is not None:
                self._call.cancel()
            if self._reader is not None:
                self._reader.cancel()

    def _run(self) -> None:
        import grpc

        try:
            descriptor = flight.FlightDescriptor.for_command(pack(pb.CommandStatementQuery(query=self.sql)))
            with self._lock:
                if self._cancelled:
                    raise Cancelled()
                self._call = self.info_calls.start(descriptor)
            try:
                info = flight.FlightInfo.deserialize(self._call.result())
            except grpc.FutureCancelledError:
                raise Cancelled() from None
            except grpc.RpcError as e:  # the server's message, as pyarrow's calls report it
                raise SatchelError(_clean(e.details() or str(e.code()))) from None
            tables = []
            for endpoint in info.endpoints:
                reader = self.client.do_get(endpoint.ticket, self.options)
                with self._lock:
                    self._reader = reader
                    if self._cancelled:
                        reader.cancel()
                tables.append(reader.read_all())
            self.table = pa.concat_tables(tables) if tables else info.schema.empty_table()
        except BaseException as e:  # noqa: BLE001 - handed to the prompt's thread
            self.error = e


class Session:
    """The interactive prompt: line editing and history (readline), meta-commands, display options."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client, self.options = connect(args.flight, args.api_key, args.tls_root_certs)
        self.info_calls = InfoCalls(args.flight, args.api_key, args.tls_root_certs)
        self.expanded = False
        self.timing = False

    def loop(self) -> int:
        history = _start_history()
        print(f"connected to {self.args.flight}; end statements with ';', \\? for help, \\q to quit")
        buffer: list[str] = []
        try:
            while True:
                try:
                    line = input("satchel> " if not buffer else "      -> ")
                except EOFError:
                    print()
                    return 0
                except KeyboardInterrupt:  # at the prompt: drop what was typed
                    print()
                    buffer = []
                    continue
                if not buffer and line.strip().startswith("\\"):
                    if self.meta(line.strip()) == "quit":
                        return 0
                    continue
                if line.strip() in ("quit", "exit") and not buffer:
                    return 0
                buffer.append(line)
                if not line.rstrip().endswith(";"):
                    continue
                sql, buffer = "\n".join(buffer), []
                self.run(sql)
        finally:
            _save_history(history)

    def run(self, sql: str) -> None:
        started = time.monotonic()
        try:
            table = Statement(self.client, self.options, sql, self.info_calls).result()
        except (KeyboardInterrupt, Cancelled):
            print("cancelled", file=sys.stderr)
            return
        except pa.ArrowException as e:
            print(f"error: {_message(e)}", file=sys.stderr)
            return
        except SatchelError as e:
            print(f"error: {e.message}", file=sys.stderr)
            return
        elapsed = time.monotonic() - started
        full = sql.lstrip().lower().startswith("explain")  # plans in full, never cut
        if self.expanded and self.args.format == "table":
            _print_expanded(table, self.args.max_rows, full)
        else:
            _print_table(table, self.args.format, self.args.max_rows, full)
        if self.timing:
            print(f"Time: {elapsed * 1000:.3f} ms")

    def meta(self, line: str) -> str | None:
        """Run one backslash command; "quit" for \\q."""
        command, _, rest = line.partition(" ")
        name = rest.strip()
        try:
            if command == "\\q":
                return "quit"
            if command == "\\?":
                print(HELP)
            elif command == "\\x":
                self.expanded = not self.expanded
                print(f"Expanded display is {'on' if self.expanded else 'off'}.")
            elif command == "\\timing":
                self.timing = not self.timing
                print(f"Timing is {'on' if self.timing else 'off'}.")
            elif command in ("\\d", "\\dt") and not name:
                self._list(["TABLE"] if command == "\\dt" else [])
            elif command == "\\d":
                self._describe(name)
            else:
                print(f"invalid command {command}; try \\? for help", file=sys.stderr)
        except pa.ArrowException as e:
            print(f"error: {_message(e)}", file=sys.stderr)
        return None

    def _tables(self, types: list[str], name: str | None = None) -> pa.Table:
        command = pb.CommandGetTables(table_types=types, include_schema=name is not None)
        if name is not None:
            command.table_name_filter_pattern = name
        info = self.client.get_flight_info(flight.FlightDescriptor.for_command(pack(command)), self.options)
        return pa.concat_tables([self.client.do_get(ep.ticket, self.options).read_all() for ep in info.endpoints])

    def _list(self, types: list[str]) -> None:
        rows = [{"schema": r["db_schema_name"], "name": r["table_name"], "type": r["table_type"].lower()}
                for r in self._tables(types).to_pylist()]
        print_rows(rows, ["schema", "name", "type"])

    def _describe(self, name: str) -> None:
        found = [r for r in self._tables([], name).to_pylist() if r["table_name"].lower() == name.lower()]
        if not found:
            from engine.config import did_you_mean

            known = [r["table_name"] for r in self._tables([]).to_pylist()]
            print(f"error: no dataset named '{name}';{did_you_mean(name, known)}".rstrip(";"), file=sys.stderr)
            return
        schema = pa.ipc.read_schema(pa.py_buffer(found[0]["table_schema"]))
        print(f"{found[0]['table_type'].lower()} {found[0]['db_schema_name']}.{found[0]['table_name']}")
        print_rows([{"column": f.name, "type": str(f.type), "nullable": "yes" if f.nullable else "no",
                     "description": (f.metadata or {}).get(b"description", b"").decode() or None}
                    for f in schema], ["column", "type", "nullable", "description"])


def interactive(args: argparse.Namespace) -> int:
    return Session(args).loop()


def _start_history() -> str | None:
    """Load the history file (~/.satchel_history); its path, or None without readline."""
    try:
        import readline
    except ImportError:
        return None
    path = os.path.join(os.path.expanduser("~"), ".satchel_history")
    readline.set_history_length(1000)
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    return path


def _save_history(path: str | None) -> None:
    if path is None:
        return
    import readline

    try:
        readline.write_history_file(path)
    except OSError:
        pass


def _message(e: pa.ArrowException) -> str:
    """The server's message, without the transport's detail and debug context."""
    return _clean(str(e))


def _clean(text: str) -> str:
    for marker in (". Detail:", ". gRPC client debug context:", ". Client context:"):
        text = text.split(marker)[0]
    return text.strip()


def _print_expanded(table: pa.Table, max_rows: int, full: bool = False) -> None:
    """psql's `\\x` display: one block per row, one line per column."""
    names = table.schema.names
    width = max((len(n) for n in names), default=0)
    for i, row in enumerate(table.slice(0, max_rows).to_pylist(), 1):
        print(f"-[ RECORD {i} ]" + "-" * max(0, width - 10))
        for n in names:
            print(f"{n.ljust(width)} | {_cell(row[n], full)}")
    print(f"({table.num_rows} rows)")


def _print_table(table: pa.Table, fmt: str, max_rows: int, full: bool = False) -> None:
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sys.stdout.buffer)
        return
    if fmt == "json":
        from .http.formats import json_chunks

        for chunk in json_chunks(table.schema, iter(table.to_batches())):
            sys.stdout.buffer.write(chunk)
        print()
        return
    shown = table.slice(0, max_rows)
    print_rows(shown.to_pylist(), table.schema.names, full)  # display only: at most max_rows rows
    more = f" (showing {shown.num_rows})" if shown.num_rows < table.num_rows else ""
    print(f"({table.num_rows} rows{more})")


def print_rows(rows: list[dict], names: Iterable[str] | None = None, full: bool = False) -> None:
    """A psql-style table (long values cut, unless `full`)."""
    names = list(names) if names is not None else (list(rows[0]) if rows else [])
    cells = [[_cell(r.get(n), full) for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    print(" | ".join(n.ljust(w) for n, w in zip(names, widths)))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths)))


def _cell(value: object, full: bool = False) -> str:
    if value is None:
        return "NULL"
    text = str(value)
    return text if full or len(text) <= 60 else text[:57] + "..."
