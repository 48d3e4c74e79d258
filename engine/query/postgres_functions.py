"""PostgreSQL's own functions a whole query may carry down to PostgreSQL when the federated
engine (DataFusion) cannot plan it: `mode()`, `json_agg`, `make_interval`, `quote_ident`,
LATERAL joins ... over live PostgreSQL tables get PostgreSQL's answer instead of an error.

Only functions on this list go: each reads nothing but its arguments (no other table, catalog,
setting, file, session, lock or sequence) and returns in time bounded by them. `pg_sleep`,
`query_to_xml` (which runs any SQL it is given), `pg_*` catalog and admin functions, `lo_*`,
`dblink*`, `txid_*`, `nextval`, the advisory locks and whatever the list does not name stay
out, as do the functions telling the source's user, database or version, and casts to catalog
types (`'pg_authid'::regclass`)."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

_AGGREGATES = {
    "mode", "percentile_cont", "percentile_disc", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg",
    "array_agg", "string_agg", "bool_and", "bool_or", "every", "bit_and", "bit_or", "bit_xor", "corr", "covar_pop",
    "covar_samp", "regr_avgx", "regr_avgy", "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx",
    "regr_sxy", "regr_syy", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
}
_JSON = {
    "to_json", "to_jsonb", "row_to_json", "array_to_json", "json_build_object", "jsonb_build_object",
    "json_build_array", "jsonb_build_array", "json_object", "jsonb_object", "json_array_length",
    "jsonb_array_length", "json_typeof", "jsonb_typeof", "json_extract_path", "json_extract_path_text",
    "jsonb_extract_path", "jsonb_extract_path_text", "json_strip_nulls", "jsonb_strip_nulls", "jsonb_set",
    "jsonb_insert", "jsonb_pretty", "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query_first",
    "jsonb_path_query_array", "json_array_elements", "jsonb_array_elements", "json_array_elements_text",
    "jsonb_array_elements_text", "json_object_keys", "jsonb_object_keys", "json_each", "jsonb_each", "json_each_text",
    "jsonb_each_text",
}
_TEXT = {
    "quote_ident", "quote_literal", "quote_nullable", "regexp_split_to_array", "regexp_count", "regexp_instr",
    "regexp_substr", "regexp_like", "regexp_match", "regexp_replace", "split_part", "format", "concat", "concat_ws",
    "initcap", "lpad", "rpad", "repeat", "reverse", "left", "right", "strpos", "translate", "btrim", "ltrim", "rtrim",
    "to_hex", "ascii", "chr", "md5", "sha224", "sha256", "sha384", "sha512", "encode", "decode", "normalize",
    "starts_with", "string_to_array", "array_to_string", "octet_length", "bit_length", "char_length", "length",
    "substr", "replace", "lower", "upper",
}
_NUMBERS = {
    "scale", "min_scale", "trim_scale", "width_bucket", "div", "mod", "gcd", "lcm", "factorial", "cbrt",
    "degrees", "radians", "log", "log10", "ln", "exp", "power", "sqrt", "trunc", "round", "ceil", "ceiling",
    "floor", "sign", "abs", "num_nulls", "num_nonnulls", "to_number", "random",
}
_TIMES = {
    "make_interval", "make_date", "make_time", "make_timestamp", "make_timestamptz", "justify_days",
    "justify_hours", "justify_interval", "isfinite", "date_bin", "date_part", "date_trunc", "age", "to_char",
    "to_date", "to_timestamp",
}
_ARRAYS = {
    "array_length", "array_lower", "array_upper", "array_ndims", "array_dims", "array_position",
    "array_positions", "array_remove", "array_replace", "array_append", "array_prepend", "array_cat",
    "cardinality", "trim_array",
}
ALLOWED = frozenset(_AGGREGATES | _JSON | _TEXT | _NUMBERS | _TIMES | _ARRAYS)

# Functions sqlglot knows by type that tell about the source itself.
_SOURCE_FACTS = tuple(getattr(exp, name) for name in (
    "CurrentUser", "CurrentSchema", "CurrentSchemas", "CurrentDatabase", "CurrentVersion", "CurrentCatalog",
    "CurrentRole", "SessionUser") if hasattr(exp, name))
# Keywords PostgreSQL answers with the same facts, which sqlglot reads as column names.
_SOURCE_KEYWORDS = {"user", "current_user", "session_user", "current_role", "current_catalog", "current_schema"}


_CATALOG_TYPES = {"oid", "xid", "xid8", "cid", "tid", "oidvector", "int2vector"}  # and reg*, pg_*


def _catalog_type(name: str) -> bool:
    return name in _CATALOG_TYPES or name.startswith(("reg", "pg_"))


def source_fact(tree: exp.Expression) -> str | None:
    """What in `tree` asks the source about itself (its user, database, schema or version),
    or None: answered by PostgreSQL, it would tell the agent about the server behind the
    dataset, and mean something else than the engines' answer."""
    for node in tree.walk():
        if isinstance(node, _SOURCE_FACTS):
            return type(node).__name__
        if isinstance(node, exp.Column) and not node.table and node.name.lower() in _SOURCE_KEYWORDS:
            return node.name.lower()
    return None


def refused_function(statement: str) -> str | None:
    """The first function of `statement` (PostgreSQL's dialect) that may not go to PostgreSQL
    this way, or None when every one may."""
    try:
        tree = sqlglot.parse_one(statement, read="postgres")
    except sqlglot.errors.ParseError:
        return "a statement sqlglot cannot read back"
    fact = source_fact(tree)
    if fact is not None:
        return fact
    for node in tree.walk():
        if isinstance(node, exp.Anonymous) and node.name.lower() not in ALLOWED:
            return node.name.lower()
        if isinstance(node, exp.DataType) and _catalog_type(node.sql("postgres").lower().replace('"', "")):
            return f"a cast to {node.sql('postgres')}"  # reads the catalog: '...'::regclass names any table
    return None
