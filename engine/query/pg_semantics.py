"""One meaning on every route, PostgreSQL's: rewrites of a planned (qualified, typed) query
so DuckDB and DataFusion return the same values with the same types, and the ones PostgreSQL
returns. Forms neither engine reads are written as the plain ones they mean
(`standard_forms`); a text compared with a timestamp as both engines read it (`time_literals`);
then each engine gets its own corrections (`for_duckdb`, `for_datafusion`, `function_results`;
`engine_forms`: what the federated engine alone runs another way, kept out of a statement that
goes down whole to PostgreSQL).
Checked route against route (tests/engine/test_route_equivalence.py) and against PostgreSQL
itself (tests/integration/test_postgres_semantics.py)."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Callable

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, build_scope

from .arrow_cast import arrow_cast, arrow_type_name, interval_of
from .function_forms import (YEAR_SPANS, age, duration_text, group_count, make_interval, null_count, overlay,
                             regexp_match, scaled_interval, timestamp_from_parts, timestamp_precision, width_bucket)
from .intervals import read_interval
from .engine_aggregates import MODE_TYPES, mode_function
from .json_forms import JSON_NODES, Rebuild, in_select_list, json_read
from .patterns import SIMILAR_OPERATORS, pattern_regex
from .sql_policy import BOUND, PUBLIC_DIALECT


def name_projections(tree: exp.Expression) -> None:
    """Give unnamed output columns PostgreSQL's names (count, sum, ?column?), so every engine
    returns the same column names."""
    for select in tree.find_all(exp.Select):
        for i, proj in enumerate(select.expressions):
            if isinstance(proj, (exp.Alias, exp.Column, exp.Star)) or proj.find(exp.Star) and isinstance(proj, exp.Column):
                continue
            select.expressions[i] = exp.alias_(proj, _pg_name(proj), quoted=True)
        select.set("expressions", select.expressions)


def standard_forms(tree: exp.Expression) -> None:
    """PostgreSQL forms neither engine reads, as the plain ones they mean: `FETCH FIRST n ROWS
    ONLY` as LIMIT n (DataFusion has no FETCH), `x BETWEEN SYMMETRIC a AND b` as PostgreSQL
    defines it, `(x BETWEEN a AND b OR x BETWEEN b AND a)` (nor SYMMETRIC), `x LIKE ANY
    (ARRAY['a%', 'b%'])` (or ALL, or ILIKE) over a list written out as the ORs (ANDs) of each
    LIKE, width_bucket, make_interval and num_nulls / num_nonnulls (neither has them) as what
    they compute, `unnest(list) AS x` in FROM with its column named x, as PostgreSQL names
    it, array_agg / string_agg (DISTINCT x) in x's order, and `x SIMILAR TO 'pattern'` as the
    anchored regular expression it means (both engines read SIMILAR TO as a plain regular
    expression: 'apple' SIMILAR TO 'a%' was false)."""
    for between in list(tree.find_all(exp.Between)):
        if between.args.get("symmetric"):
            low, high = between.args["low"], between.args["high"]
            between.replace(exp.Paren(this=exp.or_(
                exp.Between(this=between.this.copy(), low=low.copy(), high=high.copy()),
                exp.Between(this=between.this.copy(), low=high.copy(), high=low.copy()))))
    for fetch in list(tree.find_all(exp.Fetch)):
        options = fetch.args.get("limit_options")
        if options is None or not (options.args.get("with_ties") or options.args.get("percent")):
            fetch.replace(exp.Limit(expression=fetch.args.get("count") or exp.Literal.number(1)))
    for cast in list(tree.find_all(exp.Cast)):
        if cast.to.this == exp.DataType.Type.INTERVAL and isinstance(cast.this, exp.Literal) and cast.this.is_string \
                and (read := read_interval(cast.this.this)) is not None:
            # '1 day 02:00'::interval in the words every engine reads (DataFusion reads no 02:00)
            cast.replace(exp.Interval(this=exp.Literal.string(read.words())))
    for similar in list(tree.find_all(exp.SimilarTo)):
        if isinstance(similar.expression, exp.Literal) and similar.expression.is_string and not similar.args.get("escape"):
            similar.replace(exp.RegexpLike(this=similar.this, expression=exp.Literal.string(
                "^(?:" + pattern_regex(similar.expression.this, SIMILAR_OPERATORS) + ")$")))
    for size in list(tree.find_all(exp.ArraySize)):
        if size.expression is not None and not isinstance(size.parent, exp.Nullif):
            # PostgreSQL's array_length(a, 1) of an empty array is NULL (both engines: 0)
            size.replace(exp.Nullif(this=size.copy(), expression=exp.Literal.number(0)))
    for spread in tree.find_all(exp.Unnest, exp.Lateral):
        alias = spread.args.get("alias")
        one_list = isinstance(spread, exp.Unnest) and len(spread.expressions) == 1 \
            or isinstance(spread.this, exp.Unnest) and len(spread.this.expressions) == 1
        if isinstance(spread.parent, (exp.From, exp.Join)) and one_list and alias is not None and alias.name \
                and not alias.columns:  # `unnest(list) AS x`: PostgreSQL names the one column x too
            alias.set("columns", [exp.to_identifier(alias.name, quoted=alias.this.quoted)])
    for cast in list(tree.find_all(exp.Cast)):  # timestamp(p): rounded to p digits (ignored or truncated)
        if (rounded := timestamp_precision(cast)) is not None:
            cast.replace(exp.Paren(this=rounded))
    for interval in list(tree.find_all(exp.MakeInterval)):  # neither engine has make_interval()
        interval.replace(make_interval(interval))
    for count in list(tree.find_all(exp.Anonymous)):  # nor num_nulls() / num_nonnulls()
        if count.name.lower() in ("num_nulls", "num_nonnulls") and count.expressions:
            count.replace(null_count(count, count.name.lower() == "num_nulls"))
    for bucket in list(tree.find_all(exp.WidthBucket)):
        if bucket.args.get("threshold") is None:
            bucket.replace(width_bucket(*(bucket.args[k] for k in ("this", "min_value", "max_value", "num_buckets"))))
    for listed in list(tree.find_all(exp.ArrayAgg, exp.GroupConcat)):
        if isinstance(listed.this, exp.Distinct) and len(listed.this.expressions) == 1:
            # PostgreSQL lists a DISTINCT aggregate's values in their order (it sorts them to find
            # the duplicates); both engines listed them in their hash table's order
            value = listed.this.expressions[0]
            listed.set("this", exp.Order(this=listed.this, expressions=[exp.Ordered(this=value.copy(), nulls_first=False)]))
    for like in list(tree.find_all(exp.Like, exp.ILike)):
        quantified = like.expression
        listed = quantified.this.unnest() if isinstance(quantified, (exp.Any, exp.All)) else None
        if isinstance(listed, exp.Array) and listed.expressions:
            each = [like.__class__(this=like.this.copy(), expression=pattern, negate=like.args.get("negate"))
                    for pattern in listed.expressions]  # NOT LIKE ALL: every one NOT LIKE
            like.replace(exp.Paren(this=(exp.or_ if isinstance(quantified, exp.Any) else exp.and_)(*each)))


_CLOCKS = {exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ}


def numeric_casts(tree: exp.Expression) -> None:
    """`CAST(x AS NUMERIC)` with no precision: PostgreSQL's keeps every digit; DuckDB's is
    DECIMAL(18,3), which rounded 1.23456 to 1.235, and DataFusion's DECIMAL(38,10). A decimal
    keeps its own type, an integer gets no fraction, anything else ten digits of one."""
    for cast in list(tree.find_all(exp.Cast)):
        if cast.to.this != exp.DataType.Type.DECIMAL or cast.to.expressions:
            continue
        if _is_decimal(cast.this) and cast.this.type.expressions:
            to = cast.this.type.copy()
        else:
            to = exp.DataType.build("DECIMAL(38, 0)" if _is_integer(cast.this) else "DECIMAL(38, 10)")
        cast.set("to", to)
        cast.type = to.copy()


def lengths_fractions_rounding(tree: exp.Expression) -> None:
    """Meanings both engines drop, for every route. `CAST(x AS VARCHAR(n))` keeps n characters
    in PostgreSQL (both engines ignore n). EXTRACT(SECOND | MILLISECOND) of a time is a numeric
    with the fraction in PostgreSQL, `59.999999` and `59999.999`; both engines truncated it.
    round(float) goes half to even (round(2.5::float8) is 2; both engines gave 3). EXTRACT is a
    numeric in PostgreSQL, so `EXTRACT(EPOCH FROM b - a) / 3600` keeps its fraction (both engines
    divided integers: -1330 for -1330.5)."""
    for div in list(tree.find_all(exp.Div)):
        if div.args.get("typed") and any(_extract_arithmetic(x) for x in (div.this, div.expression)):
            for side in ("this", "expression"):
                operand = exp.Cast(this=div.args[side], to=_DOUBLE.copy())
                operand.type = _DOUBLE.copy()
                div.set(side, operand)
            div.set("typed", False)
            div.type = _DOUBLE.copy()
    for cast in list(tree.find_all(exp.Cast)):
        length = cast.to.expressions
        if cast.to.this == _T.VARCHAR and len(length) == 1 and isinstance(length[0].this, exp.Literal):
            text = exp.DataType.build("VARCHAR")
            cut = exp.Left(this=exp.Cast(this=cast.this, to=text.copy()), expression=length[0].this.copy())
            cut.type = text
            cast.replace(cut)
    for node in list(tree.find_all(exp.Round)):
        if node.args.get("decimals") is None and _float_in_postgres(node.this):
            even = _half_to_even(node.this)
            even.type = _DOUBLE.copy()
            node.replace(even)
    for extract in list(tree.find_all(exp.Extract)):
        scale = _SUB_SECOND_PARTS.get(extract.this.name.upper())
        if scale is None or _clock_kind(extract.expression) not in _CLOCKS | {_T.DATE, _T.TIME}:
            continue
        micros = exp.Extract(this=exp.var("MICROSECOND"), expression=extract.expression)
        micros.type = _BIGINT.copy()
        as_double = exp.Cast(this=micros, to=_DOUBLE.copy())
        divided = exp.Div(this=as_double, expression=exp.Literal.number(10 ** scale))
        as_double.type, divided.type = _DOUBLE.copy(), _DOUBLE.copy()
        to = exp.DataType.build(f"DECIMAL(8, {scale})")
        part = exp.Cast(this=divided, to=to)
        part.type = to.copy()
        extract.replace(part)


_SUB_SECOND_PARTS = {"SECOND": 6, "SECONDS": 6, "S": 6, "MILLISECOND": 3, "MILLISECONDS": 3, "MS": 3}


def time_literals(tree: exp.Expression) -> dict[str, bool]:
    """Timestamps written as PostgreSQL reads them, in the one form both engines read: DataFusion
    reads no time without seconds (`'2024-06-01 10:00'`), DuckDB no `+02` or ` UTC` zone. A text
    cast to a timestamp, or compared with one, is rewritten as `YYYY-MM-DD HH:MM:SS[.ffffff]`,
    in UTC and saying so (`+00:00`) for a timestamp with time zone; a zone given for a TIMESTAMP is ignored, as
    PostgreSQL ignores it. Texts Python's ISO 8601 reader cannot read are left to the engine
    (returned, with whether their timestamp has a zone)."""
    unread: dict[str, bool] = {}
    for node in list(tree.find_all(exp.Literal)):
        if not node.is_string:
            continue
        parent, kind = node.parent, None
        if isinstance(parent, exp.Cast) and parent.to.this in _CLOCKS:
            kind = parent.to.this
        elif isinstance(parent, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In)):
            # what it is compared with: the other operand (either side), or a BETWEEN's or IN's value
            other = parent.expression if node is parent.this and isinstance(parent, exp.Binary) else \
                parent.this if node is not parent.this else None
            kind = other.type.this if other is not None and other.type is not None else None
        if kind in _CLOCKS:
            written = timestamp_text(node.this, kind == exp.DataType.Type.TIMESTAMPTZ)
            if written is None:
                unread[node.this] = kind == exp.DataType.Type.TIMESTAMPTZ
            elif written != node.this:
                node.replace(exp.Literal.string(written))
    return unread


def timestamp_text(text: str, zoned: bool) -> str | None:
    """`text`, a timestamp as PostgreSQL reads it, as both engines read it; None when it is not
    one Python's ISO 8601 reader reads."""
    cleaned = re.sub(r"(?i)\s*(utc|gmt|z)$", "+00:00", text.strip())
    cleaned = re.sub(r"^(\d{4})/(\d{1,2})/(\d{1,2})", lambda m: f"{m[1]}-{int(m[2]):02d}-{int(m[3]):02d}", cleaned)
    try:
        value = dt.datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    if zoned:  # in UTC, saying so (a naive text would be read in the session's zone: UTC too)
        return (value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat(sep=" ")
    return value.replace(tzinfo=None).isoformat(sep=" ")


def _pg_name(node: exp.Expression) -> str:
    if "pg_name" in node.meta:  # a call written as other expressions (to_char)
        return node.meta["pg_name"]
    if isinstance(node, exp.Cast):
        inner = node.this
        return inner.name if isinstance(inner, exp.Column) else node.to.sql(PUBLIC_DIALECT).lower()
    while isinstance(node, (exp.Window, exp.WithinGroup, exp.Filter)):  # named for their function
        node = node.this
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Func):
        # the function as PostgreSQL spells it (to_char, generate_series, string_agg), not the
        # name of sqlglot's class for it (time_to_str, exploding_generate_series, group_concat)
        name = node.sql_name().lower()
        spelled = _CALLED.match(node.sql(PUBLIC_DIALECT))
        return spelled.group(1).lower() if spelled and name not in _OWN_NAMES else name
    return "?column?"


