"""Filters -> Elasticsearch query DSL, only where ES gives SQL's answer.

Every filter is translated into a pair of queries: the documents where it is TRUE and those
where it is FALSE (SQL's third value, NULL, is neither), so NOT and OR keep three-valued
logic: NOT p is TRUE exactly where p is FALSE. `<>`, NOT IN and NOT LIKE are FALSE/TRUE only
for documents that hold the field (`exists`), never for missing ones.

Exact only where the index holds what is served: keyword fields without normalizer or
ignore_above (text fields through their plain keyword multi-field; ignore_above still allows
`=` and IN for strings no longer than it), numbers other than half_float/scaled_float (float
only for literals a float32 holds exactly; both zeros matched together), booleans, dates at
or above their indexed precision. `match(column, 'words')` runs a match query on text fields.
Timestamps served finer than their index (e.g. a `date` field, milliseconds, declared
TIMESTAMP in the pod) filter as a superset (INEXACT) at the top level only.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pyarrow as pa

from ..arrow_filters import comparable_scalar
from ..base import COMPOSITE_OPS, FULL_TEXT_OP, Filter, FilterSupport, SortKey
from .schema import EsColumn

MATCH_ALL: dict = {"match_all": {}}
MATCH_NONE: dict = {"match_none": {}}
_DAY_NS = 86_400 * 10**9
_UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


@dataclass(frozen=True)
class Translation:
    true: dict  # documents where the filter is TRUE
    false: dict | None  # documents where it is FALSE (None: unknown, only for inexact filters)
    exact: bool = True  # False: `true` is a superset of the matching documents


def _exists(field: str) -> dict:
    return {"exists": {"field": field}}


def _not(q: dict) -> dict:
    return {"bool": {"must_not": [q]}}


def _and(qs: Sequence[dict]) -> dict:
    qs = [q for q in qs if q != MATCH_ALL]
    if any(q == MATCH_NONE for q in qs):
        return MATCH_NONE
    return qs[0] if len(qs) == 1 else {"bool": {"filter": list(qs)}} if qs else MATCH_ALL


def _or(qs: Sequence[dict]) -> dict:
    qs = [q for q in qs if q != MATCH_NONE]
    if any(q == MATCH_ALL for q in qs):
        return MATCH_ALL
    return qs[0] if len(qs) == 1 else {"bool": {"should": list(qs), "minimum_should_match": 1}} if qs else MATCH_NONE


def translate(f: Filter, columns: Mapping[str, EsColumn]) -> Translation | None:
    """The filter as TRUE/FALSE queries, or None when ES cannot give SQL's answer."""
    if f.op in COMPOSITE_OPS:
        parts = [translate(p, columns) for p in f.value]
        if any(p is None or not p.exact or p.false is None for p in parts):
            return None
        if f.op == "not":
            return Translation(parts[0].false, parts[0].true)  # type: ignore[union-attr,arg-type]
        trues = [p.true for p in parts]  # type: ignore[union-attr]
        falses = [p.false for p in parts]  # type: ignore[union-attr]
        if f.op == "and":
            return Translation(_and(trues), _or(falses))  # type: ignore[arg-type]
        return Translation(_or(trues), _and(falses))  # type: ignore[arg-type]
    col = columns.get(f.column)
    if col is None:
        return None
    if f.op == FULL_TEXT_OP:
        if not col.text or not isinstance(f.value, str) or col.natural is not None:
            return None
        q = {"match": {col.path: {"query": f.value}}}
        return Translation(q, _and([_exists(col.path), _not(q)]))
    if f.op in ("is_null", "is_not_null"):
        if col.kind == "id":
            present, absent = MATCH_ALL, MATCH_NONE
        elif col.exists_field is None:
            return None
        else:
            present, absent = _exists(col.exists_field), _not(_exists(col.exists_field))
        return Translation(absent, present) if f.op == "is_null" else Translation(present, absent)
    if col.filter_field is None:
        return None
    if col.kind in ("date", "date_nanos"):
        return _time_filter(f, col)
    if col.natural is not None and not _same_values(col.natural, col.arrow):
        return None
    if f.op in ("like", "not_like"):
        return _like(f, col)
    if f.op in ("in", "not_in"):
        if not isinstance(f.value, (tuple, list)) or not f.value or any(v is None for v in f.value):
            return None
        eqs = [_equal(col, v) for v in f.value]
        if any(e is None for e in eqs):
            return None
        member = _or(eqs)  # type: ignore[arg-type]
        if col.max_length is not None:  # longer strings are not indexed: only IN is exact
            return Translation(member, None) if f.op == "in" else None
        outside = _and([_present(col), _not(member)])
        return Translation(member, outside) if f.op == "in" else Translation(outside, member)
    if f.op in ("=", "!="):
        eq = _equal(col, f.value)
        if eq is None:
            return None
        if col.max_length is not None:
            return Translation(eq, None) if f.op == "=" else None
        ne = _and([_present(col), _not(eq)])
        return Translation(eq, ne) if f.op == "=" else Translation(ne, eq)
    if f.op in ("<", "<=", ">", ">="):
        return _compare(col, f.op, f.value)
    return None


