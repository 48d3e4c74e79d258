"""`satchel sql`: a small Flight SQL client (pyarrow.flight) that prints results as tables."""

from __future__ import annotations

import argparse
import sys
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
    _print_table(table, args.format, args.max_rows)
    return 0


def interactive(args: argparse.Namespace) -> int:
    client, options = connect(args.flight, args.api_key, args.tls_root_certs)
    print(f"connected to {args.flight}; end statements with ';', \\q to quit")
    buffer: list[str] = []
    while True:
        try:
            line = input("satchel> " if not buffer else "      -> ")
        except EOFError:
            print()
            return 0
        if line.strip() in ("\\q", "quit", "exit"):
            return 0
        buffer.append(line)
        if not line.rstrip().endswith(";"):
            continue
        sql, buffer = "\n".join(buffer), []
        try:
            _print_table(fetch(client, options, sql), args.format, args.max_rows)
        except pa.ArrowException as e:
            print(f"error: {_message(e)}", file=sys.stderr)


def _message(e: pa.ArrowException) -> str:
    """The server's message, without the transport's detail and debug context."""
    text = str(e)
    for marker in (". Detail:", ". gRPC client debug context:", ". Client context:"):
        text = text.split(marker)[0]
    return text.strip()


def _print_table(table: pa.Table, fmt: str, max_rows: int) -> None:
    if fmt in ("csv", "json"):
        from .http.formats import csv_chunks, json_chunks

        for chunk in (csv_chunks if fmt == "csv" else json_chunks)(table.schema, iter(table.to_batches())):
            sys.stdout.buffer.write(chunk)
        if fmt == "json":
            sys.stdout.buffer.write(b"\n")
        return
    shown = table.slice(0, max_rows)
    print_rows(shown.to_pylist(), table.schema.names)  # display only: at most max_rows rows
    more = f" (showing {shown.num_rows})" if shown.num_rows < table.num_rows else ""
    print(f"({table.num_rows} rows{more})")


def print_rows(rows: list[dict], names: Iterable[str] | None = None) -> None:
    """A psql-style table."""
    names = list(names) if names is not None else (list(rows[0]) if rows else [])
    cells = [[_cell(r.get(n)) for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    print(" | ".join(n.ljust(w) for n, w in zip(names, widths)))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths)))


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
