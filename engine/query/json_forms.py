"""PostgreSQL's ways of reading JSON (json / jsonb values, which Satchel serves as their text) as
DuckDB's JSON functions, which DuckDB has and the federated engine has too (json_udfs):
`x -> 'k'`, `x ->> 'k'`, `x #> '{a,b}'`, json(b)_typeof, jsonb_array_length, `x @> '{...}'`,
`x ? 'k'`. Used by pg_semantics, for each engine."""

from __future__ import annotations

import json
import re
from typing import Callable

from sqlglot import exp

Rebuild = Callable[[exp.Expression], exp.Expression]  # a node made anew from its parts (pg_semantics._rewrite)

JSON_NODES = (exp.JSONExtract, exp.JSONExtractScalar, exp.JSONBExtract, exp.JSONBExtractScalar, exp.Anonymous,
              exp.ArrayContainsAll, exp.ArrayContainedBy, exp.JSONBContainsTopKey, exp.JSONBContainsAnyTopKeys,
              exp.JSONBContainsAllTopKeys, exp.Cast)  # the nodes json_read may rewrite
_DOUBLE = exp.DataType.build("DOUBLE")


def json_read(node: exp.Expression, operators: bool) -> Rebuild | None:
    """PostgreSQL's ways of reading JSON text as DuckDB's JSON functions: `x #> '{a,b}'` and
    `x #>> '{a,b}'` at the JSON pointer /a/b (DuckDB has neither operator), json(b)_typeof by
    json_type, and (unless the engine has the `operators` -> and ->>, as DuckDB does)
    `x -> 'k'`, `x ->> 'k'` and `x -> 0` by json_extract(_string) at the path `$."k"`, `$[0]`."""
    if (test := _json_containment(node, inline=operators)) is not None:
        return test
    scalar = isinstance(node, (exp.JSONBExtractScalar, exp.JSONExtractScalar))
    name = "json_extract_string" if scalar else "json_extract"
    if isinstance(node, (exp.JSONBExtract, exp.JSONBExtractScalar)) \
            and (pointer := _json_pointer(node.expression)) is not None:
        return lambda n: exp.Anonymous(this=name, expressions=[n.this, exp.Literal.string(pointer or "$")])
    if isinstance(node, exp.Anonymous) and node.name.lower() in ("json_typeof", "jsonb_typeof") \
            and len(node.expressions) == 1:
        return lambda n: _json_typeof(n.expressions[0])  # DuckDB's json_type names DuckDB's types
    if isinstance(node, exp.Anonymous) and node.name.lower() in _SPREAD and len(node.expressions) == 1 \
            and in_select_list(node):
        kind = _SPREAD[node.name.lower()]
        return lambda n: exp.Unnest(expressions=[_listed(kind, n.expressions[0], operators)])
    if not operators and isinstance(node, exp.Cast) and node.to.this in (exp.DataType.Type.JSON, exp.DataType.Type.JSONB):
        return lambda n: exp.Cast(this=n.this, to=exp.DataType.build("VARCHAR"))  # JSON is its text there
    if not operators and isinstance(node, exp.Anonymous) and node.name.lower() == "jsonb_array_length":
        return lambda n: exp.Anonymous(this="json_array_length", expressions=n.expressions)
    if not operators and isinstance(node, (exp.JSONExtract, exp.JSONExtractScalar)) \
            and (path := _duckdb_json_path(node.expression)) is not None:
        return lambda n: _json_extract(name, n.this, path)
    return None


# PostgreSQL's functions that spread a JSON value into rows (in a select list): what they list
_SPREAD = {"json_array_elements": "elements", "jsonb_array_elements": "elements", "json_array_elements_text":
           "elements_text", "jsonb_array_elements_text": "elements_text", "json_object_keys": "keys",
           "jsonb_object_keys": "keys"}


