"""Built-in data tools a model (or MCP client) can call: list_datasets, table_schema, sql,
sample_data, search (by meaning, over the datasets with embedding columns). Every query goes through Runtime.query (read-only policy, scopes, limits,
task history); every result is bounded by rows and bytes with an explicit `truncated` flag."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from connectors.sql_render import quote_ident, written_ident
from engine.arrow_sql_types import catalog_type_name
from engine.errors import BadRequest, SatchelError
from engine.runtime import Principal, Runtime

from ..http.formats import json_body, json_ready

MAX_ROWS = 50
MAX_BYTES = 16 * 1024

TOOL_NAMES = ("list_datasets", "table_schema", "sql", "sample_data", "search")
SEARCH_LIMIT = 10

TOOL_SPECS: dict[str, dict] = {
    "list_datasets": {"description": "List the datasets (tables and views) you can query, with descriptions.",
                      "parameters": {"type": "object", "properties": {}, "additionalProperties": False}},
    "table_schema": {"description": "Columns of one dataset: name, type and description.",
                     "parameters": {"type": "object", "properties": {"table": {"type": "string"}},
                                    "required": ["table"], "additionalProperties": False}},
    "sql": {"description": "Run one read-only SQL query (PostgreSQL dialect) and get its rows.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                           "required": ["query"], "additionalProperties": False}},
    "sample_data": {"description": "A few rows of one dataset.",
                    "parameters": {"type": "object", "properties": {"table": {"type": "string"},
                                                                    "limit": {"type": "integer", "minimum": 1,
                                                                              "maximum": 50}},
                                   "required": ["table"], "additionalProperties": False}},
    "search": {"description": "Find rows by meaning: vector search over the datasets' embedding columns "
                              "(optionally only some datasets, filtered by a SQL condition).",
               "parameters": {"type": "object", "properties": {
                   "text": {"type": "string"}, "datasets": {"type": "array", "items": {"type": "string"}},
                   "limit": {"type": "integer", "minimum": 1, "maximum": SEARCH_LIMIT},
                   "where": {"type": "string"}},
                   "required": ["text"], "additionalProperties": False}},
}


def openai_tools(names: list[str]) -> list[dict]:
    return [{"type": "function", "function": {"name": n, **TOOL_SPECS[n]}} for n in names]


def selected_tools(param: Any) -> list[str]:
    """`tools: auto` -> all; a list or comma-separated names -> those (unknown names rejected)."""
    if param is None or param in ("", "none", "false"):
        return []
    if isinstance(param, str):
        names = list(TOOL_NAMES) if param.strip() in ("auto", "all", "true") else [p.strip() for p in param.split(",")]
    else:
        names = [str(p).strip() for p in param]
    unknown = [n for n in names if n not in TOOL_NAMES]
    if unknown:
        raise BadRequest(f"unknown tools {unknown}; built-in tools: {', '.join(TOOL_NAMES)}")
    return names


class DataTools:
    def __init__(self, runtime: Runtime, max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES) -> None:
        self.runtime = runtime
        self.max_rows, self.max_bytes = max_rows, max_bytes

    def list_datasets(self, principal: Principal) -> list[dict]:
        """The datasets and views `principal` may query."""
        return [{"name": t.name if t.schema == "public" else f"{t.schema}.{t.name}", "type": t.table_type.lower(),
                 "description": t.description} for t in self.runtime.tables(principal)]

    def table_schema(self, table: str, principal: Principal) -> dict:
        """Visible columns of one dataset; a masked column says how (`masked`). `unique_keys`:
        the column sets no two rows share (a model need not deduplicate on them)."""
        for t in self.runtime.tables(principal):
            if table.lower() in (t.name.lower(), f"{t.schema}.{t.name}".lower()):
                return {"table": table, "description": t.description, "primary_key": list(t.primary_key),
                        "unique_keys": [list(k) for k in t.unique_keys], "columns": [_column(f) for f in t.arrow_schema]}
        raise BadRequest(f"unknown dataset '{table}'; call list_datasets for the names")

    def sql(self, query: str, principal: Principal, protocol: str = "tool", max_rows: int | None = None) -> dict:
        limit = min(max_rows or self.max_rows, self.max_rows)
        reader = self.runtime.query(query, principal, protocol=protocol)
        return bounded_rows(reader, limit, self.max_bytes)

    def sample_data(self, table: str, principal: Principal, limit: int = 5, protocol: str = "tool") -> dict:
        self.table_schema(table, principal)  # clear error for unknown names
        n = max(1, min(int(limit or 5), self.max_rows))
        ident = ".".join(quote_ident(part) for part in table.split("."))
        return self.sql(f"SELECT * FROM {ident} LIMIT {n}", principal, protocol=protocol)

    def schema_context(self, only: Any, principal: Principal) -> str:
        """The datasets `principal` may query as a prompt for a model writing SQL: each as
        pseudo-DDL (names written as a query must write them, SQL types, descriptions) and
        sample rows. One pass over the catalog."""
        lines = []
        for t in self.runtime.tables(principal):
            if t.schema != "public" or (only and t.name not in only):
                continue
            cols = ", ".join(f"{written_ident(c['name'])} {c['type']}"
                             + (f" -- {c['description']}" if c["description"] else "") for c in map(_column, t.arrow_schema))
            lines.append(f"TABLE {written_ident(t.name)} ({cols})" + (f" -- {t.description}" if t.description else ""))
            try:
                sample = self.sql(f"SELECT * FROM {quote_ident(t.name)} LIMIT 3", principal, protocol="nsql")
                lines.append(f"  sample rows: {json.dumps(sample['rows'], default=str)[:1000]}")
            except SatchelError:
                pass
        return "\n".join(lines)

    def search(self, arguments: dict, principal: Principal, protocol: str = "tool") -> dict:
        """/v1/search for a model or MCP client: at most SEARCH_LIMIT results and `max_bytes` of
        JSON (`truncated` says when results or text were cut)."""
        body = {k: v for k, v in arguments.items() if v not in (None, "", [])}
        body["limit"] = max(1, min(int(body.get("limit") or 5), SEARCH_LIMIT))
        out = self.runtime.search(body, principal, protocol=protocol)
        results, size, truncated = [], 2, bool(out.get("truncated"))
        for item in json_ready(out["results"]):
            cost = len(json.dumps(item)) + 2
            if size + cost > self.max_bytes:
                truncated = True
                break
            results.append(item)
            size += cost
        return {"results": results, "row_count": len(results), "truncated": truncated}

    def call(self, name: str, arguments: dict, principal: Principal, protocol: str = "tool") -> dict:
        """Run one tool; errors come back as {"error": ...} so the model can correct itself."""
        try:
            if name == "list_datasets":
                result: Any = {"datasets": self.list_datasets(principal)}
            elif name == "table_schema":
                result = self.table_schema(str(arguments.get("table", "")), principal)
            elif name == "sql":
                result = self.sql(str(arguments.get("query", "")), principal, protocol)
            elif name == "search":
                result = self.search(arguments, principal, protocol)
            elif name == "sample_data":
                result = self.sample_data(str(arguments.get("table", "")), principal,
                                          int(arguments.get("limit") or 5), protocol)
            else:
                raise BadRequest(f"unknown tool '{name}'")
            return result
        except (SatchelError, ValueError, TypeError) as e:
            return {"error": getattr(e, "message", str(e))}


def bounded_rows(reader: pa.RecordBatchReader, max_rows: int, max_bytes: int) -> dict:
    """At most `max_rows` rows and ~`max_bytes` of JSON; `truncated` says whether rows were cut.
    Values are written as the HTTP API writes them (ISO timestamps, decimals as numbers, bytes
    as `\\xFF` text, NaN and infinities as strings: the JSON stays strict)."""
    columns = [f.name for f in reader.schema]
    rows: list[list] = []
    size, truncated = 2, False
    for batch in reader:
        batch = batch.slice(0, max_rows - len(rows) + 1)  # one past the cap tells that rows were cut
        for row in json.loads(json_body(reader.schema, [batch])):
            values = list(row.values())
            cost = len(json.dumps(values, ensure_ascii=False)) + 2  # the ", " separator
            if len(rows) >= max_rows or size + cost > max_bytes:
                truncated = True
                break
            rows.append(values)
            size += cost
        if truncated:
            break
    return {"columns": columns, "rows": rows, "row_count": len(rows), "truncated": truncated}


def _column(f: pa.Field) -> dict:
    """A column for a model writing SQL: its SQL type (as information_schema.columns gives it)."""
    meta = f.metadata or {}
    out = {"name": f.name, "type": catalog_type_name(f.type),
           "description": meta.get(b"description", b"").decode() or None}
    if b"masked" in meta:
        out["masked"] = meta[b"masked"].decode()
    return out
