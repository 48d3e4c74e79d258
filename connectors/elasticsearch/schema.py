"""Elasticsearch mappings -> columns: the Arrow type of each field and how it can be filtered.

Columns are the top-level fields of the mapping (merged over every index a pattern or alias
resolves to), plus the document `_id`. Objects become structs, `nested` lists of structs; a
field whose type Satchel cannot serve, or whose type differs between indices, follows
`unsupported_type_action` (`string` serves the value's JSON text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import pyarrow as pa

from engine.errors import ConnectorError

from ..source_types import resolve_unsupported

_NUMERIC: dict[str, pa.DataType] = {
    "long": pa.int64(), "integer": pa.int32(), "short": pa.int16(), "byte": pa.int8(),
    "unsigned_long": pa.uint64(), "double": pa.float64(), "float": pa.float32(),
    "half_float": pa.float32(), "scaled_float": pa.float64(),
}
# Numeric types whose indexed value is exactly the served value (half_float and scaled_float
# index a rounded value, so a filter on them would disagree with the _source value served).
_EXACT_NUMERIC = {"long", "integer", "short", "byte", "unsigned_long", "double", "float"}
_KEYWORDS = {"keyword", "constant_keyword"}
_TEXTS = {"text", "match_only_text"}
_STRINGISH = {"wildcard", "ip", "version"}  # served as their _source string, filters left to the engine
GEO_POINT = pa.struct([("lat", pa.float64()), ("lon", pa.float64())])

# Date formats that hold only a calendar date (served as date32).
_DATE_ONLY = {"date", "strict_date", "basic_date", "year_month_day", "strict_year_month_day", "yyyy-MM-dd",
              "yyyyMMdd", "uuuu-MM-dd"}
DEFAULT_DATE_FORMAT = "strict_date_optional_time||epoch_millis"


@dataclass(frozen=True)
class EsColumn:
    """One served column (or a struct child): its ES field and how values and filters work."""

    name: str  # the key in _source
    path: str  # the full ES field path (e.g. obj.a)
    es_type: str  # ES type; "_id", "object", "nested", "conflict", or the unsupported type
    arrow: pa.DataType
    kind: str  # scalar | date | date_nanos | geo_point | binary | object | nested | json | id
    filter_field: str | None = None  # the field exact term/range queries run on (None: none)
    exists_field: str | None = None  # the field `exists` runs on for IS [NOT] NULL (None: none)
    ordered: bool = False  # range queries and sorts on filter_field agree with SQL order
    max_length: int | None = None  # ignore_above of the filter field: longer strings are not indexed
    date_formats: tuple[str, ...] = ()
    children: tuple["EsColumn", ...] = ()
    text: bool = False  # a text field (match() runs on it)
    natural: pa.DataType | None = None  # the type before the pod's `columns[].type` (None: same)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source_type(self) -> pa.DataType:
        return self.natural or self.arrow


def index_mappings(dataset: str, response: Mapping[str, Any]) -> list[tuple[str, dict]]:
    """[(index, mappings)] from a GET _mapping response; refuses indices without _source."""
    out = []
    for index, body in sorted(response.items()):
        mappings = body.get("mappings") or {}
        source = mappings.get("_source") or {}
        if source.get("enabled") is False:
            raise ConnectorError(f"dataset '{dataset}': index '{index}' stores no _source (mapping _source.enabled: "
                                 f"false), so its documents cannot be read")
        out.append((index, mappings))
    return out


def columns_from_mappings(dataset: str, mappings: list[tuple[str, dict]], action: str,
                          id_column: str | None, pod_types: Mapping[str, pa.DataType]) -> list[EsColumn]:
    """The dataset's columns: `_id` (as `id_column`) then the merged top-level fields."""
    merged: dict[str, EsColumn] = {}
    problems: dict[str, str] = {}
    for index, mapping in mappings:
        for name, prop in (mapping.get("properties") or {}).items():
            col, why = _column(name, name, prop)
            if why is not None:
                problems.setdefault(name, why)
                merged.setdefault(name, col)
                continue
            prev = merged.get(name)
            if prev is None:
                merged[name] = col
            elif name not in problems and prev != col:
                widened = _widen(prev, col)
                if widened is None:
                    problems[name] = (f"different types in the indices it spans ({_describe(prev)} vs "
                                      f"{_describe(col)} in '{index}')")
                else:
                    merged[name] = widened
    decisions = resolve_unsupported(dataset, action, problems)
    columns: list[EsColumn] = []
    if id_column:
        columns.append(EsColumn(id_column, "_id", "_id", pa.string(), "id", filter_field="_id", exists_field=None))
    for name, col in merged.items():
        if name in problems:
            if decisions.get(name) == "drop":
                continue
            col = EsColumn(name, name, "conflict" if "different types" in problems[name] else col.es_type,
                           pa.string(), "json")
        elif any(c.arrow is None for c in _walk(col)):
            col = _prune(dataset, col, action)
        if id_column and name == id_column:
            raise ConnectorError(f"dataset '{dataset}': field '{name}' clashes with the document id column; set "
                                 f"elasticsearch_id_column to another name (or empty for none)")
        columns.append(col)
    unknown = sorted(set(pod_types) - {c.name for c in columns})
    if unknown:
        raise ConnectorError(f"dataset '{dataset}': columns[].type given for unknown column(s) {', '.join(unknown)}; "
                             f"columns: {', '.join(c.name for c in columns)}")
    columns = [_with_pod_type(c, pod_types[c.name]) if c.name in pod_types else c for c in columns]
    # ES lists fields alphabetically; the pod's typed columns come first, in the pod's order
    order = {name: i for i, name in enumerate(pod_types)}
    columns.sort(key=lambda c: (c.kind != "id", order.get(c.name, len(order))))
    if not columns:
        raise ConnectorError(f"dataset '{dataset}': the mapping has no fields to serve")
    return columns


