"""SqlInfo and XDBC type info: what the server tells clients about itself and its SQL.

Both are small constant tables (tens of rows) built with Arrow arrays from Python values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from . import flight_sql_pb2 as pb

SERVER_NAME = "Satchel"

_STR = pa.utf8()

# The dense union of CommandGetSqlInfo values; child order fixes the type codes 0..5.
SQL_INFO_VALUE_TYPE = pa.dense_union(
    [
        pa.field("string_value", _STR),
        pa.field("bool_value", pa.bool_()),
        pa.field("bigint_value", pa.int64()),
        pa.field("int32_bitmask", pa.int32()),
        pa.field("string_list", pa.list_(_STR)),
        pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32()))),
    ]
)
SQL_INFO_SCHEMA = pa.schema(
    [
        pa.field("info_name", pa.uint32(), nullable=False),
        pa.field("value", SQL_INFO_VALUE_TYPE, nullable=False),
    ]
)

XDBC_TYPE_INFO_SCHEMA = pa.schema(
    [
        pa.field("type_name", _STR, nullable=False),
        pa.field("data_type", pa.int32(), nullable=False),
        pa.field("column_size", pa.int32()),
        pa.field("literal_prefix", _STR),
        pa.field("literal_suffix", _STR),
        pa.field("create_params", pa.list_(pa.field("item", _STR, nullable=False))),
        pa.field("nullable", pa.int32(), nullable=False),
        pa.field("case_sensitive", pa.bool_(), nullable=False),
        pa.field("searchable", pa.int32(), nullable=False),
        pa.field("unsigned_attribute", pa.bool_()),
        pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
        pa.field("auto_increment", pa.bool_()),
        pa.field("local_type_name", _STR),
        pa.field("minimum_scale", pa.int32()),
        pa.field("maximum_scale", pa.int32()),
        pa.field("sql_data_type", pa.int32(), nullable=False),
        pa.field("datetime_subcode", pa.int32()),
        pa.field("num_prec_radix", pa.int32()),
        pa.field("interval_precision", pa.int32()),
    ]
)

# ------------------------------------------------------------------ SqlInfo


@dataclass(frozen=True)
class Int32:
    """A SqlInfo value that travels in the union's int32 slot (bitmasks, enum ordinals)."""

    value: int


def _bits(*ordinals: int) -> Int32:
    mask = 0
    for ordinal in ordinals:
        mask |= 1 << ordinal
    return Int32(mask)


SqlInfoValue = str | bool | int | Int32 | list | dict

# SqlSupportsConvert ordinals
_BIGINT, _BINARY, _BIT, _CHAR, _DATE, _DECIMAL, _FLOAT, _INTEGER = 0, 1, 2, 3, 4, 5, 6, 7
_NUMERIC, _REAL, _SMALLINT, _TIME, _TIMESTAMP, _TINYINT, _VARBINARY, _VARCHAR = (
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
)
_NUMBERS = [_BIGINT, _DECIMAL, _FLOAT, _INTEGER, _NUMERIC, _REAL, _SMALLINT, _TINYINT]
_CONVERSIONS: dict[int, list[int]] = {
    **{n: _NUMBERS + [_CHAR, _VARCHAR] for n in _NUMBERS},
    _BIT: [_BIT, _INTEGER, _BIGINT, _VARCHAR],
    _CHAR: _NUMBERS + [_BIT, _CHAR, _DATE, _TIME, _TIMESTAMP, _VARCHAR, _VARBINARY],
    _VARCHAR: _NUMBERS + [_BIT, _CHAR, _DATE, _TIME, _TIMESTAMP, _VARCHAR, _VARBINARY],
    _DATE: [_DATE, _TIMESTAMP, _CHAR, _VARCHAR],
    _TIME: [_TIME, _CHAR, _VARCHAR],
    _TIMESTAMP: [_DATE, _TIME, _TIMESTAMP, _CHAR, _VARCHAR],
    _BINARY: [_BINARY, _VARBINARY, _VARCHAR],
    _VARBINARY: [_BINARY, _VARBINARY, _VARCHAR],
}

