"""JSON and NDJSON through DuckDB's JSON reader, with the schema frozen at inference.

pyarrow's JSON reader handles neither a top-level array nor values of mixed types, so DuckDB
parses (streaming, in C++), and the shared pyarrow filter expressions run over its batches.

Layouts: a JSON array of objects; an object holding one array of objects (the member named
`records`, else the only array-of-objects member); or objects one after another (NDJSON, also
accepted in a .json file). Inference samples SAMPLE_ROWS rows; strings become DATE, TIMESTAMP
or TIMESTAMPTZ only when every sampled value is an ISO 8601 date / timestamp without / with a
UTC offset. A column whose values have mixed JSON types is unsupported (served as JSON text
under `unsupported_type_action: string`).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Callable, Sequence

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from engine.errors import ConnectorError

from .arrowscan import BATCH_ROWS, Inferred

SAMPLE_ROWS = 20480
_DEFAULT_OBJECT_SIZE = 16 << 20
_DATE = r"\d{4}-\d{2}-\d{2}"
_TIMESTAMP = _DATE + r"[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
_TIMESTAMPTZ = _TIMESTAMP + r"(Z|[+-]\d{2}(:?\d{2})?)"
_TEMPORAL_CANDIDATES = ("VARCHAR", "DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE")
_WIDE_INTEGERS = ("HUGEINT", "UBIGINT", "UHUGEINT")
_MIXED = re.compile(r"\bJSON\b")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class JsonFormat:
    """JSON (array / records object / NDJSON) files read by DuckDB with a frozen schema."""

    def __init__(self, dataset: str, fmt: str):
        self.dataset, self.fmt = dataset, fmt
        self._format = "newline_delimited" if fmt == "ndjson" else "auto"
        self._records_key: str | None = None
        self._types: dict[str, str] = {}  # column -> DuckDB type, the frozen schema

    # -- schema ------------------------------------------------------------------------------

    def infer(self, paths: Sequence[str]) -> Inferred:
        con = _connect()
        try:
            if self.fmt == "json":
                self._detect_layout(con, paths)
            described = self._query(con, f"DESCRIBE SELECT * FROM {self._relation(paths, None)}", paths).fetchall()
            types = {row[0]: row[1] for row in described}
            types = self._refine(con, paths, types)
            unsupported = {c: "JSON values of mixed types" for c, t in types.items() if _MIXED.search(t)}
            for column in unsupported:
                types[column] = "JSON"  # read the raw JSON text; dropped or served as text later
            self._types = types
            schema = self._query(con, f"SELECT * FROM {self._relation(paths, types)} LIMIT 0", paths).to_arrow_table().schema
        finally:
            con.close()
        return Inferred(schema, unsupported)

    def _detect_layout(self, con: duckdb.DuckDBPyConnection, paths: Sequence[str]) -> None:
        first = _first_char(paths[0])
        if first == "[":
            self._format = "array"
            return
        if first != "{":
            raise ConnectorError(
                f"dataset '{self.dataset}': {paths[0]} is not JSON records: expected an array of objects, "
                f"an object holding an array of objects, or one object per line"
            )
        head = [paths[0]]
        described = self._query(con, f"DESCRIBE SELECT * FROM {self._relation(head, None)}", head).fetchall()
        arrays = [name for name, typ, *_ in described if typ.startswith("STRUCT(") and typ.endswith(")[]")]
        key = "records" if "records" in arrays else (arrays[0] if len(arrays) == 1 else None)
        if key is None:
            return
        sql = f"SELECT count(*) FROM (SELECT 1 FROM {self._relation(head, None)} LIMIT 2)"
        rows = self._query(con, sql, head).fetchone()[0]
        if rows == 1:
            self._records_key = key

    def _refine(self, con: duckdb.DuckDBPyConnection, paths: Sequence[str], types: dict[str, str]) -> dict[str, str]:
        """Temporal types only when every sampled string is ISO; all-null columns -> VARCHAR;
        wide integers (DuckDB picks HUGEINT for int64 extremes) -> BIGINT when the sample fits."""
        candidates = [c for c, t in types.items() if t in _TEMPORAL_CANDIDATES or t == "JSON" or t in _WIDE_INTEGERS]
        if not candidates:
            return types
        probe = {c: ("VARCHAR" if c in candidates and t not in _WIDE_INTEGERS else t) for c, t in types.items()}
        aggregates = []
        for c in candidates:
            q = _ident(c)
            if types[c] in _WIDE_INTEGERS:
                aggregates += [f"count({q})", f"count(*) FILTER (WHERE {q} BETWEEN {-(2**63)} AND {2**63 - 1})", "0", "0"]
                continue
            aggregates.append(f"count({q})")
            aggregates += [f"count(*) FILTER (WHERE regexp_full_match({q}, {_literal(pattern)}) "
                           f"AND try_cast({q} AS {sql_type}) IS NOT NULL)"
                           for pattern, sql_type in ((_DATE, "DATE"), (_TIMESTAMP, "TIMESTAMP"), (_TIMESTAMPTZ, "TIMESTAMPTZ"))]
        sql = f"SELECT {', '.join(aggregates)} FROM (SELECT * FROM {self._relation(paths, probe)} LIMIT {SAMPLE_ROWS})"
        counts = self._query(con, sql, paths).fetchone()
        refined = dict(types)
        for i, c in enumerate(candidates):
            present, dates, stamps, zoned = counts[4 * i:4 * i + 4]
            if types[c] in _WIDE_INTEGERS:
                refined[c] = "BIGINT" if dates == present else types[c]
            elif present == 0:
                refined[c] = "VARCHAR"
            elif types[c] == "JSON":
                continue
            elif dates == present:
                refined[c] = "DATE"
            elif stamps == present:
                refined[c] = "TIMESTAMP"
            elif zoned == present:
                refined[c] = "TIMESTAMPTZ"
            else:
                refined[c] = "VARCHAR"
        return refined

    # -- scan --------------------------------------------------------------------------------

    def open(self, paths: Sequence[str], physical: pa.Schema, columns: Sequence[str], filter_columns: Sequence[str],
             expression: ds.Expression | None, limit: int | None) -> tuple[pa.RecordBatchReader, Callable[[], None] | None]:
        """A reader of `columns`: DuckDB parses, pyarrow applies `expression`."""
        selected = list(columns) + [c for c in filter_columns if c not in columns]
        select = ", ".join(_ident(c) for c in selected) or '1 AS "__satchel_rows"'
        sql = f"SELECT {select} FROM {self._relation(paths, self._types)}"
        if limit is not None and expression is None:
            sql += f" LIMIT {int(limit)}"
        con = _connect()
        try:
            reader = self._query(con, sql, paths).to_arrow_reader(BATCH_ROWS)
        except BaseException:
            con.close()
            raise
        if expression is not None or len(selected) != len(columns):
            reader = ds.Scanner.from_batches(reader, columns=list(columns), filter=expression,
                                             batch_size=BATCH_ROWS).to_reader()
        return reader, con.close

    # -- SQL ---------------------------------------------------------------------------------

    def _relation(self, paths: Sequence[str], types: dict[str, str] | None) -> str:
        """The FROM clause reading `paths` (bound as parameter 1), typed by `types` if given."""
        options = [f"format={_literal(self._format)}", "records=true", f"sample_size={SAMPLE_ROWS}",
                   f"maximum_object_size={self._object_size(paths)}"]
        if self._records_key is None:
            if types is not None:
                options.append("columns={" + ", ".join(f"{_literal(c)}: {_literal(t)}" for c, t in types.items()) + "}")
            return f"read_json(?, {', '.join(options)})"
        if types is not None:
            struct = "STRUCT(" + ", ".join(f"{_ident(c)} {t}" for c, t in types.items()) + ")[]"
            options.append("columns={" + f"{_literal(self._records_key)}: {_literal(struct)}" + "}")
        inner = f"SELECT unnest({_ident(self._records_key)}) AS __satchel_row FROM read_json(?, {', '.join(options)})"
        return f"(SELECT unnest(__satchel_row) FROM ({inner}))"

    def _object_size(self, paths: Sequence[str]) -> int:
        if self._records_key is None:
            return _DEFAULT_OBJECT_SIZE
        largest = max((os.path.getsize(p) for p in paths), default=0)
        return min(max(_DEFAULT_OBJECT_SIZE, largest + (1 << 20)), 2**32 - 1)

    def _query(self, con: duckdb.DuckDBPyConnection, sql: str, paths: Sequence[str]) -> duckdb.DuckDBPyConnection:
        try:
            return con.execute(sql, [list(paths)])
        except duckdb.Error as e:
            raise ConnectorError(f"dataset '{self.dataset}': cannot read JSON: {_first_line(e)}") from e


_database: duckdb.DuckDBPyConnection | None = None
_database_lock = threading.Lock()


def _connect() -> duckdb.DuckDBPyConnection:
    """A new connection (cheap cursor) to one private in-memory DuckDB shared by JSON scans."""
    global _database
    with _database_lock:
        if _database is None:
            database = duckdb.connect(":memory:")
            database.execute("SET GLOBAL TimeZone = 'UTC'")  # TIMESTAMPTZ -> timestamp[us, tz=UTC] on any host
            _database = database
        return _database.cursor()


def _first_char(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1].decode("latin-1")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
