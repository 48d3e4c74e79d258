"""Arrow schemas for JSON-like documents (MongoDB, JSON APIs): inference from a sample and
conversion of document batches.

Shared by every connector whose source yields Python documents (dicts of str/int/float/bool/
None/list/dict, plus Decimal, datetime, date and bytes a driver may decode to). A source with
other value types (BSON ObjectId, ...) converts them to these before calling in.

Inference rules (field order = first appearance; nested documents -> structs, arrays -> lists):

- bool -> bool, int -> int64, float -> float64, str -> string, bytes -> binary,
  Decimal -> decimal128(38, largest scale seen), aware datetime -> timestamp(us, UTC),
  naive datetime -> timestamp(us), date -> date32; a field missing from a document is NULL.
- Conflicting types widen where no value changes meaning: int + float -> float64,
  int + Decimal -> decimal, struct + struct -> the union of fields, list + list -> list of the
  widened element type. Any other mix (and Python ints beyond 64 bits, Decimal NaN/Infinity,
  unknown Python types) follows `unsupported_type_action` for that field:
  error -> UnsupportedType naming the field path and the types; warn / ignore -> the field is
  dropped (a warning is logged); string -> the field becomes text (strings as they are, other
  values as canonical JSON text).
- A field that is only ever NULL (or an empty list's element, or an empty document) is text
  (string); an empty document becomes JSON text "{}".
- `overrides` (the pod's column types) win over inference for the top-level columns named;
  named columns absent from the sample are added (all NULL until values appear).

Conversion (`to_record_batch`) runs pyarrow's C++ converter over the whole batch; only when it
refuses a batch (a value whose type does not fit the schema, a date stored as a datetime,
non-text in a text column) are the columns it refused converted value by value. A value that
does not fit follows the same action: error -> ConnectorError naming the field and both types;
warn / ignore / string -> that value is NULL (warned once per field), except into a text column,
where it becomes JSON text. Fields not in the schema (new since inference) are ignored.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa

from engine.errors import ConnectorError, UnsupportedType

log = logging.getLogger("satchel.connectors.documents")

ACTIONS = ("error", "warn", "ignore", "string")
_INT64 = (-(2**63), 2**63 - 1)
JsonText = Callable[[Any], str]

# -- inference ---------------------------------------------------------------------------------


@dataclass
class _Node:
    """What the sample says about one field: a kind and, for documents and arrays, children."""

    kind: str = "null"  # null bool int float decimal string binary ts ts_tz date struct list conflict
    scale: int = 0  # decimal: the largest scale seen
    digits: int = 0  # decimal: the most integer digits seen
    fields: dict[str, "_Node"] = field(default_factory=dict)  # struct
    element: "_Node | None" = None  # list
    seen: set[str] = field(default_factory=set)  # Python type names seen (for messages)


_SIMPLE_KINDS = {bool: "bool", str: "string", bytes: "binary", float: "float"}


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    t = type(value)
    if t in _SIMPLE_KINDS:
        return _SIMPLE_KINDS[t]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value <= _INT64[1] else "conflict"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "binary"
    if isinstance(value, decimal.Decimal):
        return "decimal" if value.is_finite() else "conflict"
    if isinstance(value, dt.datetime):
        return "ts_tz" if value.tzinfo is not None else "ts"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, Mapping):
        return "struct"
    if isinstance(value, (list, tuple)):
        return "list"
    return "conflict"


def _type_name(value: Any) -> str:
    return {dict: "document", list: "array", tuple: "array", type(None): "null"}.get(type(value), type(value).__name__)


def _merge_kind(a: str, b: str) -> str:
    if a == b or b == "null":
        return a
    if a == "null":
        return b
    pair = {a, b}
    if pair == {"int", "float"}:
        return "float"
    if pair == {"int", "decimal"}:
        return "decimal"
    return "conflict"


def _observe(node: _Node, value: Any) -> None:
    kind = _kind_of(value)
    if kind != "null":
        node.seen.add(_type_name(value))
    node.kind = _merge_kind(node.kind, kind)
    if node.kind == "conflict":
        return
    if kind == "decimal":
        _, digits, exponent = value.as_tuple()
        node.scale = max(node.scale, max(0, -exponent))
        node.digits = max(node.digits, len(digits) + exponent)  # integer digits
    elif kind == "int" and node.kind == "decimal":
        node.digits = max(node.digits, len(str(abs(value))))
    elif kind == "struct":
        for key, child in value.items():
            sub = node.fields.get(key)
            if sub is None:
                sub = node.fields[key] = _Node()
            _observe(sub, child)
    elif kind == "list":
        if node.element is None:
            node.element = _Node()
        for item in value:
            _observe(node.element, item)


class _Resolver:
    """Turns observed nodes into Arrow types, applying `unsupported_type_action`."""

    def __init__(self, dataset: str, action: str, quiet: bool = False):
        self.quiet = quiet  # conflicts become None silently (no action applied)
        if action not in ACTIONS:
            raise ConnectorError(f"dataset '{dataset}': unknown unsupported_type_action '{action}'; "
                                 f"allowed: {', '.join(ACTIONS)}")
        self.dataset, self.action = dataset, action

    def type_of(self, node: _Node, path: str) -> pa.DataType | None:
        """The field's Arrow type, or None when the field is dropped."""
        kind = node.kind
        if kind == "struct":
            fields = []
            for name, child in node.fields.items():
                typ = self.type_of(child, f"{path}.{name}")
                if typ is not None:
                    fields.append(pa.field(name, typ))
            return pa.struct(fields) if fields else pa.string()
        if kind == "list":
            element = self.type_of(node.element, f"{path}[]") if node.element is not None else pa.string()
            return None if element is None else pa.list_(element)
        if kind == "decimal":
            if node.digits + node.scale > 38:
                return self._unsupported(path, f"decimals with {node.digits + node.scale} digits (more than 38)")
            return pa.decimal128(38, node.scale)
        if kind == "conflict":
            return self._unsupported(path, "values of types " + ", ".join(sorted(node.seen)))
        return _KIND_TYPES[kind]

    def _unsupported(self, path: str, what: str) -> pa.DataType | None:
        if self.quiet:
            return None
        if self.action == "error":
            raise UnsupportedType(
                f"dataset '{self.dataset}': field '{path}' has {what}, which Satchel cannot serve as one column "
                f"type; set unsupported_type_action to string (serve it as JSON text), ignore or warn (drop it), "
                f"or give the column a type in the pod")
        if self.action == "string":
            log.info("dataset '%s': field '%s' has %s; serving it as text", self.dataset, path, what)
            return pa.string()
        log.warning("dataset '%s': dropping field '%s' (%s, unsupported_type_action=%s)",
                    self.dataset, path, what, self.action)
        return None


