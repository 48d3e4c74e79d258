"""The SQL catalog: `information_schema.tables`, `.columns` and `.schemata` as the caller sees
them (its datasets, views and runtime tables, and only the columns its policy shows), and
`SHOW TABLES`, `SHOW COLUMNS FROM t` and `DESCRIBE t` as the queries over them they stand for.

Agents writing SQL look here first; the rows come from the same table list as Flight SQL's
GetTables and `/v1/datasets` (`Runtime.tables`), built per query, never cached."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import sqlglot
from sqlglot import exp

from ..arrow_sql_types import catalog_type_name
from ..errors import DatasetNotReady, SqlError, UnknownDataset

SCHEMA_NAME = "information_schema"
CATALOG = "spice"


@dataclass(frozen=True)
class TableInfo:
    """One table or view as a caller sees it (`Runtime.tables`): the catalog's one row source."""

    catalog: str
    schema: str
    name: str
    table_type: str  # TABLE | VIEW
    arrow_schema: pa.Schema
    primary_key: tuple[str, ...]
    description: str | None
    unique_keys: tuple[tuple[str, ...], ...] = ()  # column sets a unique index holds (acceleration.indexes)
DESCRIBED = "satchel_described"  # a DESCRIBE's tree carries the table it names in its meta, under this key


def _fields(*columns: tuple[str, pa.DataType, str]) -> pa.Schema:
    return pa.schema([pa.field(name, typ, name not in _NOT_NULL, {b"description": text.encode()})
                      for name, typ, text in columns])


_NOT_NULL = {"table_name", "column_name", "schema_name"}
_S = pa.string()
_WHERE = (("table_catalog", _S, "The catalog: always 'spice'."),
          ("table_schema", _S, "The schema: 'public' for datasets and views, 'runtime' for task_history."),
          ("table_name", _S, "The table's name, as queries write it."))
TABLES = {
    "tables": (_fields(*_WHERE, ("table_type", _S, "'BASE TABLE' or 'VIEW'."),
                       ("description", _S, "What the table holds, from the spicepod.")),
               "Every table and view you may query, with its description."),
    "columns": (_fields(*_WHERE, ("column_name", _S, "The column's name."),
                        ("ordinal_position", pa.int32(), "The column's position in the table, from 1."),
                        ("column_default", _S, "Always NULL: the tables are read-only."),
                        ("is_nullable", _S, "'YES' or 'NO'."),
                        ("data_type", _S, "The SQL type, in PostgreSQL's spelling (bigint, timestamp with time zone)."),
                        ("description", _S, "What the column holds, from the spicepod.")),
                "The columns of every table and view you may query, with their types and descriptions."),
    "schemata": (_fields(("catalog_name", _S, "The catalog: always 'spice'."),
                         ("schema_name", _S, "The schema's name.")),
                 "The schemas: public, runtime and information_schema."),
}


def reads_catalog(tree: exp.Expression) -> bool:
    """Whether a query names an information_schema table."""
    return any((t.db or "").lower() == SCHEMA_NAME for t in tree.find_all(exp.Table))


def catalog_rows(tables: Sequence[TableInfo]) -> dict[str, pa.Table]:
    """The information_schema tables for a caller who sees `tables` (metadata: a few rows per table)."""
    own = [(SCHEMA_NAME, name, "VIEW", schema, text) for name, (schema, text) in TABLES.items()]
    listed = [(t.schema, t.name, "BASE TABLE" if t.table_type == "TABLE" else t.table_type, t.arrow_schema,
               t.description) for t in tables] + own
    columns = [(schema, name, i, field) for schema, name, _, fields, _ in listed for i, field in enumerate(fields, 1)]
    schemas = sorted({schema for schema, *_ in listed})
    return {
        "tables": pa.table([[CATALOG] * len(listed), [t[0] for t in listed], [t[1] for t in listed],
                            [t[2] for t in listed], [t[4] for t in listed]], schema=TABLES["tables"][0]),
        "columns": pa.table([[CATALOG] * len(columns), [c[0] for c in columns], [c[1] for c in columns],
                             [c[3].name for c in columns], pa.array([c[2] for c in columns], pa.int32()),
                             pa.nulls(len(columns), _S), ["YES" if c[3].nullable else "NO" for c in columns],
                             [catalog_type_name(c[3].type) for c in columns],
                             [_description(c[3]) for c in columns]], schema=TABLES["columns"][0]),
        "schemata": pa.table([[CATALOG] * len(schemas), schemas], schema=TABLES["schemata"][0]),
    }


