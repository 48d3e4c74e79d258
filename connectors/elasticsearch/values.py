"""Elasticsearch `_source` values -> Arrow arrays of a column's type.

The fast path hands the page's values to `pa.array` with the column type; only values that
JSON cannot carry as the Arrow type (dates in their source formats, geo points in their five
source forms, base64 binary, numbers ES accepted as strings) are converted one by one.

Arrays: any ES field may hold an array. A `nested` column is a list; for every other column a
one-element array is its element and an empty array is NULL, and a document holding several
values in a scalar (or object) column is an error naming the field and the document, unless
`unsupported_type_action` is `warn` or `ignore`, which serve NULL for it (warn logs it once
per scan). Declare the column with a list type in the pod (`type: VARCHAR[]`) to serve every
value.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import re
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConnectorError

from .schema import EsColumn

log = logging.getLogger("satchel.connectors.elasticsearch.connector")

_CONVERT_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError,
                   ValueError)
_ZONED = r"(Z|z|[+-]\d\d(:?\d\d)?)$"


class ValueReader:
    """Converts one scan's pages; remembers which multi-value warnings were already logged."""

    def __init__(self, dataset: str, action: str) -> None:
        self.dataset, self.action = dataset, action
        self._warned: set[str] = set()

    def column(self, col: EsColumn, values: list[Any], ids: Callable[[int], str]) -> pa.Array:
        """`values` (one per document, None when missing) as an array of `col.arrow`."""
        target = col.arrow
        if col.kind in ("date", "date_nanos") and (pa.types.is_timestamp(target) or pa.types.is_date(target)):
            # parsed straight into the served type: a pod unit finer than the mapping's keeps
            # the _source precision
            return self._dates(col, self._single(col, values, ids), target)
        if pa.types.is_list(target) and not pa.types.is_list(col.source_type):
            # the pod declares a list: every value, a single one as a one-element list
            values = [v if v is None or isinstance(v, list) else [v] for v in values]
            array = self._lists(col, values, col.source_type, ids)
        else:
            array = self._convert(col, values, ids)
        if array.type != target:
            array = self._cast(col, array, target)
        return array

    # -- structure --

    def _lists(self, col: EsColumn, values: list[Any], value_type: pa.DataType, ids) -> pa.Array:
        offsets, flat, mask = [0], [], []
        for v in values:
            mask.append(v is None)
            if v is not None:
                flat.extend(v)
            offsets.append(len(flat))
        element = EsColumn(**{**col.__dict__, "arrow": value_type, "natural": None})
        inner = self._convert(element, flat, lambda i: "?")
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner, mask=pa.array(mask, pa.bool_()))

    def _single(self, col: EsColumn, values: list[Any], ids) -> list[Any]:
        """Unwrap one-element arrays; several values follow the documented rule."""
        if not any(type(v) is list for v in values):
            return values
        out = []
        geo = col.kind == "geo_point"
        for i, v in enumerate(values):
            if geo and type(v) is list and v and all(isinstance(x, (int, float)) for x in v):
                out.append(v)  # [lon, lat] is one point
                continue
            if type(v) is list:
                items = [x for x in v if x is not None]
                if len(items) <= 1:
                    v = items[0] if items else None
                else:
                    v = self._multi(col, ids(i))
            out.append(v)
        return out

    def _multi(self, col: EsColumn, doc_id: str) -> None:
        if self.action in ("error", "string"):
            raise ConnectorError(
                f"dataset '{self.dataset}': field '{col.path}' holds several values in document _id={doc_id!r}, but "
                f"the column is not a list; declare it as one in the pod (columns: - name: {col.path.split('.')[0]}, "
                f"type: <TYPE>[] for a top-level field) or set unsupported_type_action: warn or ignore to serve NULL")
        if self.action == "warn" and col.path not in self._warned:
            self._warned.add(col.path)
            log.warning("dataset '%s': field '%s' holds several values (document _id=%r); serving NULL",
                        self.dataset, col.path, doc_id)
        return None

    def _convert(self, col: EsColumn, values: list[Any], ids) -> pa.Array:
        typ = col.source_type
        if col.kind == "nested":
            return self._nested(col, values, ids)
        values = self._single(col, values, ids)
        if col.kind == "object":
            return self._struct(col, values, ids)
        if col.kind == "json":
            return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                             for v in values], pa.string())
        if col.kind in ("date", "date_nanos"):
            return self._dates(col, values, typ)
        if col.kind == "geo_point":
            return pa.array([_geo_point(v, col, self.dataset) for v in values], typ)
        if col.kind == "binary":
            return pa.array([None if v is None else _b64(v, col, self.dataset) for v in values], typ)
        try:
            return pa.array(values, typ)
        except _CONVERT_ERRORS:
            return pa.array([_coerce(v, typ, col, self.dataset) for v in values], typ)

    def _struct(self, col: EsColumn, values: list[Any], ids) -> pa.Array:
        mask = [not isinstance(v, dict) for v in values]
        children = [self._convert(k, [v.get(k.name) if isinstance(v, dict) else None for v in values], ids)
                    for k in col.children]
        fields = [pa.field(k.name, a.type) for k, a in zip(col.children, children)]
        if not fields:
            return pa.nulls(len(values), pa.struct([]))
        return pa.StructArray.from_arrays(children, fields=fields, mask=pa.array(mask, pa.bool_()))

    def _nested(self, col: EsColumn, values: list[Any], ids) -> pa.Array:
        offsets, flat, mask = [0], [], []
        for v in values:
            if isinstance(v, dict):
                v = [v]
            mask.append(v is None)
            if v:
                flat.extend(x for x in v if isinstance(x, dict))
            offsets.append(len(flat))
        obj = EsColumn(**{**col.__dict__, "kind": "object", "arrow": col.source_type.value_type, "natural": None})
        inner = self._struct(obj, flat, ids)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner, mask=pa.array(mask, pa.bool_()))

    # -- dates --

    def _dates(self, col: EsColumn, values: list[Any], typ: pa.DataType) -> pa.Array:
        """Dates as `typ`, floored to its unit (a `date` field's natural unit, ms, is what ES
        indexes, so served values and filters agree)."""
        nanos = _parse_dates(col, values, self.dataset)
        if pa.types.is_date(typ):
            return nanos.cast(pa.timestamp("ns")).cast(pa.date32()) if len(nanos) else pa.array([], typ)
        unit = {"s": "second", "ms": "millisecond", "us": "microsecond", "ns": "nanosecond"}[typ.unit]
        floored = pc.floor_temporal(nanos, unit=unit) if typ.unit != "ns" else nanos
        if typ.tz is None:  # naive columns carry UTC wall-clock time
            floored = floored.cast(pa.timestamp("ns"))
        return floored.cast(typ)

    def _cast(self, col: EsColumn, array: pa.Array, target: pa.DataType) -> pa.Array:
        try:
            if pa.types.is_timestamp(array.type) and pa.types.is_timestamp(target):
                unit_floor = {"s": "second", "ms": "millisecond", "us": "microsecond", "ns": "nanosecond"}[target.unit]
                array = pc.floor_temporal(array, unit=unit_floor)
                if target.tz is None:  # naive columns carry UTC wall-clock time
                    return array.cast(pa.timestamp(array.type.unit)).cast(target)
                return array.cast(target)
            if pa.types.is_timestamp(array.type) and pa.types.is_date(target):
                return array.cast(pa.timestamp(array.type.unit)).cast(target)
            return array.cast(target, safe=True)
        except _CONVERT_ERRORS as e:
            raise ConnectorError(f"dataset '{self.dataset}': column '{col.name}' ({col.es_type}) does not convert to "
                                 f"its declared type {target}: {e}") from None