_CALLED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(")
_OWN_NAMES = {"median", "variance"}  # spelled as another function (percentile_cont, var_samp) but named so


# -- one meaning on every route -----------------------------------------------------------------
# DuckDB and DataFusion disagree on a few result types; the typed tree is nudged so both return
# the same values with the same types (DuckDB's, the accelerator most queries run in).

_T = exp.DataType.Type
_DOUBLE = exp.DataType.build("DOUBLE")
_BIGINT = exp.DataType.build("BIGINT")
# EXTRACT parts DuckDB returns as BIGINT (DataFusion: INT); epoch and sub-second parts differ.
_INTEGER_PARTS = {"YEAR", "YEARS", "Y", "YYYY", "QUARTER", "MONTH", "MONTHS", "MON", "WEEK", "WEEKS", "W",
                  "DAY", "DAYS", "D", "DOW", "DAYOFWEEK", "ISODOW", "DOY", "DAYOFYEAR", "HOUR", "HOURS", "H",
                  "MINUTE", "MINUTES", "M", "DECADE", "CENTURY", "MILLENNIUM", "ISOYEAR"}


def _is_decimal(node: exp.Expression) -> bool:
    return node.type is not None and node.type.this == exp.DataType.Type.DECIMAL


def _is_integer(node: exp.Expression) -> bool:
    return node.type is not None and node.type.this in exp.DataType.INTEGER_TYPES


_INT_RANK = {exp.DataType.Type.TINYINT: 1, exp.DataType.Type.SMALLINT: 1, exp.DataType.Type.INT: 2}


def _wider_integer(left: exp.Expression, right: exp.Expression) -> exp.DataType:
    """PostgreSQL's result type of integer arithmetic: the wider operand (smallint, int, bigint)."""
    rank = max(_int_rank(left), _int_rank(right))
    return exp.DataType.build({1: "SMALLINT", 2: "INT", 3: "BIGINT"}[rank])


def _int_rank(node: exp.Expression) -> int:
    """1 smallint, 2 int, 3 bigint; an integer literal past INT's range is a BIGINT, and so is
    arithmetic with one (sqlglot types every integer literal, and their arithmetic, INT)."""
    pending = [(node, False)]  # bottom-up, without recursion (a chain may be a thousand steps long)
    while pending:
        current, children_done = pending.pop()
        if current.meta.get(_RANK) is not None:
            continue
        inner = current.unnest()
        while isinstance(inner, exp.Neg):
            inner = inner.this
        if isinstance(inner, _INT_ARITHMETIC) and not children_done:
            pending += [(current, True), (inner.this, False), (inner.expression, False)]
            continue
        if isinstance(inner, _INT_ARITHMETIC):
            rank = max(inner.this.meta[_RANK], inner.expression.meta[_RANK])
        elif isinstance(inner, exp.Literal) and not inner.is_string and inner.this.isdigit():
            rank = 3 if int(inner.this) > 2**31 - 1 else 2
        else:
            rank = _INT_RANK.get(current.type.this, 3) if current.type is not None else 3
        current.meta[_RANK] = rank
    return node.meta[_RANK]


_RANK = "satchel_int_rank"  # meta: _int_rank's answer for a node
_INT_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)


_LITERAL_CONTEXTS = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.Alias, exp.Select, exp.If, exp.Case,
                     exp.Coalesce, exp.Paren, exp.Typeof, exp.Abs, exp.Greatest, exp.Least, exp.Nullif, exp.Round,
                     exp.Ceil, exp.Floor, exp.Trunc, exp.Sign)
# DuckDB's typeof() names for DataFusion's arrow_typeof(), after the public types.
_TYPE_NAMES = {"Int8": "TINYINT", "Int16": "SMALLINT", "Int32": "INTEGER", "Int64": "BIGINT", "UInt8": "SMALLINT",
               "UInt16": "INTEGER", "UInt32": "BIGINT", "UInt64": "BIGINT", "Float32": "FLOAT", "Float64": "DOUBLE",
               "Utf8": "VARCHAR", "Utf8View": "VARCHAR", "LargeUtf8": "VARCHAR", "Boolean": "BOOLEAN",
               "Date32": "DATE", "Binary": "BLOB", "BinaryView": "BLOB", "LargeBinary": "BLOB", "Null": '"NULL"'}


def type_literals(tree: exp.Expression) -> None:
    """Numeric literals typed as DuckDB types them where they decide a value's type (arithmetic,
    outputs, CASE): an integer is INT (BIGINT past its range; DataFusion: always Int64), `1.50`
    DECIMAL(3, 2) (DataFusion: DOUBLE), so `quantity + 1` is INT on every route."""
    for lit in list(tree.find_all(exp.Literal)):
        if lit.is_string or not isinstance(lit.parent, _LITERAL_CONTEXTS) \
                or lit.arg_key == "decimals" or isinstance(lit.parent, exp.Neg) and lit.parent.arg_key == "decimals" \
                or isinstance(lit.parent, exp.Neg) and not isinstance(lit.parent.parent, _LITERAL_CONTEXTS):
            continue
        whole, dot, fraction = lit.this.partition(".")
        if not (whole or fraction) or not (whole + fraction).isdigit():
            continue  # an exponent: DOUBLE everywhere
        if dot and len(whole) + len(fraction) <= 38:  # DuckDB's DECIMAL(digits written, scale)
            to = exp.DataType.build(f"DECIMAL({max(1, len(whole) + len(fraction))}, {len(fraction)})")
        elif not dot and int(whole) <= 2**31 - 1:
            to = exp.DataType.build("INT")
        else:
            continue
        lit.replace(exp.Cast(this=lit.copy(), to=to))


def _is_decimal_value(node: exp.Expression) -> bool:
    """Typed DECIMAL, or a literal such as 2.5 (DECIMAL in DuckDB and PostgreSQL)."""
    return _is_decimal(node) or isinstance(node, exp.Literal) and not node.is_string and "." in node.this \
        or isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.DECIMAL


def _wrap(node: exp.Expression, outer: exp.Expression) -> None:
    """Put `outer` where `node` is, with `node` (annotations kept) as its `this`."""
    node.replace(outer)
    outer.set("this", node)