def _description(field: pa.Field) -> str | None:
    return (field.metadata or {}).get(b"description", b"").decode() or None


def check_described(tree: exp.Expression, rows: dict[str, pa.Table], is_dataset: Callable[[str], bool]) -> None:
    """A DESCRIBE or SHOW COLUMNS of a table the caller does not see is an unknown table (not no
    rows); of a dataset it sees (`is_dataset`) but that is not listed, one whose columns are not
    known yet."""
    named = tree.meta.get(DESCRIBED)
    if named is None:
        return
    schema, name = named
    listed = rows["tables"]
    found = any(s.lower() == schema.lower() and n.lower() == name.lower()
                for s, n in zip(listed.column("table_schema").to_pylist(), listed.column("table_name").to_pylist()))
    if not found and schema == "public" and is_dataset(name):
        raise DatasetNotReady(f"the columns of '{name}' are not known yet: its source has not told its schema "
                              f"(a first load under way, or the source not answering; see /v1/status)")
    if not found:
        raise UnknownDataset(f"unknown table '{name if schema == 'public' else f'{schema}.{name}'}'")


SUPPORTED = ("SHOW TABLES, SHOW COLUMNS FROM <table> and DESCRIBE <table> are, as are queries over "
             "information_schema.tables, .columns and .schemata")


def shown(first: str, words: list[str], text: str, starts: list[int], dialect: str) -> exp.Expression | None:
    """The query a SHOW or DESCRIBE statement stands for (`first`: SHOW, DESCRIBE or DESC; `words`:
    the rest's tokens upper-cased, `starts`: where each begins in `text`, the rest); None when it
    is not one of those."""
    if first == "SHOW" and words == ["TABLES"]:
        return (exp.select("table_catalog", "table_schema", "table_name", "table_type", "description")
                .from_(f"{SCHEMA_NAME}.tables").order_by("table_schema", "table_name"))
    if first == "SHOW" and words[:1] == ["COLUMNS"] and len(words) > 2 and words[1] in ("FROM", "IN"):
        return _columns_of(text[starts[2]:], dialect,
                           ("table_catalog", "table_schema", "table_name", "column_name", "data_type",
                            "is_nullable", "description"))
    if first in ("DESCRIBE", "DESC") and words:
        rest = starts[1] if words[0] == "TABLE" and len(words) > 1 else 0
        return _columns_of(text[rest:], dialect, ("column_name", "data_type", "is_nullable", "description"))
    return None


def _columns_of(name_text: str, dialect: str, columns: tuple[str, ...]) -> exp.Expression:
    name_text = name_text.strip().rstrip(";").strip()
    try:
        table = sqlglot.parse_one(name_text, into=exp.Table, dialect=dialect) if name_text else None
    except sqlglot.errors.SqlglotError:
        table = None
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise SqlError(f"SHOW COLUMNS and DESCRIBE take a table name, such as DESCRIBE orders; got {name_text!r}")
    if table.catalog and table.catalog.lower() != CATALOG:
        raise UnknownDataset(f"unknown catalog '{table.catalog}'; the only catalog is '{CATALOG}'")
    schema = table.db or "public"
    where = exp.and_(
        exp.EQ(this=exp.Lower(this=exp.column("table_schema")), expression=exp.Literal.string(schema.lower())),
        exp.EQ(this=exp.Lower(this=exp.column("table_name")), expression=exp.Literal.string(table.name.lower())))
    query = exp.select(*columns).from_(f"{SCHEMA_NAME}.columns").where(where).order_by("ordinal_position")
    query.meta[DESCRIBED] = (schema, table.name)
    return query


def not_a_view(name: str) -> SqlError:
    """The error for an information_schema table a view reads (its rows are the caller's, made per query)."""
    return SqlError(f"{SCHEMA_NAME}.{name} can be read by a query, not by a view")