def _coerce(v: Any, typ: pa.DataType, col: EsColumn, dataset: str) -> Any:
    """One value ES accepted (coerce) that JSON does not carry as `typ`: "12", 3.0 for an int."""
    if v is None:
        return None
    try:
        if pa.types.is_integer(typ):
            number = float(v) if isinstance(v, str) and not re.fullmatch(r"[+-]?\d+", v.strip()) else v
            return int(number) if not isinstance(number, str) else int(number.strip())  # ES truncates fractions
        if pa.types.is_floating(typ):
            return float(v)
        if pa.types.is_boolean(typ):
            if isinstance(v, str) and v in ("true", "false", ""):
                return None if v == "" else v == "true"
            raise ValueError(v)
        if pa.types.is_string(typ):
            return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else (
                "true" if v is True else "false" if v is False else str(v))
    except (ValueError, TypeError, OverflowError):
        pass
    raise ConnectorError(f"dataset '{dataset}': field '{col.path}' ({col.es_type}) holds a value that is not a "
                         f"{typ}: {str(v)[:80]!r}")


def _b64(v: Any, col: EsColumn, dataset: str) -> bytes:
    try:
        return base64.b64decode(v, validate=True)
    except (ValueError, TypeError):
        raise ConnectorError(f"dataset '{dataset}': binary field '{col.path}' holds a value that is not base64") from None