def _listed(kind: str, value: exp.Expression, duckdb: bool) -> exp.Expression:
    """The list of a JSON value's elements (as JSON text, or as text), or of its keys: DuckDB's
    own functions, or the federated engine's (json_udfs: json_elements, json_elements_text, json_keys)."""
    if not duckdb:
        return exp.Anonymous(this="json_keys" if kind == "keys" else f"json_{kind}", expressions=[value])
    if kind == "keys":
        return exp.Anonymous(this="json_keys", expressions=[value])
    name = "json_extract_string" if kind == "elements_text" else "json_extract"
    listed = exp.Anonymous(this=name, expressions=[value, exp.Literal.string("$[*]")])
    return listed if kind == "elements_text" else exp.Cast(this=listed, to=exp.DataType.build("VARCHAR[]", dialect="duckdb"))


def in_select_list(node: exp.Expression) -> bool:
    """Whether `node` is (in) an output column of its SELECT, not in a WHERE, HAVING, JOIN
    condition, ORDER BY or GROUP BY, nor inside a subquery of one."""
    child, parent = node, node.parent
    while parent is not None and not isinstance(parent, (exp.Select, exp.Subquery, exp.Where, exp.Having,
                                                         exp.Join, exp.Order, exp.Group)):
        child, parent = parent, parent.parent
    return isinstance(parent, exp.Select) and child.arg_key == "expressions"


def _json_extract(name: str, value: exp.Expression, path: str) -> exp.Expression:
    """DuckDB's json_extract(_string) of `value` at `path`; `x -> 'a' ->> 'b'` read at once (`$."a"."b"`)."""
    if isinstance(value, exp.Anonymous) and value.name == "json_extract" and value.expressions[1].is_string \
            and value.expressions[1].this.startswith("$") and not path.startswith("$[#"):
        value, path = value.expressions[0], value.expressions[1].this + path[1:]
    return exp.Anonymous(this=name, expressions=[value, exp.Literal.string(path)])


def _duckdb_array_has(value: exp.Expression, element: str) -> exp.Expression:
    """Whether the JSON array `value` has the element whose minified JSON is `element`."""
    elements = exp.Cast(this=exp.Anonymous(this="json_extract", expressions=[value, exp.Literal.string("$[*]")]),
                        to=exp.DataType.build("VARCHAR[]", dialect="duckdb"))
    return exp.Anonymous(this="list_contains", expressions=[elements, exp.Literal.string(element)])


def _json_containment(node: exp.Expression, inline: bool) -> Rebuild | None:
    """PostgreSQL's jsonb containment and key tests over JSON text, worked out from the constant
    side: `h @> '{"a": {"b": 1}}'` (or `'...' <@ h`) when h has each key of the needle with a
    value that contains the needle's (at any depth), each listed scalar among its elements, or
    an equal scalar (an array at the top, also as an element); `h ? 'k'` (`?|`, `?&` of a list)
    when k is a key of h, or a string element. NULL for a NULL h, else true or false. None for
    what cannot be written so: a needle listing objects or arrays, one not constant.
    `inline`: as DuckDB's own expression; else as the call of the federated engine's function
    that runs that expression in one pass (`satchel_jsonb_contains(h, needle)`, `satchel_jsonb_has_key(h, k)`)."""
    if isinstance(node, (exp.ArrayContainsAll, exp.ArrayContainedBy)):
        side, needle = ("this", node.expression) if isinstance(node, exp.ArrayContainsAll) else ("expression", node.this)
        if not (isinstance(needle, exp.Literal) and needle.is_string and _text_like(node.args[side])):
            return None
        try:
            wanted = json.loads(needle.this, parse_constant=_not_json)
        except ValueError:
            return None
        if not _writable(wanted):
            return None
        if inline:
            return lambda n: _containment(n.args[side], wanted)
        return lambda n: exp.Anonymous(this="satchel_jsonb_contains", expressions=[n.args[side], exp.Literal.string(
            json.dumps(wanted, ensure_ascii=False))])
    if isinstance(node, (exp.JSONBContainsTopKey, exp.JSONBContainsAnyTopKeys, exp.JSONBContainsAllTopKeys)):
        keys = node.expression.expressions if isinstance(node.expression, exp.Array) else [node.expression]
        if not _text_like(node.this) or not all(isinstance(k, exp.Literal) and k.is_string for k in keys):
            return None
        each = exp.or_ if isinstance(node, exp.JSONBContainsAnyTopKeys) else exp.and_
        if inline:
            return lambda n: exp.Paren(this=each(*(_key_test(n.this, k.this) for k in keys)))
        return lambda n: exp.Paren(this=each(*(exp.Anonymous(this="satchel_jsonb_has_key", expressions=[
            n.this.copy(), exp.Literal.string(k.this)]) for k in keys)))
    return None