_KEYWORDS = """
    analyze asymmetric both cast describe explain filter ilike interval lateral limit
    offset over qualify returning show similar summarize symmetric tablesample unnest
    variadic window
""".split()
_NUMERIC_FUNCTIONS = """
    abs acos asin atan atan2 cbrt ceil ceiling cos cot degrees exp floor greatest least
    ln log log10 log2 mod pi power radians random round sign sin sqrt tan trunc
""".split()
_STRING_FUNCTIONS = """
    ascii btrim char_length character_length chr concat concat_ws initcap left length
    lower lpad ltrim md5 octet_length position regexp_match regexp_replace repeat
    replace reverse right rpad rtrim split_part starts_with strpos substr substring
    to_hex translate trim upper
""".split()
_SYSTEM_FUNCTIONS = """
    coalesce current_schema nullif version
""".split()
_DATETIME_FUNCTIONS = """
    current_date current_time current_timestamp date_bin date_part date_trunc extract
    make_date now to_char to_date to_timestamp
""".split()


def sql_info_values(server_version: str, handle_ttl_seconds: float) -> dict[int, SqlInfoValue]:
    """Every SqlInfo Satchel answers, keyed by info id."""
    S = pb.SqlInfo.Value
    ttl_ms = min(int(handle_ttl_seconds * 1000), 2**31 - 1)
    values: dict[str, SqlInfoValue] = {
        "FLIGHT_SQL_SERVER_NAME": SERVER_NAME,
        "FLIGHT_SQL_SERVER_VERSION": server_version,
        "FLIGHT_SQL_SERVER_ARROW_VERSION": pa.__version__,
        "FLIGHT_SQL_SERVER_READ_ONLY": True,
        "FLIGHT_SQL_SERVER_SQL": True,
        "FLIGHT_SQL_SERVER_SUBSTRAIT": False,
        "FLIGHT_SQL_SERVER_TRANSACTION": Int32(0),  # SQL_SUPPORTED_TRANSACTION_NONE
        "FLIGHT_SQL_SERVER_CANCEL": False,
        "FLIGHT_SQL_SERVER_BULK_INGESTION": False,
        "FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED": False,
        "FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT": Int32(ttl_ms),
        "FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT": Int32(0),
        "SQL_DDL_CATALOG": False,
        "SQL_DDL_SCHEMA": False,
        "SQL_DDL_TABLE": False,
        "SQL_IDENTIFIER_CASE": Int32(3),  # SQL_CASE_SENSITIVITY_LOWERCASE (unquoted folds)
        "SQL_IDENTIFIER_QUOTE_CHAR": '"',
        "SQL_QUOTED_IDENTIFIER_CASE": Int32(0),  # UNKNOWN: quoted names keep their case
        "SQL_ALL_TABLES_ARE_SELECTABLE": True,
        "SQL_NULL_ORDERING": Int32(0),  # SQL_NULLS_SORTED_HIGH, as PostgreSQL
        "SQL_KEYWORDS": _KEYWORDS,
        "SQL_NUMERIC_FUNCTIONS": _NUMERIC_FUNCTIONS,
        "SQL_STRING_FUNCTIONS": _STRING_FUNCTIONS,
        "SQL_SYSTEM_FUNCTIONS": _SYSTEM_FUNCTIONS,
        "SQL_DATETIME_FUNCTIONS": _DATETIME_FUNCTIONS,
        "SQL_SEARCH_STRING_ESCAPE": "\\",
        "SQL_EXTRA_NAME_CHARACTERS": "",
        "SQL_SUPPORTS_COLUMN_ALIASING": True,
        "SQL_NULL_PLUS_NULL_IS_NULL": True,
        "SQL_SUPPORTS_CONVERT": _CONVERSIONS,
        "SQL_SUPPORTS_TABLE_CORRELATION_NAMES": True,
        "SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES": False,
        "SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY": True,
        "SQL_SUPPORTS_ORDER_BY_UNRELATED": True,
        "SQL_SUPPORTED_GROUP_BY": _bits(0, 1),  # unrelated, beyond select
        "SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE": True,
        "SQL_SUPPORTS_NON_NULLABLE_COLUMNS": True,
        "SQL_SUPPORTED_GRAMMAR": _bits(0, 1),  # minimum, core
        "SQL_ANSI92_SUPPORTED_LEVEL": _bits(0, 1),  # entry, intermediate
        "SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY": False,
        "SQL_OUTER_JOINS_SUPPORT_LEVEL": Int32(2),  # SQL_FULL_OUTER_JOINS
        "SQL_SCHEMA_TERM": "schema",
        "SQL_PROCEDURE_TERM": "procedure",
        "SQL_CATALOG_TERM": "catalog",
        "SQL_CATALOG_AT_START": True,
        "SQL_SCHEMAS_SUPPORTED_ACTIONS": Int32(0),
        "SQL_CATALOGS_SUPPORTED_ACTIONS": Int32(0),
        "SQL_SUPPORTED_POSITIONED_COMMANDS": Int32(0),
        "SQL_SELECT_FOR_UPDATE_SUPPORTED": False,
        "SQL_STORED_PROCEDURES_SUPPORTED": False,
        "SQL_SUPPORTED_SUBQUERIES": _bits(0, 1, 2, 3),  # comparisons, exists, in, quantified
        "SQL_CORRELATED_SUBQUERIES_SUPPORTED": True,
        "SQL_SUPPORTED_UNIONS": _bits(0, 1),  # UNION, UNION ALL
        "SQL_MAX_COLUMN_NAME_LENGTH": 63,
        "SQL_MAX_TABLE_NAME_LENGTH": 63,
        "SQL_DB_SCHEMA_NAME_LENGTH": 63,
        "SQL_MAX_CATALOG_NAME_LENGTH": 63,
        "SQL_DEFAULT_TRANSACTION_ISOLATION": Int32(0),  # SQL_TRANSACTION_NONE
        "SQL_TRANSACTIONS_SUPPORTED": False,
        "SQL_SUPPORTED_TRANSACTIONS_ISOLATION_LEVELS": Int32(0),
        "SQL_DATA_DEFINITION_CAUSES_TRANSACTION_COMMIT": False,
        "SQL_DATA_DEFINITIONS_IN_TRANSACTIONS_IGNORED": False,
        "SQL_SUPPORTED_RESULT_SET_TYPES": _bits(1),  # forward only
        "SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_FORWARD_ONLY": _bits(1),  # read only
        "SQL_BATCH_UPDATES_SUPPORTED": False,
        "SQL_SAVEPOINTS_SUPPORTED": False,
        "SQL_NAMED_PARAMETERS_SUPPORTED": False,
        "SQL_LOCATORS_UPDATE_COPY": False,
        "SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED": False,
    }
    return {S(name): value for name, value in values.items()}


