"""`POST /v1/search` (Spice's shape), also behind the MCP and model `search` tools.

    {"text": "battery dies", "datasets": ["reviews"], "limit": 5, "where": "topic = 'phones'",
     "additional_columns": ["created_at"], "keywords": ["battery"]}
 -> {"results": [{"matches": {"body": "..."}, "data": {"created_at": ...}, "primary_key": {"review_id": 2},
                  "score": 0.61, "dataset": "reviews"}], "duration_ms": 12, "truncated": false}

Each dataset is searched with one SQL query built here (vector_search, or rrf of vector_search and
text_search when `keywords` are given and the column has a full-text index) and run through the
ordinary query path: the caller's principal, the read-only policy, limits, deadline and task
history all apply. `where` is parsed as one SQL condition (never spliced as text) and filters the
nearest candidates (`limit` x 10, at most 1000 per dataset). Results of all datasets are merged by
score. Bounded: `limit` at most 100 results, each matched text at most 4,000 characters
(`truncated` says when a value was cut).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from ..errors import BadRequest, DatasetNotReady, NotFound
from ..query.sql_policy import PUBLIC_DIALECT
from ..refresh.dataset import DatasetRuntime
from .functions import MAX_LIMIT

DEFAULT_LIMIT = 10
MAX_RESULTS = 100
MAX_TEXT = 4000
CANDIDATES_PER_RESULT = 10  # nearest rows read per wanted result when `where` filters them
_KEYS = ("text", "datasets", "limit", "where", "additional_columns", "keywords")

RunQuery = Callable[[str], pa.RecordBatchReader]


def search(body: Any, datasets: Mapping[str, DatasetRuntime], run_query: RunQuery) -> dict:
    """Answer one search request; `run_query(sql)` runs SQL for the caller (Runtime.query)."""
    started = time.monotonic()
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"text": "...", "datasets": [...], "limit": n}')
    unknown = [k for k in body if k not in _KEYS]
    if unknown:
        raise BadRequest(f"unknown keys {unknown}; allowed: {', '.join(_KEYS)}")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest('"text" must be a non-empty string')
    limit = body.get("limit", DEFAULT_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_RESULTS:
        raise BadRequest(f'"limit" must be an integer from 1 to {MAX_RESULTS}')
    where = _condition(body.get("where"))
    extra = _names(body.get("additional_columns"), "additional_columns")
    keywords = _names(body.get("keywords"), "keywords")
    targets = _targets(body.get("datasets"), datasets)
    results: list[dict] = []
    truncated = False
    for ds in targets:
        rows, cut = _search_one(ds, text, limit, where, extra, keywords, run_query)
        results.extend(rows)
        truncated = truncated or cut
    results.sort(key=lambda r: r["score"], reverse=True)
    return {"results": results[:limit], "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "truncated": truncated}


def _search_one(ds: DatasetRuntime, text: str, limit: int, where: exp.Expression | None, extra: list[str],
                keywords: list[str], run_query: RunQuery) -> tuple[list[dict], bool]:
    index = ds.search.vector(None)
    assert index is not None
    column, keys = index.spec.column, list(index.spec.row_id)
    chunked = index.config.chunking is not None and index.config.chunking.enabled
    if extra:
        schema = ds.known_schema()  # its copy's: a request never waits on the source
        if schema is None:
            raise DatasetNotReady(f"dataset '{ds.name}' is not loaded yet: search reads its accelerated copy")
        names = {f.lower() for f in schema.names}
        missing = [c for c in extra if c.lower() not in names]
        if missing:
            raise BadRequest(f"additional_columns: '{missing[0]}' is not a column of '{ds.name}'")
    candidates = min(MAX_LIMIT, limit * CANDIDATES_PER_RESULT) if where is not None else limit
    vector = exp.Anonymous(this="vector_search", expressions=[
        exp.column(ds.name, quoted=True), exp.Literal.string(text), _kwarg("column", exp.Literal.string(column)),
        _kwarg("limit", exp.Literal.number(candidates))])
    score, match = exp.column("_score"), exp.column(column, quoted=True)
    source: exp.Expression = vector
    if keywords:
        if ds.search.text(column) is None:
            raise BadRequest(f"keywords need full_text_search on '{ds.name}.{column}' (hybrid search fuses "
                             f"vector and BM25 rankings)")
        lexical = exp.Anonymous(this="text_search", expressions=[
            exp.column(ds.name, quoted=True), exp.Literal.string(" ".join(keywords)),
            _kwarg("column", exp.Literal.string(column)), _kwarg("limit", exp.Literal.number(candidates))])
        source = exp.Anonymous(this="rrf", expressions=[vector, lexical, _kwarg("limit", exp.Literal.number(candidates))])
        score, chunked = exp.column("fused_score"), False
    projections = [exp.column(k, quoted=True) for k in keys] + [match.as_("__match")]
    if chunked:
        projections.append(exp.column("_chunk").as_("__chunk"))
    projections += [exp.column(c, quoted=True).as_(f"__data_{i}") for i, c in enumerate(extra)]
    projections.append(score.as_("__score"))
    query = exp.select(*projections).from_(exp.Table(this=source, alias=exp.TableAlias(this=exp.to_identifier("s"))))
    if where is not None:
        query = query.where(where.copy())
    query = query.order_by(exp.Ordered(this=exp.column("__score"), desc=True)).limit(limit)
    table = run_query(query.sql(PUBLIC_DIALECT)).read_all()
    out, truncated = [], False
    for row in table.to_pylist(maps_as_pydicts="lossy"):  # a map as an object, as JSON results give it
        matched = row["__chunk"] if chunked and row.get("__chunk") is not None else row["__match"]
        if isinstance(matched, str) and len(matched) > MAX_TEXT:
            matched, truncated = matched[:MAX_TEXT], True
        out.append({"matches": {column: matched},
                    "data": {c: row[f"__data_{i}"] for i, c in enumerate(extra)},
                    "primary_key": {k: row[k] for k in keys},
                    "score": row["__score"], "dataset": ds.name})
    return out, truncated


def _targets(value: Any, datasets: Mapping[str, DatasetRuntime]) -> list[DatasetRuntime]:
    searchable = [ds for ds in datasets.values() if ds.search.vectors]
    if value is None:
        if not searchable:
            raise BadRequest("no dataset can be searched: give a column `embeddings` in the pod")
        return searchable
    names = _names(value, "datasets")
    if not names:
        raise BadRequest('"datasets" must list at least one dataset')
    out = []
    for name in names:
        ds = datasets.get(name.lower())
        if ds is None:
            raise NotFound(f"unknown dataset '{name}'")
        if not ds.search.vectors:
            raise BadRequest(f"dataset '{ds.name}' has no column with `embeddings`; searchable: "
                             f"{', '.join(d.name for d in searchable) or 'none'}")
        out.append(ds)
    return out


def _names(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequest(f'"{key}" must be a list of strings')
    return value


def _condition(value: Any) -> exp.Expression | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest('"where" must be a SQL condition (a string)')
    try:
        node = sqlglot.parse_one(value, read=PUBLIC_DIALECT, into=exp.Condition)
    except ParseError:
        raise BadRequest(f'"where" is not one SQL condition: {value[:200]}') from None
    if node.find(exp.Select, exp.Subquery) is not None:
        raise BadRequest('"where" must be a condition on the searched rows (no subqueries)')
    return node


def _kwarg(name: str, value: exp.Expression) -> exp.Kwarg:
    return exp.Kwarg(this=exp.var(name), expression=value)