def _present(col: EsColumn) -> dict:
    """Documents holding the column's filter field (every document has an _id)."""
    return MATCH_ALL if col.kind == "id" else _exists(col.filter_field)  # type: ignore[arg-type]


def _same_values(natural: pa.DataType, served: pa.DataType) -> bool:
    """A pod type that serves the same values the index holds (filters still apply)."""
    if pa.types.is_integer(natural) and pa.types.is_integer(served):
        return True
    return natural == served or (pa.types.is_string(natural) and pa.types.is_large_string(served))


# -- scalars -------------------------------------------------------------------------------------

def _term_value(col: EsColumn, value: Any) -> Any:
    """The literal as ES compares it on the column's filter field, or None if not exactly."""
    scalar = comparable_scalar(value, col.source_type if col.natural is None else col.arrow)
    if scalar is None or not scalar.is_valid:
        return None
    typ = col.source_type
    v = scalar.as_py()
    if pa.types.is_string(typ):
        if not isinstance(v, str) or (col.max_length is not None and len(v) > col.max_length):
            return None
        return v
    if pa.types.is_boolean(typ):
        return v if isinstance(v, bool) else None
    if pa.types.is_integer(typ):
        if isinstance(v, float):  # 2.5 against an int column: comparisons only, never equal
            return v if v == v else None
        return int(v)
    if pa.types.is_floating(typ):
        v = float(v)
        if not math.isfinite(v):
            return None  # ES holds no NaN or infinities; JSON cannot carry them either
        if typ == pa.float32() and struct.unpack("f", struct.pack("f", v))[0] != v:
            return None  # ES rounds the literal to float32; SQL compares in float64
        return v
    return None


def _equal(col: EsColumn, value: Any) -> dict | None:
    v = _term_value(col, value)
    if v is None:
        return None
    if isinstance(v, float) and pa.types.is_integer(col.source_type):
        return MATCH_NONE if v != int(v) else {"term": {col.filter_field: int(v)}}
    if isinstance(v, float) and v == 0.0:  # -0.0 and 0.0 are distinct points in the index
        return {"range": {col.filter_field: {"gte": -0.0, "lte": 0.0}}}
    if col.kind == "id":
        return {"ids": {"values": [v]}}
    return {"term": {col.filter_field: v}}


_RANGE = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
_OPPOSITE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def _compare(col: EsColumn, op: str, value: Any) -> Translation | None:
    if not col.ordered or col.max_length is not None or col.kind == "id":
        return None
    v = _term_value(col, value)
    if v is None:
        return None

    if isinstance(v, float) and pa.types.is_integer(col.source_type) and v != int(v):
        # a fractional bound against integers: the equivalent integer bound
        op, v = {"<": ("<=", math.floor(v)), "<=": ("<=", math.floor(v)),
                 ">": (">=", math.ceil(v)), ">=": (">=", math.ceil(v))}[op]

    def rng(o: str) -> dict:
        bound = v
        if isinstance(bound, float) and bound == 0.0:
            # SQL: -0.0 = 0.0; the index orders -0.0 below 0.0
            bound = 0.0 if o in ("<=", ">") else -0.0
        return {"range": {col.filter_field: {_RANGE[o]: bound}}}

    return Translation(rng(op), rng(_OPPOSITE[op]))


def _like(f: Filter, col: EsColumn) -> Translation | None:
    if not isinstance(f.value, str) or not pa.types.is_string(col.source_type):
        return None
    pattern = f.value
    has_wild = any(c in pattern for c in "%_")
    if col.kind == "id":
        body = pattern[:-1] if pattern.endswith("%") else None
        if not has_wild:
            q = {"ids": {"values": [pattern]}}
        elif body is not None and not any(c in body for c in "%_"):
            q = {"prefix": {"_id": body}}
        else:
            return None
    else:
        if col.max_length is not None:
            return None  # strings longer than ignore_above are not in the index
        if not has_wild:
            q = {"term": {col.filter_field: pattern}}
        elif pattern.endswith("%") and not any(c in pattern[:-1] for c in "%_"):
            q = {"prefix": {col.filter_field: pattern[:-1]}} if pattern[:-1] else _exists(col.filter_field)
        else:
            escaped = "".join("\\" + c if c in "\\*?" else "*" if c == "%" else "?" if c == "_" else c for c in pattern)
            q = {"wildcard": {col.filter_field: {"value": escaped}}}
        present = _exists(col.filter_field)
        unlike = _and([present, _not(q)])
        return Translation(q, unlike) if f.op == "like" else Translation(unlike, q)
    unlike = _not(q)
    return Translation(q, unlike) if f.op == "like" else Translation(unlike, q)


# -- dates -----------------------------------------------------------------------------------------

def _grid(typ: pa.DataType) -> int | None:
    if pa.types.is_date(typ):
        return _DAY_NS
    if pa.types.is_timestamp(typ):
        return _UNIT_NS[typ.unit]
    return None


