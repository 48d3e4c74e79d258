"""Satchel's Arrow Flight SQL server (port 50051 by default).

Built on `pyarrow.flight.FlightServerBase`: C++ gRPC carries the data plane and results
stream from the runtime's `RecordBatchReader` batch by batch; Python only dispatches
commands and hands batches over.

Protocol flows served:

* ad-hoc query: GetFlightInfo(CommandStatementQuery) -> ticket (TicketStatementQuery holding
  a server handle) -> DoGet streams the result;
* prepared statement: DoAction CreatePreparedStatement -> [DoPut(CommandPreparedStatementQuery)
  with a parameter batch, answered with DoPutPreparedStatementResult] -> GetFlightInfo /
  GetSchema (CommandPreparedStatementQuery) -> DoGet -> DoAction ClosePreparedStatement;
* catalog commands (SqlInfo, catalogs, schemas, tables, table types, primary/foreign keys,
  XDBC types): the ticket is the command itself, DoGet builds the small metadata table;
* writes (CommandStatementUpdate, prepared updates, ingestion) are refused: read-only.

Statement tickets and prepared statements are server handles that expire after
`handle_ttl_seconds` without use (see `serving.flight_sql.handles`). A statement ticket is
single-use: DoGet consumes it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa
from google.protobuf.message import Message
from pyarrow import flight

from engine.errors import (
    ConfigError,
    NotFound,
    NotSupportedYet,
    PayloadTooLarge,
    ReadOnlyViolation,
    SqlError,
    Unauthenticated,
)
from . import catalog
from . import info
from . import flight_sql_pb2 as pb
from . import protocol
from .auth import MIDDLEWARE_KEY, AuthMiddlewareFactory, HandshakeAuthHandler
from engine.task_history import request_scope
from .errors import as_satchel_error, to_flight_error
from .handles import HandleRegistry
from ..result_head import head

if TYPE_CHECKING:  # pragma: no cover
    from engine.runtime import Principal, Runtime

log = logging.getLogger("satchel.flight_sql")
T = TypeVar("T")

# pyarrow's defaults, made once: without them every stream reads two environment variables
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions()
MAX_PARAMETER_SETS = 10_000  # rows of parameters bound to one prepared statement's execution
MAX_PARAMETER_BYTES = 16 << 20
# DoPut commands that would write; refused by name (Satchel needs no message class for them).
_WRITE_COMMANDS = frozenset(
    {
        "CommandStatementUpdate",
        "CommandPreparedStatementUpdate",
        "CommandStatementIngest",
        "CommandStatementSubstraitPlan",
    }
)
_UNSUPPORTED_ACTIONS = {
    "CreatePreparedSubstraitPlan": "Substrait plans are not supported; send SQL",
    "BeginTransaction": "transactions are not supported (the server is read-only)",
    "EndTransaction": "transactions are not supported (the server is read-only)",
    "BeginSavepoint": "savepoints are not supported (the server is read-only)",
    "EndSavepoint": "savepoints are not supported (the server is read-only)",
    "CancelQuery": "query cancellation is not supported; close the stream instead",
    "CancelFlightInfo": "query cancellation is not supported; close the stream instead",
}


def _server_version() -> str:
    try:
        return metadata.version("satchel")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


@dataclass
class _PreparedStatement:
    """A prepared statement: its SQL, owner, result schema and last bound parameters."""

    sql: str
    principal: Principal
    dataset_schema: pa.Schema
    parameter_count: int
    # None: nothing bound; otherwise one parameter list per execution (row of the batch).
    bindings: list[tuple[object, ...]] | None = None


@dataclass(frozen=True)
class _StatementTicket:
    """What one DoGet will run: SQL, owner, expected schema and parameter sets."""

    sql: str
    principal: Principal
    schema: pa.Schema
    bindings: tuple[tuple[object, ...], ...] | None = field(default=None)


class SatchelFlightSqlServer(flight.FlightServerBase):
    """Arrow Flight SQL over a Satchel `Runtime` (read-only).

    `location` is a Flight URI (`grpc://0.0.0.0:50051`) or `host:port`; with a TLS
    certificate and key the server listens with TLS (`grpc+tls`). Call `.serve()` (blocks)
    and `.shutdown()` from another thread.
    """

    def __init__(
        self,
        runtime: Runtime,
        location: str,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        handle_ttl_seconds: float = 600,
        max_handles: int = 10_000,
    ):
        tls_certificates = _load_tls(tls_cert_file, tls_key_file)
        super().__init__(
            _normalise_location(location, tls=tls_certificates is not None),
            auth_handler=HandshakeAuthHandler(),
            tls_certificates=tls_certificates,
            middleware={MIDDLEWARE_KEY: AuthMiddlewareFactory(runtime)},
        )
        self._runtime = runtime
        self._tickets: HandleRegistry[_StatementTicket] = HandleRegistry(
            "statement ticket", handle_ttl_seconds, max_handles
        )
        self._prepared: HandleRegistry[_PreparedStatement] = HandleRegistry(
            "prepared statement", handle_ttl_seconds, max_handles
        )
        self._sql_info = info.sql_info_values(_server_version(), handle_ttl_seconds)

    # ------------------------------------------------------------------ RPC boundary
    # Each RPC is one request: a failure is accounted once (a task-history row and a metric,
    # unless the runtime already recorded the query's row) and mapped once to a status.

    def _rpc(self, context, rpc: str, payload: Callable[[], bytes | None], run: Callable[[], T]) -> T:
        with request_scope() as scope:
            try:
                return run()
            except Exception as exc:  # noqa: BLE001 - accounted and mapped to a status below
                error = as_satchel_error(exc, rpc)
                if scope.rows == 0:
                    task, text = protocol.describe(payload(), rpc)
                    self._runtime.refused(error, protocol="flight", principal=_known_principal(context),
                                          text=text, started=scope.started, task=task)
        raise to_flight_error(error, rpc, self._runtime.secrets)

    def get_flight_info(self, context, descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        return self._rpc(context, "GetFlightInfo", lambda: descriptor.command,
                         lambda: self._get_flight_info(context, descriptor))

    def get_schema(self, context, descriptor: flight.FlightDescriptor) -> flight.SchemaResult:
        return self._rpc(context, "GetSchema", lambda: descriptor.command,
                         lambda: flight.SchemaResult(self._get_schema(context, descriptor)))

    def do_get(self, context, ticket: flight.Ticket) -> flight.FlightDataStream:
        return self._rpc(context, "DoGet", lambda: ticket.ticket, lambda: self._do_get(context, ticket))

    def do_put(self, context, descriptor, reader, writer) -> None:
        return self._rpc(context, "DoPut", lambda: descriptor.command,
                         lambda: self._do_put(context, descriptor, reader, writer))

    def do_action(self, context, action: flight.Action) -> list[flight.Result]:
        body = action.body.to_pybytes() if action.body is not None else b""
        return self._rpc(context, f"DoAction {action.type}", lambda: body,
                         lambda: self._do_action(context, action.type, body))

    def do_exchange(self, context, descriptor, reader, writer) -> None:
        def refuse() -> None:
            self._principal(context)
            raise NotSupportedYet("DoExchange is not supported; send Flight SQL commands")

        return self._rpc(context, "DoExchange", lambda: descriptor.command, refuse)

    def list_actions(self, context) -> list[tuple[str, str]]:
        self._rpc(context, "ListActions", lambda: None, lambda: self._principal(context))
        return [
            ("CreatePreparedStatement", "Prepare a SQL query; returns its handle and schemas"),
            ("ClosePreparedStatement", "Release a prepared statement handle"),
        ]

    def list_flights(self, context, criteria) -> Iterator[flight.FlightInfo]:
        self._rpc(context, "ListFlights", lambda: None, lambda: self._principal(context))
        return iter(())

    # ------------------------------------------------------------------ GetFlightInfo

    def _get_flight_info(self, context, descriptor: flight.FlightDescriptor) -> flight.FlightInfo:
        principal = self._principal(context)
        command = protocol.command_of(descriptor)
        if isinstance(command, pb.CommandStatementQuery):
            _refuse_transaction(command)
            schema = self._runtime.query_schema(command.query, principal, client_gone=context.is_cancelled)
            ticket = self._tickets.add(_StatementTicket(command.query, principal, schema))
            return protocol.flight_info(schema, descriptor, protocol.statement_ticket(ticket))
        if isinstance(command, pb.CommandPreparedStatementQuery):
            prepared = self._prepared_for(command.prepared_statement_handle, principal)
            bindings = tuple(prepared.bindings) if prepared.bindings is not None else None
            ticket = self._tickets.add(
                _StatementTicket(prepared.sql, principal, prepared.dataset_schema, bindings)
            )
            return protocol.flight_info(
                prepared.dataset_schema, descriptor, protocol.statement_ticket(ticket)
            )
        if isinstance(command, protocol.METADATA_COMMANDS):
            return protocol.flight_info(
                protocol.metadata_schema(command), descriptor, descriptor.command
            )
        raise _unsupported(command, "GetFlightInfo")

    def _get_schema(self, context, descriptor: flight.FlightDescriptor) -> pa.Schema:
        principal = self._principal(context)
        command = protocol.command_of(descriptor)
        if isinstance(command, pb.CommandStatementQuery):
            _refuse_transaction(command)
            return self._runtime.query_schema(command.query, principal)
        if isinstance(command, pb.CommandPreparedStatementQuery):
            return self._prepared_for(command.prepared_statement_handle, principal).dataset_schema
        if isinstance(command, protocol.METADATA_COMMANDS):
            return protocol.metadata_schema(command)
        raise _unsupported(command, "GetSchema")

    # ------------------------------------------------------------------ DoGet

    def _do_get(self, context, ticket: flight.Ticket) -> flight.FlightDataStream:
        principal = self._principal(context)
        command = protocol.unpack(ticket.ticket, "ticket")
        if isinstance(command, pb.TicketStatementQuery):
            statement = self._tickets.get(command.statement_handle)
            if not _same_principal(statement.principal, principal):
                # Someone else's ticket: answer exactly as for an unknown one, and leave it to its owner.
                raise self._tickets._not_found()
            statement = self._tickets.pop(command.statement_handle)
            return self._result_stream(statement, _LiveCall(context))
        if isinstance(command, protocol.METADATA_COMMANDS):
            return flight.RecordBatchStream(self._metadata_table(command, principal), _WRITE_OPTIONS)
        raise _unsupported(command, "DoGet")

    def _result_stream(self, statement: _StatementTicket, call: "_LiveCall") -> flight.FlightDataStream:
        """Stream the statement's result; one query per bound parameter set, in order. A client
        that cancels the call while a query waits for its first batch cancels the query's work."""
        run = functools.partial(self._runtime.query, client_gone=call.is_cancelled)
        if statement.bindings is None:
            openers: list[Callable[[], pa.RecordBatchReader]] = [
                lambda: run(statement.sql, statement.principal, protocol="flight")
            ]
        else:
            openers = [
                (
                    lambda p=params: run(
                        statement.sql, statement.principal, protocol="flight", params=list(p)
                    )
                )
                for params in statement.bindings
            ]
        if not openers:  # parameters bound with zero rows: nothing to execute
            return flight.RecordBatchStream(statement.schema.empty_table(), _WRITE_OPTIONS)
        first: pa.RecordBatchReader | None = None
        try:
            first = openers[0]()  # errors before the first batch surface with their own status
            schema = _stream_schema(statement.schema, first.schema)
            head, whole = _head(first, schema)
            if whole and len(openers) == 1:
                # Small results (most agent queries) are sent from C++ without calling back
                # into Python once per batch.
                first.close()
                call.end()
                return flight.RecordBatchStream(pa.Table.from_batches(head, schema), _WRITE_OPTIONS)
        except BaseException:
            if first is not None:
                first.close()
            call.end()
            raise
        return flight.GeneratorStream(schema, _batches(first, openers[1:], schema, self._runtime.secrets,
                                                       on_end=call.end, head=head))

    def _metadata_table(self, command: Message, principal: Principal) -> pa.Table:
        if isinstance(command, pb.CommandGetSqlInfo):
            return info.sql_info_table(self._sql_info, list(command.info))
        if isinstance(command, pb.CommandGetXdbcTypeInfo):
            data_type = command.data_type if command.HasField("data_type") else None
            return info.xdbc_type_info_table(data_type)
        if isinstance(command, pb.CommandGetTableTypes):
            return catalog.table_types_table()
        if isinstance(
            command,
            (pb.CommandGetExportedKeys, pb.CommandGetImportedKeys, pb.CommandGetCrossReference),
        ):
            return catalog.foreign_keys_table()
        tables = self._runtime.tables(principal)
        if isinstance(command, pb.CommandGetCatalogs):
            return catalog.catalogs_table(tables)
        if isinstance(command, pb.CommandGetDbSchemas):
            return catalog.db_schemas_table(tables, command)
        if isinstance(command, pb.CommandGetTables):
            return catalog.tables_table(tables, command)
        if isinstance(command, pb.CommandGetPrimaryKeys):
            return catalog.primary_keys_table(tables, command)
        raise _unsupported(command, "DoGet")

    # ------------------------------------------------------------------ DoPut

    def _do_put(
        self, context, descriptor, reader: flight.MetadataRecordBatchReader, writer
    ) -> None:
        principal = self._principal(context)
        name = protocol.command_name(descriptor)
        if name in _WRITE_COMMANDS:
            raise ReadOnlyViolation(
                f"{name} refused: Satchel's Flight SQL endpoint is read-only "
                "(send queries with CommandStatementQuery or prepared statements)"
            )
        command = protocol.command_of(descriptor)
        if not isinstance(command, pb.CommandPreparedStatementQuery):
            raise _unsupported(command, "DoPut")
        handle = command.prepared_statement_handle
        prepared = self._prepared_for(handle, principal)
        prepared.bindings = _parameter_sets(_uploaded_parameters(reader), prepared.parameter_count)
        if prepared.bindings:  # the schema the client is told on execute follows the bound types
            prepared.dataset_schema = self._runtime.query_schema(prepared.sql, principal, prepared.bindings[0])
        result = pb.DoPutPreparedStatementResult(prepared_statement_handle=handle)
        writer.write(pa.py_buffer(result.SerializeToString()))

    # ------------------------------------------------------------------ DoAction

    def _do_action(self, context, kind: str, body: bytes) -> list[flight.Result]:
        principal = self._principal(context)
        if kind == "CreatePreparedStatement":
            request = protocol.unpack_as(body, pb.ActionCreatePreparedStatementRequest)
            if request.HasField("transaction_id"):
                raise NotSupportedYet("transactions are not supported (the server is read-only)")
            return [protocol.action_result(self._create_prepared(request.query, principal))]
        if kind == "ClosePreparedStatement":
            request = protocol.unpack_as(body, pb.ActionClosePreparedStatementRequest)
            self._close_prepared(request.prepared_statement_handle, principal)
            return []
        if kind in _UNSUPPORTED_ACTIONS:
            raise NotSupportedYet(f"{kind}: {_UNSUPPORTED_ACTIONS[kind]}")
        raise NotSupportedYet(f"unknown Flight SQL action {kind!r}")

    def _create_prepared(
        self, sql: str, principal: Principal
    ) -> pb.ActionCreatePreparedStatementResult:
        schema = self._runtime.query_schema(sql, principal)
        count = self._runtime.parameter_count(sql)
        handle = self._prepared.add(_PreparedStatement(sql, principal, schema, count))
        return pb.ActionCreatePreparedStatementResult(
            prepared_statement_handle=handle,
            dataset_schema=schema.serialize().to_pybytes(),
            parameter_schema=_parameter_schema(count).serialize().to_pybytes(),
        )

    def _close_prepared(self, handle: bytes, principal: Principal) -> None:
        # Closing is idempotent: an unknown or expired handle is already closed.
        try:
            prepared = self._prepared.get(handle)
        except NotFound:
            return
        if _same_principal(prepared.principal, principal):
            self._prepared.discard(handle)

    # ------------------------------------------------------------------ helpers

    def _principal(self, context) -> Principal:
        middleware = context.get_middleware(MIDDLEWARE_KEY)
        if middleware is None:
            raise Unauthenticated("no authentication context for this call")
        if middleware.principal is not None:  # known at the call's start (no API keys), or checked once
            return middleware.principal
        return middleware.principal_for(self._runtime, _client_address(context))

    def _prepared_for(self, handle: bytes, principal: Principal) -> _PreparedStatement:
        prepared = self._prepared.get(handle)
        if not _same_principal(prepared.principal, principal):
            raise self._prepared._not_found()
        return prepared

    @property
    def open_handles(self) -> dict[str, int]:
        """Live handle counts (for status pages and tests)."""
        return {"statement_tickets": len(self._tickets), "prepared_statements": len(self._prepared)}