def function_results(tree: exp.Expression) -> None:
    """Functions whose DataFusion result differs from DuckDB's, rewritten to DuckDB's."""
    for node in list(tree.find_all(exp.Length, exp.StrPosition, exp.Sign, exp.Log, exp.Ceil, exp.Floor, exp.Trunc,
                                   exp.TimeToStr, exp.StrToTime, exp.StrToDate, exp.Add, exp.Sub, exp.Anonymous,
                                   exp.Cast)):
        if isinstance(node, (exp.Length, exp.StrPosition)) or isinstance(node, exp.Anonymous) \
                and node.name.lower() in ("octet_length", "cardinality"):  # DataFusion: Int32, UInt64
            _wrap(node, exp.Cast(to=_BIGINT.copy()))
        elif isinstance(node, exp.Sign):  # DataFusion has signum(), a DOUBLE
            node.replace(exp.Anonymous(this="arrow_cast", expressions=[
                exp.Anonymous(this="signum", expressions=[node.this]), exp.Literal.string("Int8")]))
        elif isinstance(node, exp.Log) and node.expression is not None and node.this.is_number \
                and node.this.to_py() == 10:  # log(10, 1000) is 2.9999999999999996 in DataFusion
            node.replace(exp.Anonymous(this="log10", expressions=[exp.Cast(this=node.expression, to=_DOUBLE.copy())]))
        elif isinstance(node, (exp.Ceil, exp.Floor, exp.Trunc)) and _is_decimal_value(node.this) \
                and not node.args.get("decimals") and not node.this.find(exp.Div):
            # DataFusion keeps the argument's scale (a quotient of decimals is a DOUBLE, as on DuckDB)
            _wrap(node, exp.Cast(to=exp.DataType.build("DECIMAL(38, 0)")))
        elif isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.TIMESTAMPTZ:
            # DataFusion's TIMESTAMPTZ is a timestamp with no zone (here: after the scans took their filters)
            node.replace(arrow_cast(node.this, _T.TIMESTAMPTZ))
        elif isinstance(node, (exp.StrToTime, exp.StrToDate)) and node.args.get("format") is not None:
            # to_timestamp / to_date(text, format): the format is held as strftime's, which DataFusion's
            # to_timestamp_micros reads (its to_date and to_timestamp would be PostgreSQL's in the plan's text)
            parsed = exp.Anonymous(this="to_timestamp_micros", expressions=[node.this, node.args["format"]])
            node.replace(arrow_cast(parsed, _T.DATE) if isinstance(node, exp.StrToDate) else parsed)
        elif isinstance(node, exp.TimeToStr):  # the format is held as strftime's, which DataFusion's to_char takes
            # (as date_format, its other name there: a TO_CHAR in the plan's text would read back as
            # PostgreSQL's to_char, whose format is another language)
            node.replace(exp.Anonymous(this="date_format", expressions=[node.this, node.args["format"]]))
        elif isinstance(node, (exp.Add, exp.Sub)) and isinstance(node.expression, exp.Interval) \
                and node.this.type is not None and node.this.type.this == exp.DataType.Type.DATE:
            node.set("this", exp.Cast(this=node.this, to=exp.DataType.build("TIMESTAMP")))  # date + interval


def typeof_as_duckdb(value: exp.Expression) -> exp.Expression:
    """DuckDB's typeof(value) on DataFusion: arrow_typeof's names mapped to DuckDB's."""
    arrow = exp.Anonymous(this="arrow_typeof", expressions=[value])
    ifs = [exp.If(this=exp.EQ(this=arrow.copy(), expression=exp.Literal.string(k)), true=exp.Literal.string(v))
           for k, v in _TYPE_NAMES.items()]
    ifs += [exp.If(this=exp.Like(this=arrow.copy(), expression=exp.Literal.string(pattern)), true=exp.Literal.string(name))
            for pattern, name in (("Timestamp(%, %", "TIMESTAMP WITH TIME ZONE"), ("Timestamp(%", "TIMESTAMP"),
                                  ("Time%", "TIME"), ("Interval%", "INTERVAL"))]
    ifs.append(exp.If(this=exp.Like(this=arrow.copy(), expression=exp.Literal.string("Decimal%")),
                      true=exp.Anonymous(this="regexp_replace", expressions=[
                          arrow.copy(), exp.Literal.string(r"^Decimal(128|256)\((\d+), (\d+)\)$"),
                          exp.Literal.string(r"DECIMAL(\2,\3)")])))
    return exp.Case(ifs=ifs, default=arrow)


def for_datafusion(tree: exp.Expression) -> exp.Expression:
    """DataFusion keeps decimals where DuckDB (and the answer agents expect) uses DOUBLE:
    AVG(decimal) and decimal division would round to a fixed scale. EXTRACT returns BIGINT."""
    def fix(node: exp.Expression) -> Rebuild | None:
        if isinstance(node, exp.CurrentTimestamp):  # DataFusion's now() is a naive nanosecond timestamp
            return lambda n: arrow_cast(exp.Anonymous(this="now", expressions=[]), _T.TIMESTAMPTZ)
        if isinstance(node, exp.Div) and node.args.get("typed") and _is_integer(node.this) \
                and _is_integer(node.expression):
            to = _wider_integer(node.this, node.expression)
            return lambda n: exp.Cast(this=n, to=to)  # as on DuckDB
        if isinstance(node, exp.Anonymous) and node.name.lower() in _SAME_AS:
            node.set("this", _SAME_AS[node.name.lower()])
        if (listed := _quantified_list(node)) is not None and _quantifier(node) == "ANY" \
                and not (isinstance(listed, exp.Array) and all(isinstance(e, exp.Literal) for e in listed.expressions)):
            # DataFusion's x op ANY (list) is false where a NULL in the list leaves it undecided
            return lambda n: _any_of_list(n, listed)
        if (to := _narrow_arithmetic(node)) is not None:
            # DataFusion wraps around (2147483647 + 1 gave -2147483648); PostgreSQL and DuckDB fail:
            # computed as BIGINT, the cast back fails when the value does not fit. A chain (a + b + c)
            # is cast back once, at its end (one cast per step nested 900 steps past Python's stack)
            last = node.parent is None or _narrow_arithmetic(node.parent) is None
            return lambda n: _in_bigint(n, to if last else None)
        if isinstance(node, exp.Format) and _plain_format(node) is not None:
            return _plain_format
        if isinstance(node, exp.UnixToTime) and not node.args.get("scale") and not node.args.get("zone"):
            # PostgreSQL's (and DuckDB's) to_timestamp(seconds) is a UTC timestamp; DataFusion's has no zone
            return lambda n: arrow_cast(exp.Anonymous(this="to_timestamp", expressions=[n.this]), _T.TIMESTAMPTZ)
        if isinstance(node, exp.AtTimeZone):
            if _clock_kind(node.this) == exp.DataType.Type.TIMESTAMPTZ:
                # PostgreSQL's (and DuckDB's) is the wall-clock time there, a TIMESTAMP; DataFusion's
                # the same instant with that zone attached
                return lambda n: arrow_cast(exp.Anonymous(this="to_local_time", expressions=[n]), _T.TIMESTAMP)
            if _clock_kind(node.this) == exp.DataType.Type.TIMESTAMP:  # a wall-clock time there: an instant
                return lambda n: _zoned_instant(n.this, n.args["zone"])
        if isinstance(node, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)) \
                and (_is_duration(node.this) or _is_duration(node.expression)):
            return lambda n: n.__class__(this=_compared_span(n.this), expression=_compared_span(n.expression))
        if isinstance(node, exp.Extract) and _is_duration(node.expression):
            # a field of the INTERVAL PostgreSQL has there (hour of 4 days is 0), not of the whole duration (96)
            whole = node.this.name.upper() in _INTEGER_PARTS

            def field_of_interval(n: exp.Expression) -> exp.Expression:
                field = exp.Extract(this=n.this, expression=_as_interval(n.expression))
                return exp.Cast(this=field, to=_BIGINT.copy()) if whole else field
            return field_of_interval
        if isinstance(node, exp.TimestampFromParts) and node.args.get("sec") is not None:
            return timestamp_from_parts  # DataFusion has no make_timestamp()
        if isinstance(node, exp.Extract) and node.this.name.upper() in YEAR_SPANS \
                and _clock_kind(node.expression) in _CLOCKS | {_T.DATE}:
            span, offset = YEAR_SPANS[node.this.name.upper()]  # parts of the year DataFusion does not know
            return lambda n: exp.Div(this=exp.Paren(this=exp.Add(
                this=exp.Cast(this=exp.Extract(this=exp.var("YEAR"), expression=n.expression), to=_BIGINT.copy()),
                expression=exp.Literal.number(offset))), expression=exp.Literal.number(span), typed=True)
        if isinstance(node, exp.Anonymous) and node.name.lower() == "age" and len(node.expressions) in (1, 2):
            return age  # DataFusion has no age()
        if isinstance(node, (exp.Mul, exp.Div)) and scaled_interval(node) is not None:
            return scaled_interval  # DataFusion has no INTERVAL * number ("Cannot get result type")
        if isinstance(node, exp.Between) and _is_duration(node.this):
            return lambda n: exp.Between(this=_compared_span(n.this), low=_compared_span(n.args["low"]),
                                         high=_compared_span(n.args["high"]))
        if (_is_duration(node) or isinstance(node, (exp.Max, exp.Min)) and _is_duration(node.this)) \
                and isinstance(node.parent, exp.Alias) and isinstance(node.parent.parent, exp.Select):
            return _as_interval  # an output column: PostgreSQL's (and DuckDB's) INTERVAL, not a duration
        if _regex_substring(node):  # PostgreSQL's substring(text FROM pattern): the match, or its first group
            return lambda n: exp.Anonymous(this="array_element", expressions=[
                exp.Anonymous(this="regexp_match", expressions=[n.this, n.args["start"]]), exp.Literal.number(1)])
        if isinstance(node, exp.Hex):  # PostgreSQL's to_hex (DataFusion has it under that name)
            return lambda n: exp.Anonymous(this="to_hex", expressions=[n.this])
        if isinstance(node, exp.IntDiv):  # PostgreSQL's div(): the quotient truncated towards zero
            whole = _is_integer(node.this) and _is_integer(node.expression)
            return lambda n: exp.Div(this=n.this, expression=n.expression, typed=True) if whole else \
                exp.Anonymous(this="trunc", expressions=[exp.Div(this=exp.Cast(this=n.this, to=_DOUBLE.copy()),
                                                                 expression=exp.Cast(this=n.expression, to=_DOUBLE.copy()))])
        if isinstance(node, exp.Collate) and node.expression.name.upper() in _BYTE_ORDER:
            return lambda n: n.this  # DataFusion compares strings byte by byte already; it reads no COLLATE
        if isinstance(node, exp.Median) and isinstance(node.parent, exp.Window):
            # PostgreSQL's spelling (percentile_cont ... WITHIN GROUP) is no window function there
            return lambda n: exp.Anonymous(this="median", expressions=[n.this])
        if isinstance(node, exp.Cast) and node.to.this in _TEXT_TYPES and _is_duration(node.this):
            return lambda n: duration_text(_micros(n.this))  # PostgreSQL's `14 days 23:30:00` (DataFusion: `... mins ... secs`)
        if _exact_average(node):
            return exact_average
        if isinstance(node, exp.Avg) and not _is_duration(node.this) and not _is_integer(node.this) \
                and not (node.this.type is not None and node.this.type.this in _TIME_TYPES) and not _summable(node):
            # a DOUBLE, as on DuckDB: of a decimal, or of a CASE of 1.0 and 0 (a decimal once its literals are typed)
            held = node.this.expressions[0] if isinstance(node.this, exp.Distinct) else node.this
            held.replace(exp.Cast(this=held.copy(), to=_DOUBLE.copy()))
        elif isinstance(node, exp.Div) and any(_is_decimal(x) or x.type is not None and x.type.this in _FLOAT_TYPES
                                               for x in (node.this, node.expression)):
            # (a float operand too: it may hold a literal like 1.0, a decimal once typed below)
            node.set("this", exp.Cast(this=node.this, to=_DOUBLE.copy()))
            node.set("expression", exp.Cast(this=node.expression, to=_DOUBLE.copy()))
        elif isinstance(node, exp.Extract) and node.this.name.upper() in _INTEGER_PARTS:
            return lambda n: exp.Cast(this=n, to=_BIGINT.copy())
        elif isinstance(node, exp.Cast) and node.to.this in exp.DataType.INTEGER_TYPES:
            node.set("this", _rounded_for_int_cast(node.this))
        elif isinstance(node, exp.Cast) and node.to.this in _TEXT_TYPES and node.this.type is not None \
                and node.this.type.this in _CLOCK_TEXT:
            kind = node.this.type.this
            return lambda n: _clock_text(n.this, kind)
        return None

    for cte in tree.find_all(exp.CTE):  # [NOT] MATERIALIZED is a hint DataFusion cannot parse
        cte.set("materialized", None)
    _quantified_subqueries(tree)
    _row_in_subqueries(tree)
    _scalar_subqueries_may_be_null(tree)
    _lateral_unnests(tree)
    for within in list(tree.find_all(exp.WithinGroup)):
        if isinstance(within.this, exp.PercentileDisc) and isinstance(within.this.this, exp.Literal) and within.this.this.is_number \
                and len(within.expression.expressions) == 1 and not isinstance(within.parent, exp.Window):
            _percentile_disc(within)
    tree = _rewrite(tree, fix)
    for node in list(tree.find_all(exp.Round)):
        if node.args.get("decimals") is not None and node.this.type is not None and node.this.type.this in _FLOAT_TYPES \
                and not any(isinstance(x, exp.Literal) and _is_decimal_value(x)  # 2.5 is DECIMAL, unless cast
                            for x in node.this.walk(prune=lambda n: isinstance(n, exp.Cast))):
            # a double stays a double, as on DuckDB (PostgreSQL's spelling casts it to numeric first)
            node.replace(exp.Anonymous(this="round", expressions=[node.this, node.args["decimals"]]))
    return tree