_WKT_POINT = re.compile(r"^\s*POINT\s*\(\s*([-+\d.eE]+)\s+([-+\d.eE]+)(?:\s+[-+\d.eE]+)?\s*\)\s*$", re.I)
_GEOHASH = "0123456789bcdefghjkmnpqrstuvwxyz"


def _geo_point(v: Any, col: EsColumn, dataset: str) -> dict | None:
    """The five source forms of a geo_point -> {lat, lon}."""
    try:
        if v is None:
            return None
        if isinstance(v, dict):
            if "lat" in v and "lon" in v:
                return {"lat": float(v["lat"]), "lon": float(v["lon"])}
            if v.get("type", "").lower() == "point":  # GeoJSON: [lon, lat]
                lon, lat = v["coordinates"][:2]
                return {"lat": float(lat), "lon": float(lon)}
        if isinstance(v, list) and len(v) in (2, 3) and all(isinstance(x, (int, float)) for x in v):
            return {"lat": float(v[1]), "lon": float(v[0])}  # [lon, lat(, z)]
        if isinstance(v, str):
            m = _WKT_POINT.match(v)
            if m:
                return {"lat": float(m.group(2)), "lon": float(m.group(1))}
            if "," in v:
                lat, lon = v.split(",")[:2]
                return {"lat": float(lat), "lon": float(lon)}
            return _geohash(v)
    except (ValueError, TypeError, KeyError, IndexError):
        pass
    raise ConnectorError(f"dataset '{dataset}': geo_point field '{col.path}' holds a value in no known form: "
                         f"{str(v)[:80]!r}")


def _geohash(text: str) -> dict:
    """A geohash's cell centre."""
    lat, lon, even = [-90.0, 90.0], [-180.0, 180.0], True
    for ch in text.strip().lower():
        bits = _GEOHASH.index(ch)
        for shift in range(4, -1, -1):
            rng = lon if even else lat
            mid = (rng[0] + rng[1]) / 2
            if bits >> shift & 1:
                rng[0] = mid
            else:
                rng[1] = mid
            even = not even
    return {"lat": (lat[0] + lat[1]) / 2, "lon": (lon[0] + lon[1]) / 2}


# -- dates ----------------------------------------------------------------------------------

def _parse_dates(col: EsColumn, values: list[Any], dataset: str) -> pa.Array:
    """Dates in their source forms -> timestamp[ns, UTC]: ISO strings (with or without a zone;
    none means UTC, as in ES), epoch numbers per the field's formats, custom patterns."""
    epoch_unit = "s" if "epoch_second" in col.date_formats and "epoch_millis" not in col.date_formats else "ms"
    out = pa.timestamp("ns", "UTC")
    try:
        strings = pa.array(values, pa.string())
    except _CONVERT_ERRORS:
        strings = None
    if strings is not None:
        try:
            return _iso_strings(strings, col, epoch_unit)
        except _CONVERT_ERRORS:
            pass
    else:
        try:
            numbers = pa.array(values, pa.float64() if any(isinstance(v, float) for v in values) else pa.int64())
            return _epoch(numbers, epoch_unit)
        except _CONVERT_ERRORS:
            pass
    return pa.array([_one_date(v, col, epoch_unit, dataset) for v in values], out)