def sql_info_table(values: dict[int, SqlInfoValue], requested: Sequence[int]) -> pa.Table:
    """Rows for the requested ids (all when none are requested) in the spec's union layout.

    Ids the server does not know are left out, as the protocol allows.
    """
    ids = sorted(values) if not requested else [i for i in dict.fromkeys(requested) if i in values]
    children: list[list] = [[] for _ in range(6)]
    type_codes: list[int] = []
    offsets: list[int] = []
    for info_id in ids:
        code, item = _union_slot(values[info_id])
        type_codes.append(code)
        offsets.append(len(children[code]))
        children[code].append(item)
    arrays = [
        pa.array(items, type=SQL_INFO_VALUE_TYPE.field(code).type)
        for code, items in enumerate(children)
    ]
    union = pa.UnionArray.from_dense(
        pa.array(type_codes, pa.int8()),
        pa.array(offsets, pa.int32()),
        arrays,
        [SQL_INFO_VALUE_TYPE.field(i).name for i in range(6)],
    )
    return pa.Table.from_arrays([pa.array(ids, pa.uint32()), union], schema=SQL_INFO_SCHEMA)


def _union_slot(value: SqlInfoValue) -> tuple[int, object]:
    if isinstance(value, bool):
        return 1, value
    if isinstance(value, str):
        return 0, value
    if isinstance(value, Int32):
        return 3, value.value
    if isinstance(value, int):
        return 2, value
    if isinstance(value, list):
        return 4, value
    if isinstance(value, dict):
        return 5, list(value.items())
    raise TypeError(f"unsupported SqlInfo value {value!r}")


# ------------------------------------------------------------------ XDBC type info

# XdbcDataType values
_X_BIT, _X_TINYINT, _X_BIGINT, _X_LONGVARBINARY, _X_VARBINARY = -7, -6, -5, -4, -3
_X_CHAR, _X_NUMERIC, _X_DECIMAL, _X_INTEGER, _X_SMALLINT = 1, 2, 3, 4, 5
_X_FLOAT, _X_REAL, _X_DOUBLE, _X_DATETIME, _X_INTERVAL, _X_VARCHAR = 6, 7, 8, 9, 10, 12
_X_DATE, _X_TIME, _X_TIMESTAMP = 91, 92, 93