def containment_sql(needle: str) -> str:
    """DuckDB's expression over the column `a` for `a @> needle` (json_udfs.satchel_jsonb_contains)."""
    return _containment(exp.column("a"), json.loads(needle)).sql("duckdb")


def has_key_sql(key: str) -> str:
    """DuckDB's expression over the column `a` for `a ? key` (json_udfs.satchel_jsonb_has_key)."""
    return _key_test(exp.column("a"), key).sql("duckdb")


def _containment(value: exp.Expression, wanted: object) -> exp.Expression:
    return _known(value, _contains(value, wanted))


def _key_test(value: exp.Expression, key: str) -> exp.Expression:
    return _known(value, exp.or_(
        exp.Not(this=exp.Is(this=_json_at(value, _key_path(key)), expression=exp.Null())),  # (a key of an object)
        exp.and_(_json_type_is(value, "$", "ARRAY"), _duckdb_array_has(value.copy(), json.dumps(key, ensure_ascii=False)))))


def _writable(wanted: object) -> bool:
    """Whether containment of `wanted` can be written out: no array of it lists objects or arrays."""
    if isinstance(wanted, dict):
        return all(_writable(v) for v in wanted.values())
    return not isinstance(wanted, list) or not any(isinstance(e, (dict, list)) for e in wanted)


def _contains(root: exp.Expression, wanted: object, path: str = "$") -> exp.Expression:
    """Whether the JSON `root` holds `wanted` at `path`: each key's value read straight at its
    path (`$."a"."b"`: DuckDB reads no key of an array or a scalar, so a path through one is
    NULL), an object's own type tested only when it lists no key."""
    if isinstance(wanted, dict):
        if not wanted:
            return _json_type_is(root, path, "OBJECT")
        return exp.and_(*(_contains(root, v, path + _key_path(k)[1:]) for k, v in wanted.items()))
    value = root.copy() if path == "$" else _json_at(root, path)
    if isinstance(wanted, list):
        return exp.and_(_json_type_is(root, path, "ARRAY"), *(_duckdb_array_has(value.copy(), _minified(e)) for e in wanted))
    equal = _json_scalar_equal(root, path, wanted)
    if path == "$":  # PostgreSQL: an array contains a scalar that is one of its elements
        return exp.Paren(this=exp.or_(equal, exp.and_(_json_type_is(root, path, "ARRAY"),
                                                      _duckdb_array_has(value, _minified(wanted)))))
    return equal


def _json_scalar_equal(root: exp.Expression, path: str, wanted: object) -> exp.Expression:
    """Whether the JSON `root` has the scalar `wanted` at `path`: a CASE, so the text is read as
    a number only when it is one (neither engine need skip the other side of an AND)."""
    text = exp.Anonymous(this="json_extract_string", expressions=[root.copy(), exp.Literal.string(path)])
    if wanted is None:
        return _json_type_is(root, path, "NULL")
    if isinstance(wanted, (bool, str)):
        kind, written = ("BOOLEAN", _minified(wanted)) if isinstance(wanted, bool) else ("VARCHAR", wanted)
        return exp.and_(_json_type_is(root, path, kind), exp.EQ(this=text, expression=exp.Literal.string(written)))
    as_double = exp.EQ(this=exp.Cast(this=text.copy(), to=_DOUBLE.copy()), expression=exp.Literal.number(repr(float(wanted))))
    whole = isinstance(wanted, int)  # an integer exactly, by its text (a DOUBLE holds 15 digits)
    return exp.Case(ifs=[
        exp.If(this=_json_type_is(root, path, *_JSON_INTEGERS),
               true=exp.EQ(this=text, expression=exp.Literal.string(str(wanted))) if whole else as_double.copy()),
        exp.If(this=_json_type_is(root, path, "DOUBLE"), true=as_double)], default=exp.false())


_JSON_INTEGERS = ("BIGINT", "UBIGINT", "HUGEINT")  # json_type's names


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")  # (Python's reader takes NaN and Infinity)


