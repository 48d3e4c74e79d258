"""The one Arrow <-> SQL type table: names for sqlglot's type annotation (`sql_type`), for
catalogs and clients (`catalog_type_name`, the same types in PostgreSQL's spelling), and the
Arrow type of a SQL type name (`arrow_type`)."""

from __future__ import annotations

import functools

import duckdb
import pyarrow as pa
import pyarrow.types as t
from sqlglot import exp
from sqlglot.errors import ParseError


def sql_type(typ: pa.DataType) -> str:
    """A PostgreSQL-style type name for an Arrow type (used to type-check and transpile queries)."""
    if t.is_boolean(typ):
        return "BOOLEAN"
    if t.is_int8(typ) or t.is_int16(typ) or t.is_uint8(typ):
        return "SMALLINT"
    if t.is_int32(typ) or t.is_uint16(typ):
        return "INT"
    if t.is_int64(typ) or t.is_uint32(typ):
        return "BIGINT"
    if t.is_uint64(typ):
        return "DECIMAL(20, 0)"
    if t.is_float16(typ) or t.is_float32(typ):
        return "REAL"
    if t.is_float64(typ):
        return "DOUBLE"
    if t.is_decimal(typ):
        return f"DECIMAL({typ.precision}, {typ.scale})"
    if t.is_string(typ) or t.is_large_string(typ) or t.is_string_view(typ):
        return "TEXT"
    if t.is_binary(typ) or t.is_large_binary(typ) or t.is_fixed_size_binary(typ) or t.is_binary_view(typ):
        return "BYTEA"
    if t.is_date(typ):
        return "DATE"
    if t.is_timestamp(typ):
        return "TIMESTAMPTZ" if typ.tz else "TIMESTAMP"
    if t.is_time(typ):
        return "TIME"
    if t.is_interval(typ) or t.is_duration(typ):
        return "INTERVAL"
    if t.is_list(typ) or t.is_large_list(typ) or t.is_fixed_size_list(typ) or t.is_list_view(typ):
        return f"{sql_type(typ.value_type)}[]"
    if t.is_struct(typ):
        inner = ", ".join(f'"{f.name}" {sql_type(f.type)}' for f in typ)
        return f"STRUCT({inner})"
    if t.is_map(typ):
        return f"MAP({sql_type(typ.key_type)}, {sql_type(typ.item_type)})"
    if t.is_dictionary(typ):
        return sql_type(typ.value_type)
    if t.is_null(typ):
        return "NULL"
    return "UNKNOWN"


_CATALOG_NAMES = {"BOOLEAN": "boolean", "SMALLINT": "smallint", "INT": "integer", "BIGINT": "bigint",
                  "REAL": "real", "DOUBLE": "double precision", "TEXT": "varchar", "BYTEA": "bytea",
                  "DATE": "date", "TIME": "time", "TIMESTAMP": "timestamp",
                  "TIMESTAMPTZ": "timestamp with time zone", "INTERVAL": "interval"}


def catalog_type_name(typ: pa.DataType) -> str:
    """`sql_type` as catalogs show it (PostgreSQL's spelling: `bigint`, `numeric(20,0)`,
    `timestamp with time zone`, `integer[]`, `struct`, `map`)."""
    if t.is_list(typ) or t.is_large_list(typ) or t.is_fixed_size_list(typ) or t.is_list_view(typ):
        return f"{catalog_type_name(typ.value_type)}[]"
    if t.is_dictionary(typ):
        return catalog_type_name(typ.value_type)
    name = sql_type(typ)
    if name.startswith("DECIMAL("):
        return "numeric(" + name[len("DECIMAL("):].replace(" ", "")
    if name.startswith(("STRUCT(", "MAP(")):
        return name.split("(", 1)[0].lower()
    return _CATALOG_NAMES.get(name, str(typ))


@functools.lru_cache(maxsize=256)
def arrow_type(sql: str) -> pa.DataType:
    """The Arrow type of a SQL type name as a pod writes it (`BIGINT`, `DECIMAL(10, 2)`,
    `TIMESTAMPTZ`, `STRUCT(a INT, b VARCHAR)`, `INT[]`...), as DuckDB maps it (time zones: UTC).

    Raises ValueError naming the type when it is not one."""
    try:
        parsed = exp.DataType.build(sql, dialect="duckdb") if ";" not in sql else None
    except (ParseError, ValueError):
        parsed = None
    if parsed is None or parsed.this == exp.DataType.Type.USERDEFINED:
        raise ValueError(f"'{sql}' is not a SQL type (e.g. BIGINT, DOUBLE, VARCHAR, DECIMAL(10, 2), "
                         f"TIMESTAMP, TIMESTAMPTZ, DATE, BOOLEAN, STRUCT(a INT), INT[])")
    con = duckdb.connect(":memory:", config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(f"SELECT CAST(NULL AS {parsed.sql('duckdb')}) AS v").to_arrow_table().schema.field(0).type
    except duckdb.Error as e:
        raise ValueError(f"'{sql}' is not a SQL type DuckDB knows: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