def _precision_scale(node: exp.Expression) -> tuple[int, int] | None:
    """A DECIMAL's precision and scale, when typed with both."""
    if not _is_decimal(node) or len(node.type.expressions) != 2:
        return None
    params = [p.this for p in node.type.expressions]
    return tuple(int(p.this) for p in params) if all(isinstance(p, exp.Literal) and p.is_int for p in params) else None


def _summable(avg: exp.Avg) -> bool:
    """An AVG of a decimal whose sum, times 10^scale, fits DataFusion's DECIMAL(38) (its sum has
    10 more digits than the values)."""
    typed = _precision_scale(avg.this)
    return typed is not None and sum(typed) <= 28


def _exact_average(node: exp.Expression) -> bool:
    """Whether `node` is an AVG of a summable decimal, alone or under FILTER / OVER (the outermost
    of those: the whole is rebuilt)."""
    if isinstance(node.parent, (exp.Filter, exp.Window)) and node.parent.this is node:
        return False
    return isinstance(avg := _innermost(node), exp.Avg) and _summable(avg)


def _innermost(node: exp.Expression) -> exp.Expression:
    """The aggregate under FILTER / OVER."""
    while isinstance(node, (exp.Filter, exp.Window)):
        node = node.this
    return node


def _with_aggregate(outer: exp.Expression, make: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
    """A copy of `outer` (an aggregate, maybe under FILTER / OVER) with `make(argument)` for its aggregate."""
    made = outer.copy()
    inner = _innermost(made)
    if inner is made:
        return make(inner.this)
    inner.replace(make(inner.this))
    return made


def exact_average(outer: exp.Expression) -> exp.Expression:
    """DuckDB's average of a decimal, for DataFusion: the exact sum, as the integer of its unscaled
    digits, over the count times 10^scale, one DOUBLE division (rounded once, as DuckDB and
    PostgreSQL round it), with the AVG's FILTER and OVER on both. DataFusion's own AVG keeps
    4 more decimals; its AVG of each value cast to DOUBLE took twice the time over 6M rows, and
    its last digits depended on the order the values were added in."""
    factor = 10 ** _precision_scale(_innermost(outer).this)[1]
    total = _with_aggregate(outer, lambda x: exp.Sum(this=x))
    digits = exp.Cast(this=exp.Mul(this=total, expression=exp.Cast(this=exp.Literal.number(factor), to=_BIGINT.copy())),
                      to=exp.DataType.build("DECIMAL(38, 0)"))
    count = exp.Mul(this=exp.Cast(this=_with_aggregate(outer, lambda x: exp.Count(this=x)), to=_DOUBLE.copy()),
                    expression=exp.Cast(this=exp.Literal.number(factor), to=_DOUBLE.copy()))
    return exp.Paren(this=exp.Div(this=exp.Cast(this=digits, to=_DOUBLE.copy()), expression=exp.Paren(this=count)))


def average_of(node: exp.Expression) -> exp.Expression | None:
    """The AVG of a decimal (with its FILTER / OVER) that `node` is `exact_average` of, else None:
    a source that averages exactly itself is sent the AVG."""
    if not isinstance(node, exp.Paren) or not isinstance(node.this, exp.Div):
        return None
    total = node.this.this.find(exp.Sum)  # the dividend holds the SUM
    if total is None:
        return None
    outer = total
    while isinstance(outer.parent, (exp.Filter, exp.Window)) and outer.parent.this is outer:
        outer = outer.parent
    average = _with_aggregate(outer, lambda x: exp.Avg(this=x))
    same = _summable(_innermost(average)) and exact_average(average).sql(PUBLIC_DIALECT) == node.sql(PUBLIC_DIALECT)
    return average if same else None


def _lateral_unnests(tree: exp.Expression) -> None:
    """`FROM t a CROSS JOIN LATERAL unnest(a.list) AS u(x)` (or `, unnest(a.list) AS u(x)`), how
    PostgreSQL spreads a list into rows, for DataFusion, which has no unnest in FROM but has it
    in a select list: `FROM (SELECT a.*, unnest(a.list) AS x FROM t a) a`, and `u.x` read as
    `a.x`. (A list that is empty or NULL gives no row, as in PostgreSQL.)"""
    for select in list(tree.find_all(exp.Select)):
        for join in list(select.args.get("joins") or []):
            spread = join.this.this if isinstance(join.this, exp.Lateral) else join.this
            alias = join.this.args.get("alias") if isinstance(join.this, exp.Lateral) else spread.args.get("alias")
            if not isinstance(spread, exp.Unnest) or alias is None or join.args.get("on") or join.args.get("using") \
                    or spread.args.get("offset") or len(spread.expressions) != 1 or len(alias.columns) > 1:
                continue
            listed = spread.expressions[0]
            sources = [select.args["from_"].this] + [j.this for j in select.args.get("joins") or []] \
                if select.args.get("from_") else []
            table = next((t for t in sources if isinstance(t, exp.Table) and isinstance(listed, exp.Column)
                          and listed.table and t.alias_or_name == listed.table), None)
            if table is None:
                continue
            name = alias.columns[0].name if alias.columns else alias.name
            spread_rows = exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier(listed.table, quoted=True)),
                                     exp.alias_(exp.Unnest(expressions=[listed.copy()]), name, quoted=True)).from_(table.copy())
            table.replace(exp.Subquery(this=spread_rows, alias=exp.TableAlias(this=exp.to_identifier(listed.table, quoted=True))))
            join.pop()
            for column in select.find_all(exp.Column):
                if column.table == alias.name and column.name == name:
                    column.set("table", exp.to_identifier(listed.table, quoted=True))


_ANY_BY = {exp.LT: exp.Max, exp.LTE: exp.Max, exp.GT: exp.Min, exp.GTE: exp.Min}  # x < ANY (S): x < max(S)
_ALL_BY = {exp.LT: exp.Min, exp.LTE: exp.Min, exp.GT: exp.Max, exp.GTE: exp.Max}  # x < ALL (S): x < min(S)