_KIND_TYPES: dict[str, pa.DataType] = {
    "null": pa.string(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "string": pa.string(),
    "binary": pa.binary(), "ts": pa.timestamp("us"), "ts_tz": pa.timestamp("us", "UTC"), "date": pa.date32(),
}


def infer_schema(docs: Iterable[Mapping[str, Any]], *, dataset: str, unsupported_type_action: str = "error",
                 overrides: Mapping[str, pa.DataType] = {}) -> pa.Schema:  # never mutated
    """The Arrow schema of a sample of documents (rules in the module docstring)."""
    resolver = _Resolver(dataset, unsupported_type_action)
    root = _Node(kind="struct")
    for doc in docs:
        if not isinstance(doc, Mapping):
            raise ConnectorError(f"dataset '{dataset}': expected documents (JSON objects), got {_type_name(doc)}")
        for key, value in doc.items():
            if key in overrides:  # the pod's type wins: no need to look at the values
                root.fields.setdefault(key, _Node())
                continue
            node = root.fields.get(key)
            if node is None:
                node = root.fields[key] = _Node()
            _observe(node, value)
    fields = []
    for name, node in root.fields.items():
        typ = overrides.get(name) or resolver.type_of(node, name)
        if typ is not None:
            fields.append(pa.field(name, typ))
    for name, typ in overrides.items():
        if name not in root.fields:
            fields.append(pa.field(name, typ))
    return pa.schema(fields)


def sample_types(docs: Iterable[Mapping[str, Any]]) -> dict[str, pa.DataType | None]:
    """Each top-level field's type by the inference rules, None where the sample's values
    conflict (no logging, no action: what the values are, for deciding what to push down)."""
    root = _Node(kind="struct")
    for doc in docs:
        for key, value in doc.items():
            _observe(root.fields.setdefault(key, _Node()), value)
    resolver = _Resolver("", "ignore", quiet=True)
    return {name: resolver.type_of(node, name) for name, node in root.fields.items()}


# -- conversion --------------------------------------------------------------------------------


def _plain_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, sort_keys=False, allow_nan=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value) if not value.is_finite() else json.loads(str(value)) if "E" not in str(value) else str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


