"""Search indexes of accelerated datasets, kept in DuckDB with its `vss` (HNSW) and `fts` (BM25)
extensions, loaded from their PyPI wheels (`duckdb-extension-vss`, `duckdb-extension-fts`).

A DuckDB accelerator keeps them in its own database next to the datasets (so file mode keeps the
vectors across restarts); the Arrow accelerator keeps them in a private in-memory DuckDB and lets
it read the Arrow table in place. Either way one implementation serves both engines, so scores
are the same whichever accelerator holds a dataset.

Per embedding column, a side table `__satchel_vec_<dataset>__<column>` holds one row per chunk:
the row id columns, `__digest` (md5 of the column's whole text: what the vector was computed
from), `__chunk`, `__text` (the chunk) and `__vector` (FLOAT[dim], unit length) under an HNSW
index (cosine). Per full-text column, `__satchel_fts_<dataset>__<column>` holds the row ids and
the text under DuckDB's BM25 index, rebuilt after each refresh (BM25 statistics are corpus-wide).
"""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import duckdb
import pyarrow as pa

from connectors.sql_render import quote_ident

META = "__satchel_search_meta"
HNSW_OPTIONS = "metric = 'cosine', ef_construction = 128, ef_search = 128, M = 16"
FTS_OPTIONS = "stemmer = 'porter', stopwords = 'english', lower = 1, strip_accents = 1, overwrite = 1"


