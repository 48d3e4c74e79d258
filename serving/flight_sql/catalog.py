"""Fixed result schemas and tables of the Flight SQL catalog commands.

Catalogs, database schemas, tables (optionally with their Arrow schemas), table types,
primary and foreign keys. Everything here is small server metadata built from the runtime's
table list; query results never pass through this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from engine.arrow_sql_types import catalog_type_name
from engine.query.patterns import pattern_regex
from . import flight_sql_pb2 as pb

if TYPE_CHECKING:  # pragma: no cover
    from engine.runtime import TableInfo

# ------------------------------------------------------------------ result schemas

_STR = pa.utf8()

CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", _STR, nullable=False)])

DB_SCHEMAS_SCHEMA = pa.schema(
    [pa.field("catalog_name", _STR), pa.field("db_schema_name", _STR, nullable=False)]
)

TABLES_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", _STR),
        pa.field("db_schema_name", _STR),
        pa.field("table_name", _STR, nullable=False),
        pa.field("table_type", _STR, nullable=False),
    ]
)
TABLES_WITH_SCHEMA_SCHEMA = TABLES_SCHEMA.append(
    pa.field("table_schema", pa.binary(), nullable=False)
)

TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", _STR, nullable=False)])

PRIMARY_KEYS_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", _STR),
        pa.field("db_schema_name", _STR),
        pa.field("table_name", _STR, nullable=False),
        pa.field("column_name", _STR, nullable=False),
        pa.field("key_name", _STR),
        pa.field("key_sequence", pa.int32(), nullable=False),
    ]
)

# Exported keys, imported keys and cross reference share one layout.
FOREIGN_KEYS_SCHEMA = pa.schema(
    [
        pa.field("pk_catalog_name", _STR),
        pa.field("pk_db_schema_name", _STR),
        pa.field("pk_table_name", _STR, nullable=False),
        pa.field("pk_column_name", _STR, nullable=False),
        pa.field("fk_catalog_name", _STR),
        pa.field("fk_db_schema_name", _STR),
        pa.field("fk_table_name", _STR, nullable=False),
        pa.field("fk_column_name", _STR, nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("fk_key_name", _STR),
        pa.field("pk_key_name", _STR),
        pa.field("update_rule", pa.uint8(), nullable=False),
        pa.field("delete_rule", pa.uint8(), nullable=False),
    ]
)

# ------------------------------------------------------------------ LIKE patterns


def like_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a SQL LIKE pattern (`%`, `_`, backslash escapes) to an anchored regex."""
    return re.compile(pattern_regex(pattern), re.DOTALL)


def _matches(value: str, pattern: str | None) -> bool:
    return pattern is None or like_to_regex(pattern).fullmatch(value) is not None


def _optional(message, field: str) -> str | None:
    """A proto3 `optional string` field's value, or None when the client left it unset."""
    return getattr(message, field) if message.HasField(field) else None


# ------------------------------------------------------------------ catalog tables


def catalogs_table(tables: Sequence[TableInfo]) -> pa.Table:
    names = sorted({t.catalog for t in tables})
    return pa.Table.from_pydict({"catalog_name": names}, schema=CATALOGS_SCHEMA)


def db_schemas_table(tables: Sequence[TableInfo], cmd: pb.CommandGetDbSchemas) -> pa.Table:
    catalog = _optional(cmd, "catalog")
    pattern = _optional(cmd, "db_schema_filter_pattern")
    pairs = sorted(
        {
            (t.catalog, t.schema)
            for t in tables
            if (catalog is None or t.catalog == catalog) and _matches(t.schema, pattern)
        }
    )
    return pa.Table.from_pydict(
        {"catalog_name": [p[0] for p in pairs], "db_schema_name": [p[1] for p in pairs]},
        schema=DB_SCHEMAS_SCHEMA,
    )


