"""The SQL search table functions (Spice's names and arguments):

    vector_search(table, 'text' [, column => 'col', limit => 10, include_score => true])
    text_search(table, 'text' [, column => 'col', limit => 10])            -- BM25
    rrf(search1, search2, ... [, join_key => 'id', k => 60, limit => n])   -- reciprocal rank fusion

Each call runs before the query is planned, in the accelerator that holds the dataset's search
index (DuckDB's HNSW / BM25 indexes; see accel.search), and gives at most `limit` rows: the
dataset's columns plus `_score` (and `_chunk`, the best matching chunk, for chunked embedding
columns); rrf gives the fused rows with `fused_score`. The call is then replaced by a reference to
those rows, so the rest of the query (joins with any other table, filters, ordering) plans and runs
like any other. Positional forms work too: `vector_search(t, 'text', 5)` (limit), `(t, 'text', 'col')`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from accel.keys import dedupe_last
from connectors.base import CALLER

from ..embedders import Embedders
from ..errors import DatasetNotReady, SqlError, UnknownDataset
from ..refresh.dataset import DatasetRuntime

FUNCTIONS = ("vector_search", "text_search", "rrf")
DEFAULT_LIMIT = 10
MAX_LIMIT = 1000  # rows one search call may give (results are held in memory before the query runs)
RRF_K = 60
_KWARGS = {"vector_search": ("column", "limit", "include_score"), "text_search": ("column", "limit"),
           "rrf": ("join_key", "k", "limit")}
SEARCH_PREFIX = "__satchel_search_"  # the name a call's rows get in the planned query


@dataclass
class SearchCall:
    kind: str  # vector_search | text_search
    dataset: str
    text: str
    column: str | None = None
    limit: int = DEFAULT_LIMIT
    include_score: bool = True


def _name(node: exp.Expression) -> str:
    return str(node.this).lower() if isinstance(node, exp.Anonymous) else ""


def has_search(tree: exp.Expression) -> bool:
    return any(isinstance(t.this, exp.Anonymous) and _name(t.this) in FUNCTIONS for t in tree.find_all(exp.Table))


class SearchFunctions:
    """Runs the search calls of a query and gives their rows (engine.query plans the rest)."""

    def __init__(self, datasets: Mapping[str, DatasetRuntime], embedders: Embedders) -> None:
        self.datasets = datasets
        self.embedders = embedders

    # -- the query side ------------------------------------------------------------------------

    def expand(self, tree: exp.Expression, principal: str, protocol: str,
               schema_only: bool = False) -> tuple[exp.Expression, dict[str, pa.Table]]:
        """`tree` with each search call replaced by a table named `__satchel_search_<n>` (aliased
        as the call was, else by the function's name), and those tables' rows. `schema_only`:
        empty results of the right shape (no model call), for a result schema."""
        results: dict[str, pa.Table] = {}
        counter = itertools.count(1)
        for table in list(tree.find_all(exp.Table)):
            func = table.this
            if not isinstance(func, exp.Anonymous) or _name(func) not in FUNCTIONS:
                continue
            rows = self.run(func, principal, protocol, schema_only)
            name = f"{SEARCH_PREFIX}{next(counter)}"
            results[name] = rows.replace_schema_metadata({**(rows.schema.metadata or {}),
                                                          b"satchel_search": self.describe(func).encode()})
            alias = table.args.get("alias") or exp.TableAlias(this=exp.to_identifier(_name(func)))
            table.replace(exp.Table(this=exp.to_identifier(name, quoted=True), alias=alias))
        return tree, results

    def datasets_of(self, tree: exp.Expression) -> set[str]:
        """The datasets the search calls of `tree` read (rrf's inner calls included)."""
        return {self.parse_call(node, schema_only=True).dataset for node in tree.find_all(exp.Anonymous)
                if _name(node) in ("vector_search", "text_search")}

    def run(self, func: exp.Anonymous, principal: str = "anonymous", protocol: str = "internal",
            schema_only: bool = False) -> pa.Table:
        kind = _name(func)
        if kind == "rrf":
            return self._rrf(func, principal, protocol, schema_only)
        return self.search(self.parse_call(func, schema_only), principal, protocol, schema_only)

    def describe(self, func: exp.Anonymous) -> str:
        """How a call runs, for EXPLAIN: the index and engine that answer it."""
        if _name(func) == "rrf":
            inner = [self.describe(a) for a in func.expressions if isinstance(a, exp.Anonymous)]
            return "rrf of " + "; ".join(inner)
        call = self.parse_call(func, schema_only=True)
        ds = self._dataset(call.dataset, call.kind)
        where = f"{ds.acceleration.engine} accelerator" if ds.acceleration.engine == "duckdb" else \
            "the arrow accelerator's search DuckDB"
        if call.kind == "vector_search":
            index = ds.search.vector(call.column)
            if index is None:
                return f"vector_search({ds.name}): no index"
            dim = ds.accelerator.search.dimension(index.spec)
            how = "HNSW index (vss, cosine)" if dim and ds.accelerator.search.uses_index(index.spec, dim) \
                else "exact scan"
            return f"vector_search({ds.name}.{index.spec.column}, limit {call.limit}): {how} in the {where}"
        spec = ds.search.text(call.column)
        return f"text_search({ds.name}.{spec.column if spec else '?'}, limit {call.limit}): BM25 index (fts) in the {where}"

    def search(self, call: SearchCall, principal: str = "anonymous", protocol: str = "internal",
               schema_only: bool = False) -> pa.Table:
        """One vector or text search: the dataset's columns, `_score` (unless include_score is
        false) and, for chunked embeddings, `_chunk`; best first."""
        ds = self._dataset(call.dataset, call.kind)
        store = ds.accelerator.search
        limit = 0 if schema_only else call.limit
        if call.kind == "vector_search":
            index = ds.search.vector(call.column)
            if index is None:
                raise SqlError(_no_index(ds, call, [v.spec.column for v in ds.search.vectors], "embeddings"))
            if limit:
                caller = CALLER.get()
                vector = self.embedders.embed(index.model, [call.text], dataset=ds.name, principal=principal,
                                              protocol=protocol, deadline=caller.deadline)[0]
                rows = store.vector_search(index.spec, vector.tolist(), limit)
            else:
                rows = store.vector_search(index.spec, [], 0)
            chunked = index.config.chunking is not None and index.config.chunking.enabled
            if not chunked:
                rows = rows.drop_columns(["_chunk"])
        else:
            spec = ds.search.text(call.column)
            if spec is None:
                raise SqlError(_no_index(ds, call, [t.column for t in ds.search.texts], "full_text_search"))
            rows = store.text_search(spec, call.text, limit) if limit else store.text_search(spec, "", 0)
        rows = rows.set_column(rows.schema.get_field_index("_score"), "_score",
                               rows["_score"].cast(pa.float64()))
        if not call.include_score:
            rows = rows.drop_columns(["_score"])
        return rows

    def _dataset(self, name: str, kind: str) -> DatasetRuntime:
        ds = self.datasets.get(name.lower())
        if ds is None:
            raise UnknownDataset(f"{kind}: unknown dataset '{name}'")
        if not ds.accelerated or not ds.search:
            raise SqlError(f"{kind}: dataset '{ds.name}' has no search index: give one of its columns "
                           f"`embeddings` (vector_search) or `full_text_search` (text_search) and accelerate it")
        if not ds.loaded_once or not ds.search.ready:
            raise DatasetNotReady(f"{kind}: dataset '{ds.name}' is still loading ({ds.status}); try again shortly")
        return ds

    # -- arguments -----------------------------------------------------------------------------

    def parse_call(self, func: exp.Anonymous, schema_only: bool = False) -> SearchCall:
        """The call's arguments; `schema_only` (a prepared statement's schema, planned with NULL
        parameters) accepts a NULL search text."""
        kind = _name(func)
        if kind not in ("vector_search", "text_search"):
            raise SqlError(f"rrf() takes vector_search(...) and text_search(...) calls, not {func.sql()}")
        positional, named = _arguments(func, kind)
        if len(positional) < 2:
            raise SqlError(f"{kind}(table, 'text' [, column => 'col', limit => n]) needs a table and a search text")
        table = positional[0]
        if not isinstance(table, (exp.Column, exp.Identifier, exp.Literal, exp.Table)):
            raise SqlError(f"{kind}: the first argument must be a dataset name, got {table.sql()}")
        db = table.args.get("table") if isinstance(table, exp.Column) else None
        if db is not None and db.name.lower() != "public":
            raise UnknownDataset(f"{kind}: unknown dataset '{table.sql()}'")
        text = "" if schema_only and isinstance(positional[1], exp.Null) else \
            _constant(positional[1], kind, "the search text")
        if not isinstance(text, str):
            raise SqlError(f"{kind}: the search text must be a string")
        call = SearchCall(kind, table.name, text)
        for value in positional[2:]:
            v = _constant(value, kind, "an argument")
            if isinstance(v, bool):
                named.setdefault("include_score", value)
            elif isinstance(v, int):
                named.setdefault("limit", value)
            else:
                named.setdefault("column", value)
        if "column" in named:
            call.column = str(_constant(named["column"], kind, "column", column=True))
        if "limit" in named:
            call.limit = _limit(_constant(named["limit"], kind, "limit"), kind)
        if "include_score" in named:
            v = _constant(named["include_score"], kind, "include_score")
            if not isinstance(v, bool):
                raise SqlError(f"{kind}: include_score must be true or false")
            call.include_score = v
        return call

    # -- reciprocal rank fusion ----------------------------------------------------------------

    def _rrf(self, func: exp.Anonymous, principal: str, protocol: str, schema_only: bool) -> pa.Table:
        positional, named = _arguments(func, "rrf")
        calls = [self.parse_call(a, schema_only) if isinstance(a, exp.Anonymous) else None for a in positional]
        if len(calls) < 2 or any(c is None for c in calls):
            raise SqlError("rrf(search1, search2, ... [, join_key => 'id', k => 60]) fuses two or more "
                           "vector_search(...) / text_search(...) calls")
        datasets = {c.dataset.lower() for c in calls}
        if len(datasets) != 1:
            raise SqlError("rrf: every search must be over the same dataset")
        ds = self._dataset(calls[0].dataset, "rrf")
        k = _constant(named["k"], "rrf", "k") if "k" in named else RRF_K
        if not isinstance(k, (int, float)) or isinstance(k, bool) or k < 0:
            raise SqlError("rrf: k must be a non-negative number")
        limit = _limit(_constant(named["limit"], "rrf", "limit"), "rrf") if "limit" in named \
            else max(c.limit for c in calls)
        if "join_key" in named:
            key = [str(_constant(named["join_key"], "rrf", "join_key", column=True))]
        else:
            first = ds.search.vector(calls[0].column) if calls[0].kind == "vector_search" else None
            key = list(first.spec.row_id if first else (ds.search.text(calls[0].column).row_id
                                                        if ds.search.text(calls[0].column) else ()))
        parts = []
        for call in calls:
            call.include_score = True
            rows = self.search(call, principal, protocol, schema_only)
            rows = rows.drop_columns([c for c in ("_score", "_chunk") if c in rows.column_names])
            missing = [c for c in key if c not in rows.column_names]
            if missing:
                raise SqlError(f"rrf: join_key column '{missing[0]}' is not a column of '{ds.name}'")
            rank = pc.add(pa.array(range(1, rows.num_rows + 1), pa.float64()), float(k))
            parts.append(rows.append_column("__rrf", pc.divide(1.0, rank)))
        every = pa.concat_tables(parts)
        fused = every.select(key + ["__rrf"]).group_by(key, use_threads=False).aggregate([("__rrf", "sum")])
        rows = dedupe_last(every.drop_columns(["__rrf"]), key)
        # join on the keys and a row number only: payload columns of any type travel by `take`
        index = rows.select(key).append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
        matched = index.join(fused, keys=key, use_threads=False)
        out = rows.take(matched["__row"]).append_column("fused_score", matched["__rrf_sum"])
        order = pc.sort_indices(out, sort_keys=[("fused_score", "descending")])
        return out.take(order).slice(0, limit)


def _arguments(func: exp.Anonymous, kind: str) -> tuple[list[exp.Expression], dict[str, exp.Expression]]:
    positional: list[exp.Expression] = []
    named: dict[str, exp.Expression] = {}
    for arg in func.expressions:
        if isinstance(arg, exp.Kwarg):
            key = arg.this.name.lower()
            if key not in _KWARGS[kind]:
                raise SqlError(f"{kind}: unknown argument '{key}'; allowed: {', '.join(_KWARGS[kind])}")
            named[key] = arg.expression
        elif named:
            raise SqlError(f"{kind}: positional arguments must come before named ones (name => value)")
        else:
            positional.append(arg)
    return positional, named


def _constant(node: exp.Expression, kind: str, what: str, column: bool = False) -> Any:
    """A literal argument's value (a column name may be written as an identifier too)."""
    if column and isinstance(node, (exp.Column, exp.Identifier)):
        return node.name
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        return -_constant(node.this, kind, what)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = str(node.this)
        return float(text) if any(c in text for c in ".eE") else int(text)
    raise SqlError(f"{kind}: {what} must be a constant, got {node.sql()}")


def _limit(value: Any, kind: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SqlError(f"{kind}: limit must be a positive integer")
    if value > MAX_LIMIT:
        raise SqlError(f"{kind}: limit {value} is above the maximum of {MAX_LIMIT} rows per search")
    return value


def _no_index(ds: DatasetRuntime, call: SearchCall, columns: list[str], key: str) -> str:
    if not columns:
        return f"{call.kind}: dataset '{ds.name}' has no column with `{key}` (add it in the pod)"
    return f"{call.kind}: column '{call.column}' of '{ds.name}' has no `{key}`; columns with it: {', '.join(columns)}"