def extension_path(name: str) -> str:
    """The `.duckdb_extension` file shipped by the `duckdb-extension-<name>` wheel for this duckdb."""
    import importlib

    package = importlib.import_module(f"duckdb_extension_{name}")
    found = next(Path(package.__file__).parent.glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension"), None)
    if found is None:
        raise RuntimeError(f"duckdb-extension-{name} has no build for duckdb {duckdb.__version__}; "
                           f"install duckdb-extension-{name}=={duckdb.__version__}")
    return str(found)


def load_extensions(con: duckdb.DuckDBPyConnection) -> None:
    """Load vss and fts (before the database is locked down: loading needs file access)."""
    for name in ("vss", "fts"):
        con.execute("LOAD " + "'" + extension_path(name).replace("'", "''") + "'")
    con.execute("SET GLOBAL hnsw_enable_experimental_persistence = true")  # file mode keeps the index
    con.execute(f"CREATE TABLE IF NOT EXISTS {META} (name VARCHAR PRIMARY KEY, fingerprint VARCHAR)")


@dataclass(frozen=True)
class IndexSpec:
    """One search index: a column of a dataset, its row identity, and (vectors) a fingerprint of
    what made the vectors (model, chunking): a changed fingerprint recomputes them."""

    kind: str  # "vector" | "text"
    dataset: str
    column: str
    row_id: tuple[str, ...]
    fingerprint: str = ""

    @property
    def side(self) -> str:
        prefix = "__satchel_vec_" if self.kind == "vector" else "__satchel_fts_"
        return f"{prefix}{self.dataset}__{self.column}"


Relation = Callable[[duckdb.DuckDBPyConnection, str], str]
"""(cursor, dataset) -> the SQL name the dataset's rows have in that cursor."""


class SearchStore:
    """The search side tables of one accelerator, in `con`'s database. Writes take `write_lock`
    (the accelerator's, so they never interleave with loads)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, write_lock: threading.Lock, relation: Relation) -> None:
        self._con = con
        self._lock = write_lock
        self._relation = relation

    @contextmanager
    def _cursor(self, dataset: str | None = None) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
        cur = self._con.cursor()
        try:
            yield cur, (self._relation(cur, dataset) if dataset else "")
        finally:
            cur.close()

    def _exists(self, cur: duckdb.DuckDBPyConnection, table: str) -> bool:
        row = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
                          [table]).fetchone()
        return bool(row and row[0])

    # -- vectors -----------------------------------------------------------------------------

    def prepare_vectors(self, spec: IndexSpec) -> None:
        """Drop vectors made by another model or chunking (their fingerprint differs)."""
        with self._lock, self._cursor() as (cur, _):
            row = cur.execute(f"SELECT fingerprint FROM {META} WHERE name = ?", [spec.side]).fetchone()
            if row is not None and row[0] != spec.fingerprint:
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(spec.side)}")
            cur.execute(f"INSERT OR REPLACE INTO {META} VALUES (?, ?)", [spec.side, spec.fingerprint])

    def indexed(self, spec: IndexSpec) -> bool:
        """Whether the index exists and (vectors) was made with `spec`'s fingerprint and covers every row."""
        with self._cursor() as (cur, _):
            if not self._exists(cur, spec.side):
                return False
            if spec.kind == "text":
                return True
            row = cur.execute(f"SELECT fingerprint FROM {META} WHERE name = ?", [spec.side]).fetchone()
        return row is not None and row[0] == spec.fingerprint and self.pending_vectors(spec, 1).num_rows == 0

    def remove_stale_vectors(self, spec: IndexSpec) -> int:
        """Delete the vectors of rows gone from the dataset or whose text changed."""
        with self._lock, self._cursor(spec.dataset) as (cur, rel):
            if not self._exists(cur, spec.side):
                return 0
            side, col = quote_ident(spec.side), quote_ident(spec.column)
            match = " AND ".join(f"d.{quote_ident(k)} IS NOT DISTINCT FROM s.{quote_ident(k)}" for k in spec.row_id)
            return int(cur.execute(
                f"DELETE FROM {side} s WHERE NOT EXISTS (SELECT 1 FROM {rel} d WHERE {match} "
                f"AND md5(CAST(d.{col} AS VARCHAR)) = s.__digest)").fetchone()[0])

    def pending_vectors(self, spec: IndexSpec, limit: int) -> pa.Table:
        """Up to `limit` rows whose current text has no vectors yet: row ids, `__text`, `__digest`."""
        with self._cursor(spec.dataset) as (cur, rel):
            col = quote_ident(spec.column)
            ids = ", ".join(f"d.{quote_ident(k)}" for k in spec.row_id)
            missing = ""
            if self._exists(cur, spec.side):
                match = " AND ".join(f"s.{quote_ident(k)} IS NOT DISTINCT FROM d.{quote_ident(k)}" for k in spec.row_id)
                missing = (f" AND NOT EXISTS (SELECT 1 FROM {quote_ident(spec.side)} s WHERE {match} "
                           f"AND s.__digest = md5(CAST(d.{col} AS VARCHAR)))")
            return cur.execute(
                f"SELECT {ids}, CAST(d.{col} AS VARCHAR) AS __text, md5(CAST(d.{col} AS VARCHAR)) AS __digest "
                f"FROM {rel} d WHERE d.{col} IS NOT NULL{missing} LIMIT {int(limit)}").to_arrow_table()

    def write_vectors(self, spec: IndexSpec, rows: pa.Table) -> None:
        """Insert chunk rows (row ids, __digest, __chunk, __text, __vector); the first write
        creates the side table and its HNSW index."""
        if rows.num_rows == 0:
            return
        with self._lock, self._cursor() as (cur, _):
            name = f"__satchel_src_{uuid.uuid4().hex}"
            cur.register(name, rows)
            try:
                side = quote_ident(spec.side)
                if not self._exists(cur, spec.side):
                    cur.execute(f"CREATE TABLE {side} AS SELECT * FROM {name} LIMIT 0")
                    cur.execute(f"CREATE INDEX {quote_ident(spec.side + '_hnsw')} ON {side} "
                                f"USING HNSW (__vector) WITH ({HNSW_OPTIONS})")
                cur.execute(f"INSERT INTO {side} SELECT * FROM {name}")
            finally:
                cur.unregister(name)

    def vector_count(self, spec: IndexSpec) -> int:
        with self._cursor() as (cur, _):
            if not self._exists(cur, spec.side):
                return 0
            return int(cur.execute(f"SELECT count(*) FROM {quote_ident(spec.side)}").fetchone()[0])

    def vector_search(self, spec: IndexSpec, vector: Sequence[float], limit: int, exact: bool = False) -> pa.Table:
        """The `limit` best rows by cosine similarity: the dataset's columns, `_score`, and the
        best chunk of each row as `_chunk`. The HNSW index answers (approximate) unless `exact`."""
        with self._cursor(spec.dataset) as (cur, rel):
            if limit < 1 or not self._exists(cur, spec.side):
                return self._empty_result(cur, rel, "_chunk")
            dim = len(vector)
            literal = "[" + ",".join(repr(float(v)) for v in vector) + f"]::FLOAT[{dim}]"
            distance = f"array_cosine_distance(__vector, {literal})"
            ids = ", ".join(quote_ident(k) for k in spec.row_id)
            # chunks: the nearest few per wanted row, then the best chunk of each row
            fetch = limit * 4
            nearest = f"SELECT {ids}, __text, {distance} AS __d FROM {quote_ident(spec.side)} ORDER BY __d LIMIT {fetch}"
            if exact:
                nearest = f"SELECT {ids}, __text, __d FROM (SELECT {ids}, __text, {distance} AS __d FROM " \
                          f"{quote_ident(spec.side)}) ORDER BY __d LIMIT {fetch}"
            best = (f"SELECT {ids}, arg_min(__text, __d) AS _chunk, 1 - min(__d) AS _score FROM ({nearest}) "
                    f"GROUP BY {ids} ORDER BY _score DESC LIMIT {int(limit)}")
            using = ", ".join(quote_ident(k) for k in spec.row_id)
            return cur.execute(f"SELECT d.*, b._score, b._chunk FROM {rel} d JOIN ({best}) b USING ({using}) "
                               f"ORDER BY b._score DESC").to_arrow_table()

    def dimension(self, spec: IndexSpec) -> int | None:
        """The vectors' dimension (None before any vector was written)."""
        with self._cursor() as (cur, _):
            if not self._exists(cur, spec.side):
                return None
            row = cur.execute(f"SELECT array_length(__vector) FROM {quote_ident(spec.side)} LIMIT 1").fetchone()
            return int(row[0]) if row else None

    def uses_index(self, spec: IndexSpec, dim: int) -> bool:
        """Whether DuckDB plans the vector search with the HNSW index (for EXPLAIN-style checks)."""
        with self._cursor() as (cur, _):
            literal = "[" + ",".join(["0.0"] * dim) + f"]::FLOAT[{dim}]"
            plan = cur.execute(f"EXPLAIN SELECT * FROM {quote_ident(spec.side)} ORDER BY "
                               f"array_cosine_distance(__vector, {literal}) LIMIT 10").fetchall()
            return any("HNSW" in str(row[1]) for row in plan)

    # -- full text ---------------------------------------------------------------------------

    def rebuild_text(self, spec: IndexSpec) -> None:
        """The BM25 index over the column's current text (a new corpus: a new index)."""
        with self._lock, self._cursor(spec.dataset) as (cur, rel):
            ids = ", ".join(quote_ident(k) for k in spec.row_id)
            side = quote_ident(spec.side)
            cur.execute(f"CREATE OR REPLACE TABLE {side} AS SELECT row_number() OVER () AS __doc, {ids}, "
                        f"CAST({quote_ident(spec.column)} AS VARCHAR) AS __text FROM {rel}")
            cur.execute(f"PRAGMA create_fts_index({_string(spec.side)}, '__doc', '__text', {FTS_OPTIONS})")

    def text_search(self, spec: IndexSpec, text: str, limit: int) -> pa.Table:
        """The `limit` best rows by BM25 score of `text` against the column: the dataset's
        columns and `_score` (rows without any query term are not returned)."""
        with self._cursor(spec.dataset) as (cur, rel):
            if limit < 1 or not self._exists(cur, spec.side):
                return self._empty_result(cur, rel)
            ids = ", ".join(quote_ident(k) for k in spec.row_id)
            schema = quote_ident(f"fts_main_{spec.side}")
            scored = (f"SELECT {ids}, {schema}.match_bm25(__doc, ?, fields := '__text') AS _score "
                      f"FROM {quote_ident(spec.side)}")
            best = f"SELECT * FROM ({scored}) WHERE _score IS NOT NULL ORDER BY _score DESC LIMIT {int(limit)}"
            return cur.execute(f"SELECT d.*, b._score FROM {rel} d JOIN ({best}) b USING ({ids}) "
                               f"ORDER BY b._score DESC", [text]).to_arrow_table()

    def drop(self, spec: IndexSpec) -> None:
        with self._lock, self._cursor() as (cur, _):
            cur.execute(f"DROP TABLE IF EXISTS {quote_ident(spec.side)}")
            cur.execute(f"DELETE FROM {META} WHERE name = ?", [spec.side])

    @staticmethod
    def _empty_result(cur: duckdb.DuckDBPyConnection, rel: str, *extra: str) -> pa.Table:
        cols = ", ".join(["NULL::DOUBLE AS _score"] + [f"NULL::VARCHAR AS {e}" for e in extra])
        return cur.execute(f"SELECT d.*, {cols} FROM {rel} d LIMIT 0").to_arrow_table()


def _string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