def _quantified_subqueries(tree: exp.Expression) -> None:
    """`x op ANY|ALL (SELECT y ...)` for DataFusion, whose own gave wrong rows (`a > ALL (...)`
    matched nothing, `q = ANY (...)` with the outer table's alias matched everything): `= ANY`
    as IN, `<> ALL` as NOT IN, the others from the subquery's count, non-null count, min and
    max, with PostgreSQL's NULLs (no row: ANY false, ALL true; undecided by the non-null
    values while a NULL is there: NULL)."""
    for node in list(tree.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
        quantifier = node.expression
        query = quantifier.this.unnest() if isinstance(quantifier, (exp.Any, exp.All)) else None
        if not isinstance(query, exp.Select) or len(query.expressions) != 1:
            continue
        value, every = node.this, isinstance(quantifier, exp.All)
        if isinstance(node, exp.EQ) and not every or isinstance(node, exp.NEQ) and every:
            listed = exp.In(this=value, query=exp.Subquery(this=query))
            node.replace(exp.Paren(this=exp.not_(listed) if every else listed))
            continue

        def of(fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
            return exp.Subquery(this=_aggregated(query, fn))

        if isinstance(node, (exp.EQ, exp.NEQ)):  # = ALL: equal to every one; <> ANY: not to some one
            low, high = of(lambda v: exp.Min(this=v)), of(lambda v: exp.Max(this=v))
            if every:
                decisive = exp.and_(exp.EQ(this=value.copy(), expression=low), exp.EQ(this=value.copy(), expression=high))
            else:
                decisive = exp.or_(exp.NEQ(this=value.copy(), expression=low), exp.NEQ(this=value.copy(), expression=high))
        else:
            bound = (_ALL_BY if every else _ANY_BY)[type(node)]
            decisive = node.__class__(this=value.copy(), expression=of(lambda v: bound(this=v)))
        rows = of(lambda v: exp.Count(this=exp.Star()))
        known = of(lambda v: exp.Count(this=v))
        undecided = exp.or_(exp.Is(this=value.copy(), expression=exp.Null()), exp.LT(this=known, expression=rows.copy()))
        empty = exp.EQ(this=rows, expression=exp.Literal.number(0))
        node.replace(exp.Paren(this=exp.Case(ifs=[
            exp.If(this=empty, true=exp.Boolean(this=every)),
            exp.If(this=exp.not_(decisive) if every else decisive, true=exp.Boolean(this=not every)),
            exp.If(this=undecided, true=exp.Null())], default=exp.Boolean(this=every))))


def _row_in_subqueries(tree: exp.Expression) -> None:
    """`(a, b) IN (SELECT x, y ...)` for DataFusion ("Too many columns! The subquery should only
    return one column"), where it stands in a WHERE as a condition of its own: EXISTS of
    a row of the subquery equal on every column, which keeps the same rows (a NULL on either side
    matches nothing either way). NOT IN of rows, whose NULLs differ, stays an error."""
    for node in list(tree.find_all(exp.In)):
        query = node.args.get("query")
        if not isinstance(node.this, exp.Tuple) or query is None or not isinstance(query.unnest(), exp.Select):
            continue
        holder = node.parent
        while isinstance(holder, (exp.And, exp.Paren)):
            holder = holder.parent
        inner = query.unnest()
        if not isinstance(holder, exp.Where) or _correlated(inner):
            continue  # (correlated: DataFusion takes no outer reference in a derived table)
        values = node.this.expressions
        names = [exp.to_identifier(f"__in_{i}") for i in range(len(values))]
        rows = exp.Subquery(this=inner.copy(), alias=exp.TableAlias(this=exp.to_identifier("__in"),
                                                                              columns=names))
        equal = exp.and_(*(exp.EQ(this=exp.column(n.copy(), "__in"), expression=v.copy()) for n, v in zip(names, values)))
        node.replace(exp.Exists(this=exp.select(exp.Literal.number(1)).from_(rows).where(equal)))


def _subquery_tests_as_counts(tree: exp.Expression) -> None:
    """`EXISTS (SELECT ...)` and `x [NOT] IN (SELECT y ...)` in a select list (a CASE there too),
    for DataFusion, which runs them only as conditions ("Physical plan does not support logical
    expression Exists"): from counts of the subquery's rows, scalar subqueries it decorrelates. EXISTS: some row; IN: a row equal to x, else NULL when x is NULL
    or a y is (and there is a row), else false."""
    for node in list(tree.find_all(exp.Exists, exp.In)):
        if (query := _counted_test(node)) is None:
            continue

        def count(of: exp.Expression = exp.Star(), where: exp.Expression | None = None) -> exp.Expression:
            counted = query.copy()
            counted.set("distinct", None)  # (only whether there are rows, and NULLs among them, matters)
            counted.set("order", None)
            counted.set("expressions", [exp.Count(this=of)])
            return exp.Subquery(this=counted.where(where, copy=False) if where is not None else counted)

        if isinstance(node, exp.Exists):
            node.replace(exp.Paren(this=exp.GT(this=count(), expression=exp.Literal.number(0))))
            continue
        value = node.this
        query = _realiased(query, {c.table for c in value.find_all(exp.Column) if c.table})
        listed = query.expressions[0].unalias()
        rows = count()
        node.replace(exp.Paren(this=exp.Case(ifs=[
            exp.If(this=exp.GT(this=count(where=exp.EQ(this=listed.copy(), expression=value.copy())),
                               expression=exp.Literal.number(0)), true=exp.true()),
            exp.If(this=exp.EQ(this=rows, expression=exp.Literal.number(0)), true=exp.false()),
            exp.If(this=exp.or_(exp.Is(this=value.copy(), expression=exp.Null()),
                                exp.LT(this=count(of=listed.copy()), expression=rows.copy())), true=exp.Null())],
            default=exp.false())))


def _counted_test(node: exp.Expression) -> exp.Select | None:
    """The subquery of an EXISTS or IN that DataFusion cannot run where it stands, and that
    counts can stand for (it neither groups, aggregates nor limits its rows), else None."""
    query = (node.this if isinstance(node, exp.Exists) else node.args.get("query") or exp.Null()).unnest()
    if not isinstance(query, exp.Select) or not in_select_list(node) or isinstance(node, exp.In) \
            and (isinstance(node.this, exp.Tuple) or len(query.expressions) != 1) \
            or any(query.args.get(k) for k in ("group", "having", "limit", "offset", "with", "qualify")) \
            or any(e.find(exp.AggFunc, exp.Window) for e in query.expressions):
        return None
    return query


def _realiased(query: exp.Select, outer: set[str]) -> exp.Select:
    """A copy of `query` whose own tables named as one of the `outer` tables (`a IN (SELECT n
    FROM t)` inside `FROM t`) have other aliases, so a condition on an outer column can be added."""
    query = query.copy()
    for table in query.find_all(exp.Table):
        name = table.alias_or_name
        if name in outer and table.parent_select is query:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(f"__in_{name}", quoted=True)))
            for column in query.find_all(exp.Column):
                if column.table == name:
                    column.set("table", exp.to_identifier(f"__in_{name}", quoted=True))
    return query


def _scalar_subqueries_may_be_null(tree: exp.Expression) -> None:
    """An uncorrelated `(SELECT v ...)` used as a value, for DataFusion: when `v` cannot be NULL
    (a literal, a NOT NULL column) DataFusion took the subquery's value for never NULL, also when
    it returns no row: `WHERE (SELECT 1 FROM t WHERE false) IS NOT NULL` kept every row, and
    `coalesce((SELECT 5 ...), 0)` failed ("declared as non-nullable but contains null values").
    Read through a RIGHT JOIN of one row, its value may be NULL; a subquery of two rows still
    fails, as in PostgreSQL."""
    for node in list(tree.find_all(exp.Subquery)):
        inner = node.this
        if node.parent is None or isinstance(node.parent, _NOT_A_VALUE) or not isinstance(inner, exp.Select) \
                or len(inner.expressions) != 1 or node.args.get("alias") is not None:
            continue
        if not inner.args.get("group") and any(a.parent_select is inner for a in inner.expressions[0].find_all(exp.AggFunc)):
            continue  # an aggregate of all rows: one row, whose value may be NULL already
        if _correlated(inner):
            continue  # DataFusion decorrelates it (and wants it aggregated)
        rows = exp.Subquery(this=inner.copy(), alias=exp.TableAlias(this=exp.to_identifier("__s"),
                                                                     columns=[exp.to_identifier("__v")]))
        one = exp.Subquery(this=exp.select(exp.alias_(exp.Literal.number(1), "__one")),
                           alias=exp.TableAlias(this=exp.to_identifier("__one")))
        node.set("this", exp.select(exp.column("__v", "__s")).from_(rows).join(one, join_type="RIGHT", on=exp.true()))


def _correlated(query: exp.Select) -> bool:
    """Whether the (qualified) `query` reads a column of a table outside it."""
    named = {t.alias_or_name for t in query.find_all(exp.Table, exp.Subquery, exp.CTE)}
    return any(c.table and c.table not in named for c in query.find_all(exp.Column))


_NOT_A_VALUE = (exp.From, exp.Join, exp.Lateral, exp.In, exp.Exists, exp.Any, exp.All, exp.CTE, exp.Union,
                exp.Intersect, exp.Except, exp.Subquery)


def _aggregated(query: exp.Select, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Select:
    """`query` (one output column) reduced to `fn` of its column: its own projection replaced
    when it is a plain SELECT, else over it as a derived table."""
    column = query.expressions[0].unalias()
    if not any(query.args.get(k) for k in ("group", "having", "distinct", "limit", "offset", "order", "with")) \
            and not column.find(exp.AggFunc, exp.Window):
        reduced = query.copy()
        reduced.set("expressions", [fn(column.copy())])
        return reduced
    inner = query.copy()
    inner.set("expressions", [exp.alias_(column.copy(), "__quantified", quoted=True)])
    return exp.select(fn(exp.column("__quantified", quoted=True))).from_(
        exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier("__quantified_rows"))))