class _Mismatch(Exception):
    def __init__(self, path: str, value: Any, typ: pa.DataType):
        super().__init__(path)
        self.path, self.value, self.typ = path, value, typ


_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


class _Converter:
    """Value-by-value conversion of the columns pyarrow refused as a whole."""

    def __init__(self, dataset: str, action: str, json_text: JsonText):
        self.dataset, self.action, self.json_text = dataset, action, json_text

    def column(self, name: str, values: list[Any], typ: pa.DataType) -> pa.Array:
        out = []
        for value in values:
            try:
                out.append(self.value(value, typ, name))
            except _Mismatch as m:
                out.append(self.mismatch(m))
        return pa.array(out, type=typ)

    def mismatch(self, m: _Mismatch) -> None:
        if self.action == "error":
            raise ConnectorError(
                f"dataset '{self.dataset}': field '{m.path}' holds a value of type {_type_name(m.value)} where the "
                f"schema (inferred from a sample, or the pod's column type) has {m.typ}; set unsupported_type_action "
                f"to warn, ignore or string to read such values as NULL, or give the column a type in the pod")
        key = (self.dataset, m.path)
        with _WARNED_LOCK:
            first = key not in _WARNED
            if first and len(_WARNED) < 10_000:
                _WARNED.add(key)
        if first:
            log.warning("dataset '%s': field '%s' holds values of type %s that do not fit %s; reading them as NULL "
                        "(unsupported_type_action=%s)", self.dataset, m.path, _type_name(m.value), m.typ, self.action)
        return None

    def value(self, value: Any, typ: pa.DataType, path: str) -> Any:
        if value is None:
            return None
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            return value if isinstance(value, str) else self.json_text(value)
        if pa.types.is_struct(typ):
            if not isinstance(value, Mapping):
                raise _Mismatch(path, value, typ)
            out = {}
            for f in typ:
                try:
                    out[f.name] = self.value(value.get(f.name), f.type, f"{path}.{f.name}")
                except _Mismatch as m:
                    out[f.name] = self.mismatch(m)
            return out
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            if not isinstance(value, (list, tuple)):
                raise _Mismatch(path, value, typ)
            out_list = []
            for item in value:
                try:
                    out_list.append(self.value(item, typ.value_type, f"{path}[]"))
                except _Mismatch as m:
                    out_list.append(self.mismatch(m))
            return out_list
        if pa.types.is_date(typ) and isinstance(value, dt.datetime):
            # A date stored as a datetime at midnight (BSON has no date type).
            moment = value.astimezone(dt.timezone.utc) if value.tzinfo else value
            if moment.time() != dt.time(0):
                raise _Mismatch(path, value, typ)
            value = moment.date()
        if isinstance(value, bool) and not pa.types.is_boolean(typ):
            raise _Mismatch(path, value, typ)
        try:
            pa.scalar(value, typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
            raise _Mismatch(path, value, typ) from None
        return value


def to_record_batch(docs: Sequence[Mapping[str, Any]], schema: pa.Schema, *, dataset: str,
                    unsupported_type_action: str = "error", json_text: JsonText | None = None) -> pa.RecordBatch:
    """`docs` as one batch of `schema` (rules in the module docstring). `json_text` renders a
    non-text value for a text column (default: JSON, dates ISO, bytes hex)."""
    try:
        return pa.RecordBatch.from_pylist(list(docs), schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        pass
    converter = _Converter(dataset, unsupported_type_action, json_text or _plain_json)
    arrays = []
    for f in schema:
        values = [doc.get(f.name) for doc in docs]
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
            arrays.append(converter.column(f.name, values, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