def _iso_strings(strings: pa.Array, col: EsColumn, epoch_unit: str) -> pa.Array:
    digits = pc.match_substring_regex(strings, r"^-?\d+(\.\d+)?$")
    if pc.any(digits).as_py() and any(f.startswith("epoch_") for f in col.date_formats):
        if pc.all(pc.or_kleene(digits, pc.is_null(strings))).as_py():
            return _epoch(pc.cast(strings, pa.float64() if pc.any(pc.match_substring(strings, ".")).as_py()
                                  else pa.int64()), epoch_unit)
        raise ValueError("mixed epoch and text dates")
    zoned = pc.match_substring_regex(strings, _ZONED)
    with_zone = pc.if_else(zoned, strings, pa.scalar(None, pa.string())).cast(pa.timestamp("ns", "UTC"))
    plain = pc.if_else(zoned, pa.scalar(None, pa.string()), strings).cast(pa.timestamp("ns"))
    return pc.coalesce(with_zone, plain.cast(pa.int64()).cast(pa.timestamp("ns", "UTC")))


def _epoch(numbers: pa.Array, unit: str) -> pa.Array:
    scale = 1_000_000 if unit == "ms" else 1_000_000_000
    if pa.types.is_floating(numbers.type):
        nanos = pc.cast(pc.round(pc.multiply(numbers, float(scale))), pa.int64())
    else:
        nanos = pc.multiply_checked(numbers.cast(pa.int64()), scale)
    return nanos.cast(pa.timestamp("ns", "UTC"))


_JAVA_TOKENS = [("yyyy", "%Y"), ("uuuu", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"),
                ("ss", "%S"), ("SSSSSSSSS", "%f"), ("SSSSSS", "%f"), ("SSS", "%f"), ("XXX", "%z"), ("Z", "%z"),
                ("yy", "%y"), ("'T'", "T")]


def _java_to_strptime(pattern: str) -> str | None:
    out, i = "", 0
    while i < len(pattern):
        for token, repl in _JAVA_TOKENS:
            if pattern.startswith(token, i):
                out += repl
                i += len(token)
                break
        else:
            ch = pattern[i]
            if ch.isalpha():
                return None
            out += "%%" if ch == "%" else ch
            i += 1
    return out


def _one_date(v: Any, col: EsColumn, epoch_unit: str, dataset: str) -> int | None:
    """One date in nanoseconds since the epoch (UTC)."""
    if v is None:
        return None
    if isinstance(v, bool):
        v = str(v)
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        else:
            return round(v * (10**6 if epoch_unit == "ms" else 10**9))
    text = str(v).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text) and any(f.startswith("epoch_") for f in col.date_formats):
        return round(float(text) * (10**6 if epoch_unit == "ms" else 10**9)) if "." in text else \
            int(text) * (10**6 if epoch_unit == "ms" else 10**9)
    for fmt in col.date_formats:
        pattern = _java_to_strptime(fmt) if not fmt.startswith(("strict_", "date", "epoch_", "basic_")) else None
        if pattern is None:
            continue
        try:
            parsed = dt.datetime.strptime(text, pattern)
        except ValueError:
            continue
        return _to_nanos(parsed)
    try:
        return _to_nanos(dt.datetime.fromisoformat(text.replace("z", "Z")))
    except ValueError:
        raise ConnectorError(f"dataset '{dataset}': date field '{col.path}' holds {text[:40]!r}, which none of its "
                             f"formats ({'||'.join(col.date_formats)}) parses") from None


def _to_nanos(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