def _with_pod_type(col: EsColumn, typ: pa.DataType) -> EsColumn:
    if typ == col.arrow:
        return col
    return EsColumn(**{**col.__dict__, "arrow": typ, "natural": col.arrow})


def _walk(col: EsColumn):
    yield col
    for c in col.children:
        yield from _walk(c)


def _prune(dataset: str, col: EsColumn, action: str) -> EsColumn:
    """An object whose children include unsupported types: apply the action to each of them."""
    problems = {c.path: f"type {c.es_type}" for c in _walk(col) if c.arrow is None and not c.children}
    decisions = resolve_unsupported(dataset, action, problems)

    def rebuild(c: EsColumn) -> EsColumn | None:
        if not c.children:
            if c.arrow is not None:
                return c
            if decisions.get(c.path) == "drop":
                return None
            return EsColumn(c.name, c.path, c.es_type, pa.string(), "json")
        kids = tuple(k for k in (rebuild(k) for k in c.children) if k is not None)
        struct = pa.struct([pa.field(k.name, k.arrow) for k in kids])
        return EsColumn(**{**c.__dict__, "children": kids, "arrow": pa.list_(struct) if c.kind == "nested" else struct})

    out = rebuild(col)
    assert out is not None
    return out


def _describe(col: EsColumn) -> str:
    return col.es_type if col.kind not in ("object", "nested") else f"{col.kind} {col.arrow}"


def _widen(a: EsColumn, b: EsColumn) -> EsColumn | None:
    """Two indices' versions of a field: the same, or integers of different widths."""
    if a.kind == b.kind == "scalar" and pa.types.is_signed_integer(a.arrow) and pa.types.is_signed_integer(b.arrow):
        return a if a.arrow.bit_width >= b.arrow.bit_width else b
    if a.kind == b.kind and a.kind in ("date", "date_nanos") and a.arrow == b.arrow and a.es_type == b.es_type:
        return EsColumn(**{**a.__dict__, "date_formats": tuple(dict.fromkeys(a.date_formats + b.date_formats))})
    if a.kind == b.kind == "scalar" and a.arrow == b.arrow == pa.string():
        # keyword in one index and text in another: serve the text, filter on nothing exact
        if a.filter_field != b.filter_field or a.max_length != b.max_length or a.exists_field != b.exists_field:
            return EsColumn(a.name, a.path, a.es_type, pa.string(), "scalar", text=a.text and b.text)
        return EsColumn(**{**a.__dict__, "text": a.text and b.text})
    return None