def _nanos(scalar: pa.Scalar) -> int:
    typ = scalar.type
    if pa.types.is_date(typ):
        return scalar.cast(pa.date32()).value * _DAY_NS
    return scalar.value * _UNIT_NS[typ.unit]


def iso_nanos(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    when = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


_ISO_FORMATS = {"strict_date_optional_time", "date_optional_time", "strict_date_optional_time_nanos",
                "epoch_millis", "epoch_second", "strict_date", "date"}


def _time_range(col: EsColumn, bounds: Mapping[str, int]) -> dict:
    """A range on a date field with ISO bounds (a `date` field's bounds are always on the
    millisecond grid here, written with milliseconds)."""
    millis = col.kind == "date"
    body: dict[str, Any] = {k: iso_nanos(v)[:-7] + "Z" if millis else iso_nanos(v) for k, v in bounds.items()}
    if not set(col.date_formats) <= _ISO_FORMATS:  # custom formats: say how the bounds are written
        body["format"] = "strict_date_optional_time" if millis else "strict_date_optional_time_nanos"
    return {"range": {col.filter_field: body}}


def _time_filter(f: Filter, col: EsColumn) -> Translation | None:
    served = _grid(col.arrow)
    index = 10**6 if col.kind == "date" else 1
    if served is None:
        return None
    if f.op in ("in", "not_in"):
        if not isinstance(f.value, (tuple, list)) or not f.value or any(v is None for v in f.value):
            return None
        parts = [_time_filter(Filter(f.column, "=", v), col) for v in f.value]
        if any(p is None or not p.exact for p in parts):
            return None
        member = _or([p.true for p in parts])  # type: ignore[union-attr]
        outside = _and([_exists(col.filter_field), _not(member)])  # type: ignore[arg-type]
        return Translation(member, outside) if f.op == "in" else Translation(outside, member)
    if f.op not in ("=", "!=", "<", "<=", ">", ">="):
        return None
    scalar = comparable_scalar(f.value, col.arrow)
    if scalar is None or not scalar.is_valid:
        return None
    v = _nanos(scalar)
    if v % served:
        return None  # finer than the column's values: left to the engine
    field = col.filter_field
    assert field is not None
    if served >= index:  # every served value is floor(indexed value, served grid): exact
        lower = {"<": None, "<=": None, ">": v + served, ">=": v}
        upper = {"<": v, "<=": v + served, ">": None, ">=": None}

        def cond(o: str) -> dict:
            bounds = {}
            if lower[o] is not None:
                bounds["gte"] = lower[o]
            if upper[o] is not None:
                bounds["lt"] = upper[o]
            return _time_range(col, bounds)

        if f.op in ("=", "!="):
            eq = _time_range(col, {"gte": v, "lt": v + served})
            ne = _and([_exists(field), _not(eq)])
            return Translation(eq, ne) if f.op == "=" else Translation(ne, eq)
        return Translation(cond(f.op), cond(_OPPOSITE[f.op]))
    # served finer than indexed: the index holds floor(value, index grid), a superset only
    lo, hi = (v // index) * index, ((v + served - 1) // index) * index
    superset = {"=": {"gte": lo, "lte": lo}, "!=": None, ">": {"gte": lo}, ">=": {"gte": lo},
                "<": {"lte": ((v - 1) // index) * index}, "<=": {"lte": hi}}[f.op]
    return Translation(_exists(field) if superset is None else _time_range(col, superset), None, exact=False)


# -- classification ------------------------------------------------------------------------------

def classify(filters: Sequence[Filter], columns: Mapping[str, EsColumn]) -> list[FilterSupport]:
    out = []
    for f in filters:
        t = translate(f, columns)
        out.append(FilterSupport.UNSUPPORTED if t is None else FilterSupport.EXACT if t.exact else FilterSupport.INEXACT)
    return out


def build_query(filters: Sequence[Filter], columns: Mapping[str, EsColumn]) -> tuple[dict, bool]:
    """(query for the filters ES can take, whether every filter was exact)."""
    parts, exact = [], True
    for f in filters:
        t = translate(f, columns)
        if t is None or not t.exact:
            exact = False
        if t is not None:
            parts.append(t.true)
    return _and(parts), exact


def sort_spec(keys: Sequence[SortKey], columns: Mapping[str, EsColumn]) -> list[dict] | None:
    """ES sort clauses giving SQL's ORDER BY (NULLs placed as asked), or None."""
    out = []
    for k in keys:
        col = columns.get(k.column)
        if col is None or col.filter_field is None or not col.ordered or col.max_length is not None:
            return None
        if col.kind not in ("scalar", "date", "date_nanos") or col.kind == "id":
            return None
        if col.es_type in ("long", "unsigned_long"):
            # ES sorts a missing value as the type's minimum/maximum, tied with real extremes
            return None
        if col.natural is not None and not (_same_values(col.natural, col.arrow) or col.kind in ("date", "date_nanos")):
            return None
        out.append({col.filter_field: {"order": "desc" if k.descending else "asc",
                                       "missing": "_first" if k.nulls_first else "_last"}})
    return out