_IN_BIGINT = "satchel_in_bigint"  # meta: integer arithmetic already computed as BIGINT


def _narrow_arithmetic(node: exp.Expression) -> exp.DataType | None:
    """The type of `node` when it is integer `+`, `-` or `*` narrower than BIGINT, else None."""
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)) and _is_integer(node.this) and _is_integer(node.expression):
        to = _wider_integer(node.this, node.expression)
        return to if to.this != exp.DataType.Type.BIGINT else None
    return None


def _in_bigint(node: exp.Expression, to: exp.DataType | None) -> exp.Expression:
    """`node`'s arithmetic on BIGINT operands (those already computed so kept as they are), cast
    back to `to` when it is given."""
    def wide(operand: exp.Expression) -> exp.Expression:
        return operand if operand.meta.get(_IN_BIGINT) else exp.Cast(this=operand, to=_BIGINT.copy())

    made = node.__class__(this=wide(node.this), expression=wide(node.expression))
    made.meta[_IN_BIGINT] = True
    return exp.Cast(this=made, to=to) if to is not None else made


def _percentile_disc(within: exp.WithinGroup) -> None:
    """`percentile_disc(f) WITHIN GROUP (ORDER BY x)` for DataFusion, which has no such
    aggregate, as PostgreSQL defines it: the first value in that order whose position is at
    least f times the count of non-null values (at least the first)."""
    ordered = within.expression.expressions[0]
    value = ordered.this
    outer = within.parent if isinstance(within.parent, exp.Filter) else None  # its own FILTER (WHERE ...)
    condition = exp.and_(outer.expression.this.copy(), exp.not_(exp.Is(this=value.copy(), expression=exp.Null()))) \
        if outer is not None else exp.not_(exp.Is(this=value.copy(), expression=exp.Null()))
    values = exp.Filter(this=exp.ArrayAgg(this=exp.Order(this=value.copy(), expressions=[ordered.copy()])),
                        expression=exp.Where(this=condition))
    counted = exp.Filter(this=exp.Count(this=value.copy()), expression=exp.Where(this=condition.copy()))
    position = exp.Cast(this=exp.Greatest(this=exp.Literal.number(1), expressions=[exp.Ceil(
        this=exp.Mul(this=within.this.this.copy(), expression=counted))]), to=_BIGINT.copy())
    (outer or within).replace(exp.Anonymous(this="array_element", expressions=[values, position]))


def _rewrite(tree: exp.Expression, fix: Callable[[exp.Expression], Rebuild | None]) -> exp.Expression:
    """`fix` applied to every node of `tree`: it changes a node in place, or returns how to
    rebuild it (a wrapper around it, or a new node from its parts). The rebuilds are done after
    the whole tree was visited, innermost first, each from the node as it is then: sqlglot's
    transform visits nothing below a node it replaced (`x % 0` inside a rewritten `sum()` kept
    DuckDB's NULL)."""
    later = [(node, rebuild) for node in tree.dfs() if (rebuild := fix(node)) is not None]
    for node, rebuild in reversed(later):
        parent, key, index = node.parent, node.arg_key, node.index
        made = rebuild(node)
        if parent is None:
            tree = made
        else:
            parent.set(key, made, index)
    return tree


_FLOAT_TYPES = {exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT}
_TIME_TYPES = exp.DataType.TEMPORAL_TYPES | {exp.DataType.Type.INTERVAL}


def _plain_format(node: exp.Format) -> exp.Expression | None:
    """PostgreSQL's format() with a literal format of only `%s` and `%%`, as the concat() it
    means (which, like format, writes NULL as nothing), for DataFusion, which has no format();
    None for other formats."""
    if not (isinstance(node.this, exp.Literal) and node.this.is_string):
        return None
    pieces = re.split(r"(%%|%s)", node.this.this)
    if "%" in "".join(pieces[0::2]) or pieces[1::2].count("%s") != len(node.expressions):
        return None
    args, parts = iter(node.expressions), []
    for i, piece in enumerate(pieces):
        if i % 2 == 0 or piece == "%%":
            parts.append(exp.Literal.string(piece if i % 2 == 0 else "%"))
        else:
            parts.append(exp.Cast(this=next(args), to=exp.DataType.build("VARCHAR")))
    return exp.Anonymous(this="concat", expressions=[p for p in parts if not (isinstance(p, exp.Literal) and p.this == "")])


_TEXT_TYPES = {exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR}
# DuckDB's (and PostgreSQL's) text of a time value, as DataFusion's to_char writes it: the
# fraction's trailing zeros are dropped, and the zone (always UTC here) is written +00
_CLOCK_TEXT = {exp.DataType.Type.TIMESTAMP: ("%Y-%m-%d %H:%M:%S%.6f", ""),
               exp.DataType.Type.TIMESTAMPTZ: ("%Y-%m-%d %H:%M:%S%.6f", "+00"),
               exp.DataType.Type.TIME: ("%H:%M:%S%.6f", "")}


def _clock_text(value: exp.Expression, kind: exp.DataType.Type) -> exp.Expression:
    """`CAST(value AS TEXT)` for a timestamp or time as DuckDB writes it (`2024-01-06 10:52:00+00`),
    where DataFusion writes ISO 8601 (`2024-01-06T10:52:00Z`): DataFusion's to_char (date_format)."""
    form, zone = _CLOCK_TEXT[kind]
    text = exp.Anonymous(this="regexp_replace", expressions=[
        exp.Anonymous(this="date_format", expressions=[value, exp.Literal.string(form)]),
        exp.Literal.string(r"\.?0+$"), exp.Literal.string("")])
    return exp.DPipe(this=text, expression=exp.Literal.string(zone)) if zone else text


def _rounded_for_int_cast(value: exp.Expression) -> exp.Expression:
    """PostgreSQL (and DuckDB) round when casting to an integer: numeric half away from zero,
    float half to even; DataFusion truncates. Round first, so the cast only changes the type."""
    literal = value
    while isinstance(literal, (exp.Paren, exp.Neg)):
        literal = literal.this
    if isinstance(literal, exp.Literal) and not literal.is_string and not literal.this.isdigit() or _is_decimal(value) \
            or isinstance(literal, exp.Extract) and literal.this.name.upper() not in _INTEGER_PARTS:
        return exp.Round(this=value)  # a literal like 2.5, and EXTRACT(EPOCH ...), are numeric in PostgreSQL
    if value.type is not None and value.type.this in _FLOAT_TYPES:
        return _half_to_even(value)
    return value


def _extract_arithmetic(node: exp.Expression) -> bool:
    """Whether `node` is an EXTRACT, or arithmetic on one (not cast to an integer type)."""
    if isinstance(node, exp.Extract):
        return True
    if isinstance(node, (exp.Paren, exp.Neg)):
        return _extract_arithmetic(node.this)
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        return _extract_arithmetic(node.this) or _extract_arithmetic(node.expression)
    return False


def _float_in_postgres(node: exp.Expression) -> bool:
    """Whether PostgreSQL types `node` double precision: a literal like 2.5 is a numeric there, and
    so is arithmetic of numerics and integers (sqlglot types both DOUBLE)."""
    if isinstance(node, (exp.Paren, exp.Neg)):
        return _float_in_postgres(node.this)
    if isinstance(node, exp.Literal):
        return False
    if isinstance(node, exp.Cast):
        return node.to.this in _FLOAT_TYPES
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
        return _float_in_postgres(node.this) or _float_in_postgres(node.expression)
    return node.type is not None and node.type.this in _FLOAT_TYPES


def _integer_sum(node: exp.Expression) -> bool:
    """SUM of integers, maybe with its FILTER and OVER: a HUGEINT on DuckDB, a BIGINT in PostgreSQL."""
    while isinstance(node, (exp.Window, exp.Filter)):
        node = node.this
    return isinstance(node, exp.Sum) and _is_integer(node.this)


def _half_to_even(value: exp.Expression) -> exp.Expression:
    """A float rounded to a whole number as PostgreSQL rounds one (rint: 2.5 is 2, 3.5 is 4); both
    engines' round() goes half away from zero."""
    half = exp.In(this=exp.Sub(this=exp.Paren(this=value.copy()),
                               expression=exp.Anonymous(this="trunc", expressions=[value.copy()])),
                  expressions=[exp.Literal.number(0.5), exp.Literal.number(-0.5)])
    even = exp.Mul(this=exp.Literal.number(2), expression=exp.Round(this=exp.Div(this=exp.Paren(this=value.copy()),
                                                                                   expression=exp.Literal.number(2))))
    return exp.Case(ifs=[exp.If(this=half, true=even)], default=exp.Round(this=value))


def decimal_sums(tree: exp.Expression) -> list[int]:
    """Output columns that are SUM(decimal): DuckDB returns them as decimal(38, s), DataFusion
    as decimal(p + 10, s); the executor widens DataFusion's to DuckDB's (same values)."""
    root = build_scope(tree)
    if root is None or not isinstance(tree, exp.Select):
        return []
    return [i for i, proj in enumerate(tree.expressions) if _is_decimal_sum(root, proj, 0)]


def _is_decimal_sum(scope: Scope, proj: exp.Expression, depth: int) -> bool:
    """Whether an output column is a SUM(decimal), windowed or not, following columns into
    derived tables, LATERAL subqueries and CTEs (`SELECT * FROM (...) q` wraps queries to find
    their schema)."""
    node = proj.unalias()
    if isinstance(node, exp.Window):
        node = node.this  # a running or partitioned sum
    if isinstance(node, exp.Sum):
        return _is_decimal(node.this)
    if isinstance(node, exp.Column) and node.table and depth < 32:
        source = scope.sources.get(node.table)
        body = source.expression if isinstance(source, Scope) else None
        if isinstance(body, exp.Lateral):
            body = body.this.unnest()
        if isinstance(body, exp.Select):
            for inner in body.expressions:
                if inner.alias_or_name == node.name:
                    return _is_decimal_sum(source, inner, depth + 1)
    return False