def _json_type_is(root: exp.Expression, path: str, *kinds: str) -> exp.Expression:
    """Whether the JSON at `path` in `root` is of one of DuckDB's json_type `kinds`."""
    kind = exp.Anonymous(this="json_type", expressions=[root.copy(), exp.Literal.string(path)])
    if len(kinds) == 1:
        return exp.EQ(this=kind, expression=exp.Literal.string(kinds[0]))
    return exp.In(this=kind, expressions=[exp.Literal.string(k) for k in kinds])


def _json_at(value: exp.Expression, path: str) -> exp.Expression:
    return exp.Anonymous(this="json_extract", expressions=[value.copy(), exp.Literal.string(path)])


def _key_path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _minified(value: object) -> str:
    """`value` as DuckDB writes a JSON array's element (json_extract(x, '$[*]'))."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _known(held: exp.Expression, test: exp.Expression) -> exp.Expression:
    """`test` of a JSON value: NULL for a NULL one, else true or false (a missing key is false)."""
    return exp.Paren(this=exp.Case(ifs=[exp.If(this=exp.Is(this=held.copy(), expression=exp.Null()), true=exp.Null())],
                                   default=exp.Coalesce(this=test, expressions=[exp.false()])))


_MAY_HOLD_JSON = {exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.JSON, exp.DataType.Type.JSONB,
                  exp.DataType.Type.UNKNOWN}


def _text_like(value: exp.Expression) -> bool:
    """Whether `value` may hold JSON text (not a list: `tags @> ARRAY['x']` is the array operator)."""
    return value.type is None or value.type.this in _MAY_HOLD_JSON


def _duckdb_json_path(path: exp.Expression) -> str | None:
    """DuckDB's JSON path for sqlglot's reading of a `->` / `->>` operand (a key, an index;
    a negative one counts from the end), else None (a column: only the operators read it)."""
    while isinstance(path, exp.Paren) or isinstance(path, exp.Cast) and path.to.this in exp.DataType.INTEGER_TYPES:
        path = path.this  # (a typed literal: CAST(1 AS INT))
    if isinstance(path, exp.Literal) and path.is_int:
        return f"$[{path.this}]"
    if isinstance(path, exp.Neg) and isinstance(path.this, exp.Literal) and path.this.is_int:
        return f"$[#-{path.this.this}]"
    if not isinstance(path, exp.JSONPath):
        return None
    text = "$"
    for part in path.expressions:
        if isinstance(part, exp.JSONPathKey) and isinstance(part.this, str):
            text += _key_path(part.this)[1:]
        elif isinstance(part, exp.JSONPathSubscript) and isinstance(part.this, int):
            text += f"[{part.this}]" if part.this >= 0 else f"[#{part.this}]"
        elif not isinstance(part, exp.JSONPathRoot):
            return None
    return text


def _json_pointer(path: exp.Expression) -> str | None:
    """A PostgreSQL JSON path (`'{a,0}'` or `ARRAY['a', '0']`) of plain literals as a JSON
    pointer (`/a/0`: a key of an object, an index of an array, as PostgreSQL reads it; `{}`, the
    value itself: empty), else None."""
    if isinstance(path, exp.Literal) and path.is_string and re.fullmatch(r"\{[^{}\"\\]*\}", path.this):
        parts = path.this[1:-1].split(",") if path.this != "{}" else []
    elif isinstance(path, exp.Array) and all(isinstance(e, exp.Literal) and e.is_string for e in path.expressions):
        parts = [e.this for e in path.expressions]
    else:
        return None
    return "".join("/" + part.strip().replace("~", "~0").replace("/", "~1") for part in parts)


_JSON_TYPES = {"VARCHAR": "string", "BIGINT": "number", "UBIGINT": "number", "HUGEINT": "number", "DOUBLE": "number"}


def _json_typeof(value: exp.Expression) -> exp.Expression:
    """PostgreSQL's json(b)_typeof (object, array, string, number, boolean, null) from DuckDB's json_type."""
    kind = exp.Anonymous(this="json_type", expressions=[value])
    return exp.Case(this=kind, ifs=[exp.If(this=exp.Literal.string(k), true=exp.Literal.string(v))
                                    for k, v in _JSON_TYPES.items()], default=exp.Lower(this=kind.copy()))