def filter_tables(tables: Iterable[TableInfo], cmd: pb.CommandGetTables) -> list[TableInfo]:
    """The tables a CommandGetTables selects, in the order the protocol asks for."""
    catalog = _optional(cmd, "catalog")
    schema_pattern = _optional(cmd, "db_schema_filter_pattern")
    name_pattern = _optional(cmd, "table_name_filter_pattern")
    types = {t.upper() for t in cmd.table_types}
    chosen = [
        t
        for t in tables
        if (catalog is None or t.catalog == catalog)
        and _matches(t.schema, schema_pattern)
        and _matches(t.name, name_pattern)
        and (not types or t.table_type.upper() in types)
    ]
    return sorted(chosen, key=lambda t: (t.catalog, t.schema, t.name, t.table_type))


def tables_table(tables: Sequence[TableInfo], cmd: pb.CommandGetTables) -> pa.Table:
    chosen = filter_tables(tables, cmd)
    columns: dict[str, list] = {
        "catalog_name": [t.catalog for t in chosen],
        "db_schema_name": [t.schema for t in chosen],
        "table_name": [t.name for t in chosen],
        "table_type": [t.table_type for t in chosen],
    }
    if not cmd.include_schema:
        return pa.Table.from_pydict(columns, schema=TABLES_SCHEMA)
    columns["table_schema"] = [annotated_schema(t).serialize().to_pybytes() for t in chosen]
    return pa.Table.from_pydict(columns, schema=TABLES_WITH_SCHEMA_SCHEMA)


def table_types_table() -> pa.Table:
    return pa.Table.from_pydict({"table_type": ["TABLE", "VIEW"]}, schema=TABLE_TYPES_SCHEMA)


def primary_keys_table(tables: Sequence[TableInfo], cmd: pb.CommandGetPrimaryKeys) -> pa.Table:
    catalog = _optional(cmd, "catalog")
    db_schema = _optional(cmd, "db_schema")
    rows: list[tuple[str, str, str, str, int]] = []
    for t in tables:
        if t.name != cmd.table or (catalog is not None and t.catalog != catalog):
            continue
        if db_schema is not None and t.schema != db_schema:
            continue
        rows.extend(
            (t.catalog, t.schema, t.name, col, i + 1) for i, col in enumerate(t.primary_key)
        )
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[4]))
    return pa.Table.from_pydict(
        {
            "catalog_name": [r[0] for r in rows],
            "db_schema_name": [r[1] for r in rows],
            "table_name": [r[2] for r in rows],
            "column_name": [r[3] for r in rows],
            "key_name": [None] * len(rows),
            "key_sequence": [r[4] for r in rows],
        },
        schema=PRIMARY_KEYS_SCHEMA,
    )


def foreign_keys_table() -> pa.Table:
    """Satchel datasets declare no foreign keys: always empty, with the protocol's layout."""
    return FOREIGN_KEYS_SCHEMA.empty_table()


# ------------------------------------------------------------------ column metadata


def annotated_schema(table: TableInfo) -> pa.Schema:
    """The table's Arrow schema with the Flight SQL column metadata keys filled in."""
    fields = []
    for field in table.arrow_schema:
        meta = dict(field.metadata or {})
        meta.update(
            {
                b"ARROW:FLIGHT:SQL:CATALOG_NAME": table.catalog.encode(),
                b"ARROW:FLIGHT:SQL:DB_SCHEMA_NAME": table.schema.encode(),
                b"ARROW:FLIGHT:SQL:TABLE_NAME": table.name.encode(),
                b"ARROW:FLIGHT:SQL:TYPE_NAME": catalog_type_name(field.type).encode(),
                b"ARROW:FLIGHT:SQL:IS_READ_ONLY": b"1",
                b"ARROW:FLIGHT:SQL:IS_SEARCHABLE": b"1",
                b"ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT": b"0",
            }
        )
        description = meta.get(b"description") or meta.get(b"comment")
        if description:
            meta[b"ARROW:FLIGHT:SQL:REMARKS"] = description
        fields.append(field.with_metadata(meta))
    return pa.schema(fields, metadata=table.arrow_schema.metadata)