def _column(name: str, path: str, prop: Mapping[str, Any]) -> tuple[EsColumn, str | None]:
    """(column, None) or (placeholder, why unsupported) for one mapping property."""
    typ = prop.get("type") or ("object" if "properties" in prop else "object")
    indexed = prop.get("index", True) is not False
    if typ in ("object", "nested"):
        if prop.get("enabled") is False:
            return EsColumn(name, path, "object (enabled: false)", pa.string(), "json"), "an object with enabled: false"
        kids = []
        for child, cprop in (prop.get("properties") or {}).items():
            kid, why = _column(child, f"{path}.{child}", cprop)
            kids.append(kid if why is None else EsColumn(child, f"{path}.{child}", kid.es_type, None, "json"))  # type: ignore[arg-type]
        if not kids:
            return EsColumn(name, path, typ, pa.string(), "json"), f"an empty {typ} mapping (no properties)"
        arrow_kids = [pa.field(k.name, k.arrow if k.arrow is not None else pa.null()) for k in kids]
        struct = pa.struct(arrow_kids)
        return EsColumn(name, path, typ, pa.list_(struct) if typ == "nested" else struct, typ,
                        exists_field=None, children=tuple(kids)), None
    if typ in _KEYWORDS:
        plain = indexed and not prop.get("normalizer") and "null_value" not in prop
        return EsColumn(name, path, typ, pa.string(), "scalar", filter_field=path if plain else None,
                        exists_field=path if plain and "ignore_above" not in prop else None,
                        ordered=plain, max_length=prop.get("ignore_above")), None
    if typ in _TEXTS:
        sub = _keyword_subfield(prop)
        if sub is None:
            return EsColumn(name, path, typ, pa.string(), "scalar", text=True), None
        sub_name, sub_prop = sub
        full = f"{path}.{sub_name}"
        return EsColumn(name, path, typ, pa.string(), "scalar", filter_field=full,
                        exists_field=full if "ignore_above" not in sub_prop else None, ordered=True,
                        max_length=sub_prop.get("ignore_above"), text=True), None
    if typ in _NUMERIC:
        exact = typ in _EXACT_NUMERIC and indexed and "null_value" not in prop
        return EsColumn(name, path, typ, _NUMERIC[typ], "scalar", filter_field=path if exact else None,
                        exists_field=path if indexed and "null_value" not in prop else None, ordered=exact,
                        extra={"scaling_factor": prop.get("scaling_factor")}), None
    if typ == "boolean":
        plain = indexed and "null_value" not in prop
        # no range queries or sorts: not every server orders booleans in a range query
        return EsColumn(name, path, typ, pa.bool_(), "scalar", filter_field=path if plain else None,
                        exists_field=path if plain else None), None
    if typ in ("date", "date_nanos"):
        formats = tuple(f.strip() for f in str(prop.get("format") or DEFAULT_DATE_FORMAT).split("||") if f.strip())
        plain = indexed and "null_value" not in prop
        if all(f in _DATE_ONLY for f in formats):
            arrow: pa.DataType = pa.date32()
        else:
            arrow = pa.timestamp("ms" if typ == "date" else "ns", "UTC")
        return EsColumn(name, path, typ, arrow, typ, filter_field=path if plain else None,
                        exists_field=path if plain else None, ordered=plain, date_formats=formats), None
    if typ == "geo_point":
        return EsColumn(name, path, typ, GEO_POINT, "geo_point",
                        exists_field=path if indexed and "null_value" not in prop else None), None
    if typ == "binary":
        return EsColumn(name, path, typ, pa.binary(), "binary"), None
    if typ in _STRINGISH:
        return EsColumn(name, path, typ, pa.string(), "scalar",
                        exists_field=path if indexed and "null_value" not in prop and typ != "wildcard" else None), None
    return EsColumn(name, path, typ, pa.string(), "json"), f"type {typ}"


def _keyword_subfield(prop: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """A text field's plain keyword multi-field (no normalizer: it holds the exact string)."""
    for sub, sprop in sorted((prop.get("fields") or {}).items(), key=lambda kv: kv[0] != "keyword"):
        if sprop.get("type") == "keyword" and not sprop.get("normalizer") and sprop.get("index", True) is not False \
                and "null_value" not in sprop:
            return sub, sprop
    return None


_INDEX_NAME = re.compile(r"^[^\\/?\"<>| ,#]+$")


def check_index_expression(dataset: str, path: str) -> str:
    """`from: elasticsearch:<index, pattern or alias>` (comma lists allowed, no remote clusters)."""
    text = path.strip()
    parts = [p.strip() for p in text.split(",")]
    if not text or not all(parts) or not all(_INDEX_NAME.match(p.lstrip("-")) for p in parts):
        raise ConnectorError(f"dataset '{dataset}': 'from: elasticsearch:{path}' must name an index, a pattern such "
                             f"as logs-* or an alias")
    if any(":" in p for p in parts):
        raise ConnectorError(f"dataset '{dataset}': cross-cluster index names ('{text}') are not supported")
    return ",".join(parts)