def for_duckdb(tree: exp.Expression) -> exp.Expression:
    """Align DuckDB with the public dialect: sum(int) is BIGINT (DuckDB gives HUGEINT, an Arrow
    decimal(38, 0); an overflow is then an error, never a wrong number), and LIKE escapes with
    backslash."""
    def fix(node: exp.Expression) -> Rebuild | None:
        if isinstance(node, exp.CurrentTimestamp):
            # DuckDB reads a bare CURRENT_TIMESTAMP as a column when an output column has that name
            return lambda n: exp.Anonymous(this="get_current_timestamp", expressions=[])
        if isinstance(node, (exp.Like, exp.ILike)) and not isinstance(node.parent, exp.Escape) \
                and _may_escape(node.expression):
            # PostgreSQL's LIKE escapes with backslash by default; DuckDB's has no escape. Only
            # where it can matter: DuckDB's fast paths for LIKE (contains, prefix) skip patterns
            # with an ESCAPE clause (TPC-H Q13 ran 2x slower).
            return lambda n: exp.Escape(this=n, expression=exp.Literal.string("\\"))
        if isinstance(node, exp.Div) and node.args.get("typed") and _is_integer(node.this) \
                and _is_integer(node.expression):
            # int / int truncates to the operands' type, as in PostgreSQL: DuckDB's `//`, exact (its
            # `/` of integers is a DOUBLE: 9223372036854775807 / 2 came back 4611686018427387904)
            to = _wider_integer(node.this, node.expression)
            node.set("expression", _nonzero(node.expression))
            return lambda n: exp.Cast(this=exp.IntDiv(this=n.this, expression=n.expression), to=to)
        if isinstance(node, exp.Mod) and all(_is_integer(x) or _is_decimal(x) for x in (node.this, node.expression)):
            node.set("expression", _nonzero(node.expression))  # DuckDB gives NULL
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
            for side in ("this", "expression"):
                # an integer literal is an INTEGER, as in PostgreSQL (smallint * 30000 is an integer);
                # DuckDB gave it the other side's SMALLINT, and failed on 2 * 30000
                literal, other = node.args[side], node.args["expression" if side == "this" else "this"]
                if isinstance(literal, exp.Literal) and not literal.is_string and literal.this.isdigit() \
                        and other.type is not None and _INT_RANK.get(other.type.this) == 1:
                    node.set(side, exp.Cast(this=literal.copy(), to=exp.DataType.build("INT")))
        if isinstance(node, exp.Anonymous) and node.name.lower() in _DUCKDB_NAMES:
            node.set("this", _DUCKDB_NAMES[node.name.lower()])
        if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.TIME and node.this.type is not None \
                and node.this.type.this == exp.DataType.Type.TIMESTAMPTZ:
            # DuckDB casts no TIMESTAMPTZ to TIME; PostgreSQL gives the time of day in the session's zone (UTC)
            node.set("this", exp.Cast(this=node.this, to=exp.DataType.build("TIMESTAMP")))
        if isinstance(node, exp.Format):
            # PostgreSQL's format('%s-%s', a, b) is printf's, a NULL written as nothing (DuckDB's
            # format takes {} and left '%s-%s' as it was)
            return lambda n: exp.Anonymous(this="printf", expressions=[n.this, *(
                exp.Coalesce(this=exp.Cast(this=arg, to=exp.DataType.build("VARCHAR")), expressions=[exp.Literal.string("")])
                for arg in n.expressions)])
        if isinstance(node, exp.Substring) and not _regex_substring(node) and node.args.get("start") is not None \
                and not (isinstance(node.args["start"], exp.Literal) and node.args["start"].to_py() >= 1):
            return _substring_from_start  # DuckDB counts a start below 1 from the end
        if isinstance(node, exp.Extract) and node.this.name.upper() == "EPOCH" and _clock_kind(node.expression) in _CLOCKS:
            # DuckDB's epoch adds the fraction in floating point (946684799.9999989 for .999999)
            return lambda n: exp.Div(this=exp.Anonymous(this="epoch_us", expressions=[n.expression]),
                                     expression=exp.Literal.number("1000000.0"))
        if isinstance(node, exp.Overlay):  # DuckDB has no overlay()
            return overlay
        if (read := json_read(node, operators=True)) is not None:
            return read
        if (listed := _quantified_list(node)) is not None:
            # x op ANY|ALL (list) over a NULL list is NULL (DuckDB: false, true); NOT (...) kept rows
            return lambda n: exp.Case(ifs=[exp.If(this=exp.Is(this=listed.copy(), expression=exp.Null()),
                                                  true=exp.Null())], default=n)
        if isinstance(node, exp.Anonymous) and node.name.lower() == "regexp_match" and len(node.expressions) in (2, 3) \
                and node.expressions[1].is_string:
            return regexp_match  # DuckDB has no regexp_match()
        if isinstance(node, exp.Hex):  # PostgreSQL's to_hex writes lower case (DuckDB's hex: upper)
            return lambda n: exp.Lower(this=n)
        if isinstance(node, exp.Grouping):  # PostgreSQL's is an INTEGER (DuckDB: BIGINT)
            return lambda n: exp.Cast(this=n, to=exp.DataType.build("INT"))
        if _regex_substring(node):  # PostgreSQL's substring(text FROM pattern): the match, or its first group; NULL for none
            group = exp.Literal.number(1 if _capturing_groups(node.args["start"].this) else 0)
            return lambda n: exp.Case(ifs=[exp.If(
                this=exp.Anonymous(this="regexp_matches", expressions=[n.this.copy(), n.args["start"].copy()]),
                true=exp.Anonymous(this="regexp_extract", expressions=[n.this, n.args["start"], group]))])
        if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
            for ordered in node.expression.expressions:  # PostgreSQL interpolates numbers as double precision
                if _is_integer(ordered.this) or _is_decimal(ordered.this):  # (DuckDB: in the type ordered)
                    ordered.set("this", exp.Cast(this=ordered.this, to=_DOUBLE.copy()))
        if _integer_sum(node) and not isinstance(node.parent, (exp.Window, exp.Filter)):
            # the whole call, FILTER and OVER included (a cast between them was a syntax error)
            return lambda n: exp.Cast(this=n, to=_BIGINT.copy())
        return None

    for node in list(tree.find_all(exp.JSONArrayAgg, exp.Anonymous)):
        if isinstance(node, exp.JSONArrayAgg) or node.name.lower() == "jsonb_agg":
            # PostgreSQL's json_agg / jsonb_agg (ORDER BY kept) as to_json of the list DuckDB
            # aggregates, outside any FILTER or OVER (DuckDB has neither name)
            listed = exp.ArrayAgg(this=node.this if isinstance(node, exp.JSONArrayAgg) else node.expressions[0])
            node.replace(listed)
            while isinstance(listed.parent, (exp.Filter, exp.Window)):
                listed = listed.parent
            as_json = exp.Anonymous(this="to_json", expressions=[])
            listed.replace(as_json)
            as_json.set("expressions", [listed])
    for node in list(tree.find_all(exp.Anonymous)):  # first: the sums of their BIGINTs are BIGINT (below)
        sized = node.expressions[0].type.this if len(node.expressions) == 1 and node.expressions[0].type else None
        name = node.name.lower()  # DuckDB's octet_length and cardinality take only BLOBs and MAPs
        if name == "octet_length" and sized in _TEXT_TYPES or name == "cardinality" and sized != exp.DataType.Type.MAP:
            size = exp.Anonymous(this="strlen" if name == "octet_length" else "len", expressions=node.expressions)
            size.type = _BIGINT.copy()
            node.replace(size)
    return _rewrite(tree, fix)


def _clock_kind(node: exp.Expression) -> exp.DataType.Type | None:
    """TIMESTAMP or TIMESTAMPTZ for a time value, as PostgreSQL types it: `AT TIME ZONE` turns
    one into the other (sqlglot's typing does not follow it)."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.AtTimeZone):
        inner = _clock_kind(node.this)
        return {exp.DataType.Type.TIMESTAMPTZ: exp.DataType.Type.TIMESTAMP,
                exp.DataType.Type.TIMESTAMP: exp.DataType.Type.TIMESTAMPTZ}.get(inner) if inner else None
    if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)) and (node.type is None or node.type.this not in _CLOCKS):
        return _clock_kind(node.this)
    return node.type.this if node.type is not None else None


def _micros(duration: exp.Expression) -> exp.Expression:
    """A DataFusion duration (a difference of timestamps) in microseconds, a BIGINT."""
    return exp.Anonymous(this="arrow_cast", expressions=[
        exp.Anonymous(this="arrow_cast", expressions=[duration, exp.Literal.string("Duration(Microsecond)")]),
        exp.Literal.string("Int64")])


def _is_duration(node: exp.Expression) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    return isinstance(node, exp.Sub) and _clock_kind(node.this) in _CLOCKS and _clock_kind(node.expression) in _CLOCKS


def _compared_span(node: exp.Expression) -> exp.Expression:
    """One side of a comparison with a difference of timestamps, in microseconds. DataFusion
    compares a duration with an INTERVAL field by field (months, then days, then the rest), so
    `shipped_at - ordered_at > INTERVAL '3 days'` was false for five days; PostgreSQL compares
    their lengths, a month counted as 30 days, as DataFusion's epoch of an interval counts it."""
    if _is_duration(node):
        return _micros(node.copy())
    return exp.Mul(this=exp.Anonymous(this="date_part", expressions=[exp.Literal.string("epoch"), node.copy()]),
                   expression=exp.Literal.number(1_000_000))