# ---------------------------------------------------------------------- module helpers


class _LiveCall:
    """A DoGet's `context.is_cancelled` for the engine, which asks from another thread: a Flight
    call context is only valid while its call runs, so after `end()` (the stream ended, failed
    or was dropped) it is never touched again."""

    def __init__(self, context) -> None:
        self._context = context
        self._lock = threading.Lock()

    def is_cancelled(self) -> bool:
        with self._lock:
            return self._context is not None and self._context.is_cancelled()

    def end(self) -> None:
        with self._lock:
            self._context = None


def _as(schema: pa.Schema, batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch if batch.schema.equals(schema) else batch.cast(schema)


def _head(reader: pa.RecordBatchReader, schema: pa.Schema) -> tuple[list[pa.RecordBatch], bool]:
    """`result_head.head` of `reader`, as `schema`."""
    batches, whole = head(reader)
    return [_as(schema, batch) for batch in batches], whole


def _batches(
    first: pa.RecordBatchReader,
    rest: Sequence[Callable[[], pa.RecordBatchReader]],
    schema: pa.Schema,
    secrets: Iterable[str] = (),
    on_end: Callable[[], None] = lambda: None,
    head: Sequence[pa.RecordBatch] = (),
) -> Iterator[pa.RecordBatch]:
    """Yield `head` (batches already read from `first`), the rest of `first`, then every batch of
    each later reader (opened lazily), mapping errors; `on_end()` when the stream ends, fails or
    is dropped."""
    reader = first
    pending = iter(rest)
    try:
        yield from head
        while True:
            for batch in reader:
                yield _as(schema, batch)
            reader.close()
            opener = next(pending, None)
            if opener is None:
                return
            reader = opener()
    except Exception as exc:  # noqa: BLE001 - mapped to a status (the runtime recorded the failure)
        error = to_flight_error(exc, "DoGet", secrets)
    finally:
        reader.close()
        on_end()
    raise error


def _stream_schema(announced: pa.Schema, actual: pa.Schema) -> pa.Schema:
    """The schema DoGet streams: the one GetFlightInfo announced whenever the result fits it.

    Clients (the ADBC driver) reject a stream whose schema differs from the FlightInfo's, yet
    the announced schema comes from planning without parameter values, so it may differ from
    the executed one in nullability or field metadata only (e.g. `$1::bigint + $2::bigint`
    is nullable when planned with NULLs, non-null with literals). Batches are cast to it. When
    the types themselves differ (an untyped `select ? as x` planned as the null type), the
    actual schema is streamed, since no cast could honour the announced one.
    """
    if announced.names != actual.names:
        return actual
    for want, got in zip(announced, actual):
        if not want.type.equals(got.type) or (got.nullable and not want.nullable):
            return actual
    return announced


def _uploaded_parameters(reader: flight.MetadataRecordBatchReader) -> pa.Table:
    """The parameter rows a client binds, read batch by batch and refused past MAX_PARAMETER_SETS
    rows or MAX_PARAMETER_BYTES (each row is one query: an upload must not fill the sidecar's
    memory, nor queue queries without end)."""
    batches: list[pa.RecordBatch] = []
    rows = size = 0
    for chunk in reader:
        if chunk.data is None:
            continue
        rows += chunk.data.num_rows
        size += chunk.data.nbytes
        if rows > MAX_PARAMETER_SETS or size > MAX_PARAMETER_BYTES:
            raise PayloadTooLarge(f"too many bound parameters: at most {MAX_PARAMETER_SETS:,} parameter sets (rows) "
                                  f"and {MAX_PARAMETER_BYTES >> 20} MiB per execution, each set one query; bind "
                                  f"fewer, or put the values in one query (WHERE id IN (...))")
        batches.append(chunk.data)
    return pa.Table.from_batches(batches, reader.schema)


def _parameter_sets(table: pa.Table, expected: int) -> list[tuple[object, ...]] | None:
    """One positional parameter tuple per row of the bound batch (parameters are tiny)."""
    if table.num_columns == 0:
        if expected:
            raise SqlError(f"the statement has {expected} parameter(s) but none were bound")
        return None
    if table.num_columns != expected:
        raise SqlError(
            f"the statement has {expected} parameter(s) but {table.num_columns} were bound"
        )
    return list(zip(*(column.to_pylist() for column in table.columns)))


def _parameter_schema(count: int) -> pa.Schema:
    """Parameter types are not inferred: each is the null type, the protocol's wildcard."""
    return pa.schema([pa.field(f"${i}", pa.null()) for i in range(1, count + 1)])


def _refuse_transaction(command: pb.CommandStatementQuery) -> None:
    if command.HasField("transaction_id"):
        raise NotSupportedYet("transactions are not supported (the server is read-only)")


def _unsupported(command: Message, rpc: str) -> NotSupportedYet:
    name = command.DESCRIPTOR.name
    if name == "CommandStatementSubstraitPlan":
        return NotSupportedYet("Substrait plans are not supported; send SQL")
    return NotSupportedYet(f"{rpc} does not accept {name}")


def _known_principal(context) -> str | None:
    """The caller's principal name when authentication got that far, else None."""
    middleware = context.get_middleware(MIDDLEWARE_KEY)
    principal = getattr(middleware, "principal", None)
    return getattr(principal, "name", None)


def _client_address(context) -> str:
    """The caller's address without its port (`ipv4:127.0.0.1:5051` -> `127.0.0.1`)."""
    peer = context.peer() or "unknown"
    address = peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer
    return address.rsplit(":", 1)[0].strip("[]") if address.count(":") >= 1 else address


def _same_principal(a: Principal, b: Principal) -> bool:
    return getattr(a, "name", a) == getattr(b, "name", b)


def _load_tls(cert_file: str | None, key_file: str | None) -> list[flight.CertKeyPair] | None:
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        raise ConfigError(message="Flight TLS needs both a certificate file and a key file")
    try:
        pair = flight.CertKeyPair(
            cert=Path(cert_file).read_bytes(), key=Path(key_file).read_bytes()
        )
    except OSError as exc:
        raise ConfigError(
            message=f"cannot read Flight TLS file {exc.filename}: {exc.strerror}"
        ) from None
    return [pair]


def _normalise_location(location: str, *, tls: bool) -> str:
    """A Flight URI for `location`, switching the scheme to grpc+tls when TLS is on."""
    scheme, sep, rest = location.partition("://")
    if not sep:
        scheme, rest = "grpc", location
    if scheme not in ("grpc", "grpc+tcp", "grpc+tls"):
        raise ConfigError(message=f"unsupported Flight location scheme {scheme!r} in {location!r}")
    if tls:
        return f"grpc+tls://{rest}"
    if scheme == "grpc+tls":
        raise ConfigError(message="a grpc+tls Flight location needs a TLS certificate and key")
    return f"grpc+tcp://{rest}"
