"""`satchel sql`: a small Flight SQL client that prints results as tables. Statements run over
grpcio calls that Ctrl-C can cancel (the server then cancels the source work); the interactive
prompt has readline editing and history, and psql-style meta-commands over pyarrow.flight."""

from __future__ import annotations

import argparse
import os
import struct
import sys
import threading
import time
from typing import Any, Callable, Iterable

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


def run_one(args: argparse.Namespace) -> int:
    """`satchel sql QUERY`; Ctrl-C cancels the statement (exit 130)."""
    try:
        table = Statement(Calls(args.flight, args.api_key, args.tls_root_certs), args.query).result()
    except pa.ArrowException as e:  # a result the client cannot read
        raise SatchelError(_message(e)) from None
    _print_table(table, args.format, args.max_rows, args.query.lstrip().lower().startswith("explain"))
    return 0


HELP = """\
  \\d           list datasets and views       \\d NAME    columns of one
  \\dt          list datasets (tables only)   \\x         expanded display on/off
  \\timing      statement timing on/off       \\q         quit (or Ctrl-D)
  \\?           this help
End SQL with ';'. Ctrl-C cancels the running statement, or clears the line being typed."""


class Calls:
    """GetFlightInfo and DoGet over grpcio, whose calls can be cancelled from another thread
    (pyarrow's block without a handle): a cancelled call makes the server cancel its source work."""

    def __init__(self, address: str, api_key: str | None, tls_root_certs: str | None) -> None:
        import grpc

        target = address.split("://", 1)[-1]
        options = [("grpc.max_receive_message_length", -1)]  # a batch can be larger than gRPC's 4 MB
        if tls_root_certs:
            with open(tls_root_certs, "rb") as f:
                credentials = grpc.ssl_channel_credentials(f.read())
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        service = "/arrow.flight.protocol.FlightService/"
        self.get_flight_info = self.channel.unary_unary(service + "GetFlightInfo")
        self.do_get = self.channel.unary_stream(service + "DoGet", response_deserializer=_flight_data().FromString)
        self.metadata = [("authorization", f"Bearer {api_key}")] if api_key else []


def _flight_data() -> type:
    """The FlightData protobuf message (its IPC header and body; the rest is not needed)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="satchel_cli_flight.proto", package="satchel_cli")
    message = proto.message_type.add(name="FlightData")
    for name, number in (("data_header", 2), ("data_body", 1000)):
        message.field.add(name=name, number=number, type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                          label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("satchel_cli.FlightData"))


def _ipc_message(header: bytes, body: bytes) -> bytes:
    """One encapsulated Arrow IPC message (continuation, padded header length, header, body)."""
    pad = -len(header) % 8
    return b"\xff\xff\xff\xff" + struct.pack("<i", len(header) + pad) + header + b"\0" * pad + body


class Cancelled(Exception):
    """The statement was cancelled (Ctrl-C)."""


class Statement:
    """One statement on a worker thread, so that the prompt's thread can cancel it (Ctrl-C):
    cancelling its GetFlightInfo or DoGet call makes the server cancel the source work."""

    def __init__(self, calls: Calls, sql: str) -> None:
        self.calls, self.sql = calls, sql
        self.table: pa.Table | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._call = None  # the grpc call running
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
            self._thread.join(2)
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

    def _start(self, start: Callable[..., Any], request: bytes) -> Any:
        """`start(request)`: a grpc call (a future, or a stream) that `cancel()` can cancel."""
        with self._lock:
            if self._cancelled:
                raise Cancelled()
            self._call = start(request, metadata=self.calls.metadata)
            return self._call

    def _run(self) -> None:
        import grpc

        try:
            descriptor = flight.FlightDescriptor.for_command(pack(pb.CommandStatementQuery(query=self.sql)))
            call = self._start(self.calls.get_flight_info.future, descriptor.serialize())
            info = flight.FlightInfo.deserialize(call.result())
            tables = []
            for endpoint in info.endpoints:
                stream = self._start(self.calls.do_get, endpoint.ticket.serialize())
                data = b"".join(_ipc_message(m.data_header, m.data_body) for m in stream if m.data_header)
                tables.append(pa.ipc.open_stream(data + b"\xff\xff\xff\xff\0\0\0\0").read_all())
            self.table = pa.concat_tables(tables) if tables else info.schema.empty_table()
        except grpc.FutureCancelledError:
            self.error = Cancelled()
        except grpc.RpcError as e:  # the server's message, as pyarrow's calls report it
            cancelled = e.code() == grpc.StatusCode.CANCELLED and self._cancelled
            self.error = Cancelled() if cancelled else SatchelError(_clean(e.details() or str(e.code())))
        except BaseException as e:  # noqa: BLE001 - handed to the prompt's thread
            self.error = e


class Session:
    """The interactive prompt: line editing and history (readline), meta-commands, display options."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client, self.options = connect(args.flight, args.api_key, args.tls_root_certs)
        self.calls = Calls(args.flight, args.api_key, args.tls_root_certs)
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
            table = Statement(self.calls, sql).result()
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
            _print_expanded(table, self.args.max_rows)
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

            hint = did_you_mean(name, [r["table_name"] for r in self._tables([]).to_pylist()])
            print(f"error: no dataset named '{name}'" + (f";{hint}" if hint else ""), file=sys.stderr)
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


def _print_expanded(table: pa.Table, max_rows: int) -> None:
    """psql's `\\x` display: one block per row, one line per column, values in full."""
    names = table.schema.names
    width = max((len(n) for n in names), default=0)
    for i, row in enumerate(table.slice(0, max_rows).to_pylist(), 1):
        print(f"-[ RECORD {i} ]" + "-" * max(0, width - 10))
        for n in names:
            print(f"{n.ljust(width)} | {_cell(row[n], full=True)}")
    print(f"({table.num_rows} rows)")


def _print_table(table: pa.Table, fmt: str, max_rows: int, full: bool = False) -> None:
    if fmt in ("csv", "json"):
        from .http.formats import csv_chunks, json_chunks

        for chunk in (csv_chunks if fmt == "csv" else json_chunks)(table.schema, iter(table.to_batches())):
            sys.stdout.buffer.write(chunk)
        if fmt == "json":
            sys.stdout.buffer.write(b"\n")
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