_BYTE_ORDER = {"C", "POSIX", "UCS_BASIC"}  # collations that order strings by their bytes
def distinct_aggregate_names(tree: exp.Expression) -> None:
    """DataFusion names an aggregate by its text with every CAST left out, and fails on two of
    one SELECT named alike (`sum(amount), sum(amount::float8)`: "duplicate unqualified field
    name"). The casts in such aggregates are written as `arrow_cast`, which shows in the name."""
    def uncast(node: exp.Expression) -> str:
        bare = node.copy()
        while (cast := bare.find(exp.Cast)) is not None:
            if cast is bare:
                bare = cast.this
            else:
                cast.replace(cast.this)
        return bare.sql(PUBLIC_DIALECT)

    for select in tree.find_all(exp.Select):
        calls = [a for proj in select.expressions for a in proj.find_all(exp.AggFunc) if a.parent_select is select]
        named: dict[str, set[str]] = {}
        for call in calls:
            named.setdefault(uncast(call), set()).add(call.sql(PUBLIC_DIALECT))
        for call in calls:
            if len(named[uncast(call)]) < 2:
                continue
            for cast in list(call.find_all(exp.Cast)):
                to = arrow_type_name(cast.to)
                if to is not None:
                    cast.replace(exp.Anonymous(this="arrow_cast", expressions=[cast.this, exp.Literal.string(to)]))


def _as_interval(duration: exp.Expression) -> exp.Expression:
    """A DataFusion duration as the INTERVAL PostgreSQL and DuckDB give for a difference of
    timestamps: whole days, and the rest in microseconds (both signed as the difference)."""
    micros = _micros(duration)
    day = exp.Literal.number(86_400_000_000)
    return interval_of([(exp.Div(this=micros, expression=day, typed=True), "days"),
                        (exp.Mod(this=micros.copy(), expression=day.copy()), "microseconds")])


def _zoned_instant(wall: exp.Expression, zone: exp.Expression) -> exp.Expression:
    """`wall AT TIME ZONE zone` for a TIMESTAMP on DataFusion: the UTC instant at which the
    clocks there show `wall`. DataFusion's own fails on a time a DST change skips; this takes
    the zone's offset at `wall` read as UTC, then at that guess, as PostgreSQL does: a skipped
    time and a repeated one are read in standard time."""
    def wall_clock(instant: exp.Expression) -> exp.Expression:
        return exp.Anonymous(this="to_local_time", expressions=[exp.AtTimeZone(
            this=arrow_cast(instant, _T.TIMESTAMPTZ), zone=zone.copy())])

    guess = exp.Paren(this=exp.Sub(this=wall.copy(), expression=exp.Paren(
        this=exp.Sub(this=wall_clock(wall.copy()), expression=wall.copy()))))
    offset = exp.Paren(this=exp.Sub(this=wall_clock(guess), expression=guess.copy()))
    return arrow_cast(exp.Sub(this=wall.copy(), expression=offset), _T.TIMESTAMPTZ)


def _substring_from_start(node: exp.Expression) -> exp.Expression:
    """PostgreSQL's substr(s, start[, length]) on DuckDB for a start that may be below 1: the
    characters from position `start` on, of which those before the first do not exist (DuckDB
    counts a negative start from the end: substr('apple', -1, 3) was 'e', not 'a')."""
    text, start, length = node.this, node.args["start"], node.args.get("length")
    one = exp.Literal.number(1)
    if length is None:
        return exp.Substring(this=text, start=exp.Greatest(this=start, expressions=[one]))
    kept = exp.Greatest(this=exp.Sub(this=exp.Add(this=start.copy(), expression=length.copy()), expression=one.copy()),
                        expressions=[exp.Literal.number(0)])
    return exp.Case(ifs=[exp.If(this=exp.LT(this=start.copy(), expression=one.copy()),
                                true=exp.Substring(this=text.copy(), start=one.copy(), length=kept))],
                    default=exp.Substring(this=text, start=start, length=length))


def _regex_substring(node: exp.Expression) -> bool:
    """`substring(text FROM 'pattern')`: PostgreSQL's regular-expression form (a text start)."""
    start = node.args.get("start") if isinstance(node, exp.Substring) else None
    return isinstance(start, exp.Literal) and start.is_string and node.args.get("length") is None


def _capturing_groups(pattern: str) -> bool:
    return group_count(pattern) > 0


def _nonzero(divisor: exp.Expression) -> exp.Expression:
    """An exact divisor that fails as PostgreSQL and DataFusion do when it is zero ("division by
    zero"), where DuckDB gives NULL (`%`) or a cast error about infinity (`/`); a literal other
    than zero is left as it is (unless it was bound from a parameter: a template serves other values)."""
    if isinstance(divisor, exp.Literal) and not divisor.is_string and not divisor.meta.get(BOUND) \
            and decimal.Decimal(divisor.this) != 0:
        return divisor
    zero = exp.EQ(this=divisor.copy(), expression=exp.Literal.number(0))
    failure = exp.Anonymous(this="error", expressions=[exp.Literal.string("division by zero")])
    guarded = exp.Paren(this=exp.Case(ifs=[exp.If(this=zero, true=failure)], default=divisor))
    guarded.type = guarded.this.type = divisor.type  # the generator writes int / int by its operands' types
    return guarded


# PostgreSQL's names for functions both engines have under another (every is bool_and)
_SAME_AS = {"every": "bool_and"}
# ... and for those DuckDB alone has, its JSON constructors (to_json, row_to_json, array_to_json
# and json_object_agg are the same in both)
_DUCKDB_NAMES = {"json_build_object": "json_object", "jsonb_build_object": "json_object", "to_jsonb": "to_json",
                 "jsonb_array_length": "json_array_length", **_SAME_AS}


def engine_forms(tree: exp.Expression) -> exp.Expression | None:
    """A copy of `tree` as the federated engine runs it, or None when that is `tree` itself:
    PostgreSQL's JSON operators and functions as the DuckDB JSON functions it has (json_udfs),
    EXISTS / IN tests it cannot run where they stand as counts, and mode() as its own
    (engine_aggregates). A copy: a query that goes
    down whole to PostgreSQL keeps its own forms (PostgreSQL runs IN as a hashed subplan, a
    count per row as a loop)."""
    reads_json = any(json_read(node, operators=False) for node in tree.find_all(*JSON_NODES))
    tests = any(_counted_test(node) is not None for node in tree.find_all(exp.Exists, exp.In))
    modes = any(_mode_type(node) is not None for node in tree.find_all(exp.WithinGroup))
    if not reads_json and not tests and not modes:
        return None
    tree = tree.copy()
    if tests:
        _subquery_tests_as_counts(tree)
    if modes:
        for within in list(tree.find_all(exp.WithinGroup)):
            if (kind := _mode_type(within)) is not None:
                _mode_call(within, kind)
    return _rewrite(tree, lambda node: json_read(node, operators=False)) if reads_json else tree


def _mode_type(within: exp.WithinGroup) -> str | None:
    """The type `mode() WITHIN GROUP (ORDER BY x)` runs in on the federated engine
    (engine_aggregates), else None."""
    if not isinstance(within.this, exp.Mode) or len(within.expression.expressions) != 1:
        return None
    typed = within.expression.expressions[0].this.type
    if typed is None:
        return None
    if typed.this in exp.DataType.INTEGER_TYPES:
        return "BIGINT"
    if typed.this in _FLOAT_TYPES:
        return "DOUBLE"
    if typed.this in _TEXT_TYPES:
        return "VARCHAR"
    return typed.this.value if typed.this.value in MODE_TYPES else None


def _mode_call(within: exp.WithinGroup, kind: str) -> None:
    """`within` replaced by the call of the federated engine's mode() for `kind`, its value cast
    back to x's type (around a FILTER, which belongs to the call)."""
    ordered = within.expression.expressions[0]
    typed = ordered.this.type
    call = exp.Anonymous(this=mode_function(kind), expressions=[
        exp.Cast(this=ordered.this.copy(), to=exp.DataType.build(MODE_TYPES[kind][0])),
        exp.Boolean(this=bool(ordered.args.get("desc")))])
    filtered = within.parent if isinstance(within.parent, exp.Filter) else None
    within.replace(call)
    whole = filtered or call
    if kind != "VARCHAR" and typed.sql() != MODE_TYPES[kind][0]:
        whole.replace(exp.Cast(this=whole.copy(), to=typed.copy()))


def _quantified_list(node: exp.Expression) -> exp.Expression | None:
    """The list of `x op ANY|ALL (list)` (not of a subquery), else None. sqlglot reads
    `x <> ALL(tags)` as a call of a function ALL."""
    quantifier = node.args.get("expression") if isinstance(node, exp.Binary) else None
    if isinstance(quantifier, (exp.Any, exp.All)):
        listed = quantifier.this.unnest()
    elif isinstance(quantifier, exp.Anonymous) and quantifier.name.upper() in ("ALL", "ANY") \
            and len(quantifier.expressions) == 1:
        listed = quantifier.expressions[0]
    else:
        return None
    return None if isinstance(listed, (exp.Select, exp.SetOperation)) else listed


def _quantifier(node: exp.Expression) -> str:
    quantifier = node.args["expression"]
    return "ALL" if isinstance(quantifier, exp.All) or quantifier.name.upper() == "ALL" else "ANY"


def _any_of_list(compared: exp.Expression, listed: exp.Expression) -> exp.Expression:
    """`x op ANY (list)` as PostgreSQL answers it: NULL for a NULL list, false for an empty one,
    true when an element matches, else NULL when x or an element is NULL, else false."""
    def null(e: exp.Expression) -> exp.Expression:
        return exp.Is(this=e.copy(), expression=exp.Null())

    has_null = exp.not_(null(exp.Anonymous(this="array_position", expressions=[listed.copy(), exp.Null()])))
    return exp.Case(ifs=[
        exp.If(this=null(listed), true=exp.Null()),
        exp.If(this=exp.EQ(this=exp.Anonymous(this="cardinality", expressions=[listed.copy()]),
                           expression=exp.Literal.number(0)), true=exp.false()),
        exp.If(this=null(compared.this), true=exp.Null()),
        exp.If(this=compared, true=exp.true()),
        exp.If(this=has_null, true=exp.Null())], default=exp.false())


def _may_escape(pattern: exp.Expression) -> bool:
    """Whether a backslash in the LIKE pattern may escape something: not for a string literal
    without one."""
    return not (isinstance(pattern, exp.Literal) and pattern.is_string and "\\" not in pattern.this)