@dataclass(frozen=True)
class _XdbcType:
    type_name: str
    data_type: int
    column_size: int | None = None
    literal_prefix: str | None = None
    literal_suffix: str | None = None
    create_params: tuple[str, ...] | None = None
    case_sensitive: bool = False
    searchable: int = 2  # SEARCHABLE_BASIC
    unsigned_attribute: bool | None = None
    fixed_prec_scale: bool = False
    minimum_scale: int | None = None
    maximum_scale: int | None = None
    sql_data_type: int | None = None
    datetime_subcode: int | None = None
    num_prec_radix: int | None = None


_XDBC_TYPES: tuple[_XdbcType, ...] = (
    _XdbcType("boolean", _X_BIT, 1),
    _XdbcType(
        "bigint",
        _X_BIGINT,
        19,
        unsigned_attribute=False,
        num_prec_radix=10,
        minimum_scale=0,
        maximum_scale=0,
    ),
    _XdbcType("bytea", _X_VARBINARY, None, "'\\x", "'"),
    _XdbcType(
        "numeric",
        _X_NUMERIC,
        38,
        create_params=("precision", "scale"),
        unsigned_attribute=False,
        fixed_prec_scale=False,
        minimum_scale=0,
        maximum_scale=38,
        num_prec_radix=10,
    ),
    _XdbcType(
        "integer",
        _X_INTEGER,
        10,
        unsigned_attribute=False,
        num_prec_radix=10,
        minimum_scale=0,
        maximum_scale=0,
    ),
    _XdbcType(
        "smallint",
        _X_SMALLINT,
        5,
        unsigned_attribute=False,
        num_prec_radix=10,
        minimum_scale=0,
        maximum_scale=0,
    ),
    _XdbcType("real", _X_REAL, 24, unsigned_attribute=False, num_prec_radix=2),
    _XdbcType("double precision", _X_DOUBLE, 53, unsigned_attribute=False, num_prec_radix=2),
    _XdbcType(
        "varchar", _X_VARCHAR, None, "'", "'", ("length",), case_sensitive=True, searchable=3
    ),
    _XdbcType("date", _X_DATE, 10, "DATE '", "'", sql_data_type=_X_DATETIME, datetime_subcode=1),
    _XdbcType("time", _X_TIME, 15, "TIME '", "'", sql_data_type=_X_DATETIME, datetime_subcode=2),
    _XdbcType(
        "timestamp",
        _X_TIMESTAMP,
        26,
        "TIMESTAMP '",
        "'",
        sql_data_type=_X_DATETIME,
        datetime_subcode=3,
    ),
    _XdbcType(
        "timestamp with time zone",
        _X_TIMESTAMP,
        32,
        "TIMESTAMPTZ '",
        "'",
        sql_data_type=_X_DATETIME,
        datetime_subcode=5,
    ),
    _XdbcType("interval", _X_INTERVAL, None, "INTERVAL '", "'", sql_data_type=_X_INTERVAL),
)


def xdbc_type_info_table(data_type: int | None) -> pa.Table:
    """The XDBC type catalogue, optionally narrowed to one data_type, ordered by the spec."""
    rows = sorted(
        (t for t in _XDBC_TYPES if data_type is None or t.data_type == data_type),
        key=lambda t: (t.data_type, t.type_name),
    )
    columns = {
        "type_name": [t.type_name for t in rows],
        "data_type": [t.data_type for t in rows],
        "column_size": [t.column_size for t in rows],
        "literal_prefix": [t.literal_prefix for t in rows],
        "literal_suffix": [t.literal_suffix for t in rows],
        "create_params": [list(t.create_params) if t.create_params else None for t in rows],
        "nullable": [1] * len(rows),  # NULLABILITY_NULLABLE
        "case_sensitive": [t.case_sensitive for t in rows],
        "searchable": [t.searchable for t in rows],
        "unsigned_attribute": [t.unsigned_attribute for t in rows],
        "fixed_prec_scale": [t.fixed_prec_scale for t in rows],
        "auto_increment": [False if t.num_prec_radix else None for t in rows],
        "local_type_name": [t.type_name for t in rows],
        "minimum_scale": [t.minimum_scale for t in rows],
        "maximum_scale": [t.maximum_scale for t in rows],
        "sql_data_type": [
            t.sql_data_type if t.sql_data_type is not None else t.data_type for t in rows
        ],
        "datetime_subcode": [t.datetime_subcode for t in rows],
        "num_prec_radix": [t.num_prec_radix for t in rows],
        "interval_precision": [None] * len(rows),
    }
    return pa.Table.from_pydict(columns, schema=XDBC_TYPE_INFO_SCHEMA)
