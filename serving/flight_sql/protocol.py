"""Flight SQL wire encoding: packing and unpacking the protobuf commands Satchel serves.

Commands travel as `google.protobuf.Any` in FlightDescriptor.cmd, tickets and action bodies,
with type URLs `type.googleapis.com/arrow.flight.protocol.sql.<Message>`.
"""

from __future__ import annotations

import contextlib

import pyarrow as pa
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from pyarrow import flight

from engine.errors import BadRequest, NotSupportedYet
from . import catalog
from . import info
from . import flight_sql_pb2 as pb

TYPE_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."

# Catalog commands: answered from metadata, the ticket is the packed command itself.
METADATA_COMMANDS: tuple[type[Message], ...] = (
    pb.CommandGetSqlInfo,
    pb.CommandGetXdbcTypeInfo,
    pb.CommandGetCatalogs,
    pb.CommandGetDbSchemas,
    pb.CommandGetTables,
    pb.CommandGetTableTypes,
    pb.CommandGetPrimaryKeys,
    pb.CommandGetExportedKeys,
    pb.CommandGetImportedKeys,
    pb.CommandGetCrossReference,
)
QUERY_COMMANDS: tuple[type[Message], ...] = (
    pb.CommandStatementQuery,
    pb.CommandPreparedStatementQuery,
    pb.TicketStatementQuery,
    pb.CommandStatementSubstraitPlan,
)
KNOWN_COMMANDS = {cls.DESCRIPTOR.full_name: cls for cls in METADATA_COMMANDS + QUERY_COMMANDS}
KNOWN_COMMANDS.update(
    {
        cls.DESCRIPTOR.full_name: cls
        for cls in (pb.CommandStatementUpdate, pb.CommandPreparedStatementUpdate)
    }
)


def flight_info(
    schema: pa.Schema, descriptor: flight.FlightDescriptor, ticket: bytes
) -> flight.FlightInfo:
    endpoint = flight.FlightEndpoint(ticket, [])  # no locations: fetch from this server
    return flight.FlightInfo(schema, descriptor, [endpoint], -1, -1)


def statement_ticket(handle: bytes) -> bytes:
    packed = any_pb2.Any()
    packed.Pack(pb.TicketStatementQuery(statement_handle=handle))
    return packed.SerializeToString()


def action_result(message: Message) -> flight.Result:
    packed = any_pb2.Any()
    packed.Pack(message)
    return flight.Result(pa.py_buffer(packed.SerializeToString()))


def parse_any(data: bytes, what: str) -> any_pb2.Any:
    packed = any_pb2.Any()
    try:
        packed.ParseFromString(data)
    except DecodeError:
        raise BadRequest(f"malformed Flight SQL {what}: not a packed protobuf Any") from None
    if not packed.type_url.startswith(TYPE_PREFIX):
        raise BadRequest(
            f"malformed Flight SQL {what}: expected an arrow.flight.protocol.sql command, "
            f"got type {packed.type_url or '(none)'!r}"
        )
    return packed


def unpack(data: bytes, what: str) -> Message:
    """Decode a packed Flight SQL command (descriptor command or ticket)."""
    packed = parse_any(data, what)
    name = packed.type_url[len("type.googleapis.com/") :]
    cls = KNOWN_COMMANDS.get(name)
    if cls is None:
        raise NotSupportedYet(f"Flight SQL command {name.rsplit('.', 1)[-1]} is not supported")
    message = cls()
    try:
        message.ParseFromString(packed.value)
    except DecodeError:
        raise BadRequest(f"malformed Flight SQL {what}: cannot decode {name}") from None
    return message


def unpack_as(data: bytes, cls: type[Message]) -> Message:
    """Decode an action body that must be a packed `cls`."""
    packed = parse_any(data, "action body")
    message = cls()
    if not packed.Is(cls.DESCRIPTOR) or not packed.Unpack(message):
        raise BadRequest(f"malformed Flight SQL action body: expected {cls.DESCRIPTOR.name}")
    return message


def command_of(descriptor: flight.FlightDescriptor) -> Message:
    if descriptor.descriptor_type != flight.DescriptorType.CMD:
        raise BadRequest(
            "Satchel serves Flight SQL commands; path descriptors are not supported"
        )
    return unpack(descriptor.command, "command")


def describe(data: bytes | None, rpc: str) -> tuple[str, str]:
    """(task, text) naming a call in task history: ("query", its SQL) when the packed command in
    `data` carries SQL, else ("request", "<rpc> <command>")."""
    try:
        packed = parse_any(data or b"", "command")
    except BadRequest:
        return "request", rpc
    name = packed.type_url.rsplit(".", 1)[-1]
    cls = getattr(pb, name, None)
    if cls is not None:
        message = cls()
        with contextlib.suppress(DecodeError):
            message.ParseFromString(packed.value)
            query = getattr(message, "query", "")
            if isinstance(query, str) and query:
                return "query", query
    return "request", f"{rpc} {name}"


def command_name(descriptor: flight.FlightDescriptor) -> str:
    if descriptor.descriptor_type != flight.DescriptorType.CMD:
        return ""
    return parse_any(descriptor.command, "command").type_url.rsplit(".", 1)[-1]


def metadata_schema(command: Message) -> pa.Schema:
    if isinstance(command, pb.CommandGetSqlInfo):
        return info.SQL_INFO_SCHEMA
    if isinstance(command, pb.CommandGetXdbcTypeInfo):
        return info.XDBC_TYPE_INFO_SCHEMA
    if isinstance(command, pb.CommandGetCatalogs):
        return catalog.CATALOGS_SCHEMA
    if isinstance(command, pb.CommandGetDbSchemas):
        return catalog.DB_SCHEMAS_SCHEMA
    if isinstance(command, pb.CommandGetTables):
        return (
            catalog.TABLES_WITH_SCHEMA_SCHEMA if command.include_schema else catalog.TABLES_SCHEMA
        )
    if isinstance(command, pb.CommandGetTableTypes):
        return catalog.TABLE_TYPES_SCHEMA
    if isinstance(command, pb.CommandGetPrimaryKeys):
        return catalog.PRIMARY_KEYS_SCHEMA
    return catalog.FOREIGN_KEYS_SCHEMA  # exported / imported keys, cross reference
