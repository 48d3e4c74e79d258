"""Functions one engine lacks, written with the ones it has, as PostgreSQL answers them:
width_bucket (neither), overlay and regexp_match (DuckDB), make_timestamp, age, EXTRACT of a
century, and an interval literal times a number (DataFusion). The planner's rules
(`pg_semantics`) decide where each is needed."""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

from .arrow_cast import arrow_cast, interval_of, interval_text
from .intervals import read_interval

_T = exp.DataType.Type
_DOUBLE = exp.DataType.build("DOUBLE")
_BIGINT = exp.DataType.build("BIGINT")


_WIDTH_BUCKET = sqlglot.parse_one(
    "CASE WHEN __lo < __hi THEN CASE WHEN __x < __lo THEN 0 WHEN __x >= __hi THEN __n + 1 "
    "ELSE CAST(floor((__x - __lo) * CAST(__n AS BIGINT) / (__hi - __lo)) AS INT) + 1 END "
    "WHEN __lo > __hi THEN CASE WHEN __x > __lo THEN 0 WHEN __x <= __hi THEN __n + 1 "
    "ELSE CAST(floor((__lo - __x) * CAST(__n AS BIGINT) / (__lo - __hi)) AS INT) + 1 END END", read="postgres")


def width_bucket(value: exp.Expression, low: exp.Expression, high: exp.Expression,
                  count: exp.Expression) -> exp.Expression:
    """PostgreSQL's width_bucket(value, low, high, count): 0 below the range, count + 1 from its
    end on, else which of `count` equal buckets holds `value` (a reversed range counts down);
    NULL where PostgreSQL fails (low = high)."""
    return _filled(_WIDTH_BUCKET, {"__x": value, "__lo": low, "__hi": high, "__n": count})


def _filled(template: exp.Expression, parts: dict[str, exp.Expression]) -> exp.Expression:
    """`template` with each of its `__name` placeholders replaced by a copy of its part."""
    return template.copy().transform(
        lambda n: parts[n.name].copy() if isinstance(n, exp.Column) and n.name in parts else n)


_DAY_US = 86_400_000_000
_DURATION_TEXT = sqlglot.parse_one(f"""
CASE WHEN __us IS NULL THEN NULL ELSE concat(
  CASE WHEN __us / {_DAY_US} <> 0 THEN
    CAST(__us / {_DAY_US} AS VARCHAR) || CASE WHEN __us / {_DAY_US} = 1 THEN ' day' ELSE ' days' END END,
  CASE WHEN __us / {_DAY_US} <> 0 AND __us % {_DAY_US} <> 0 THEN ' ' END,
  CASE WHEN __us % {_DAY_US} <> 0 OR __us / {_DAY_US} = 0 THEN
    CASE WHEN __us % {_DAY_US} < 0 THEN '-' ELSE '' END
    || lpad(CAST(abs(__us % {_DAY_US}) / 3600000000 AS VARCHAR), 2, '0') || ':'
    || lpad(CAST(abs(__us % {_DAY_US}) / 60000000 % 60 AS VARCHAR), 2, '0') || ':'
    || lpad(CAST(abs(__us % {_DAY_US}) / 1000000 % 60 AS VARCHAR), 2, '0')
    || CASE WHEN abs(__us % {_DAY_US}) % 1000000 <> 0
            THEN '.' || rtrim(lpad(CAST(abs(__us % {_DAY_US}) % 1000000 AS VARCHAR), 6, '0'), '0') ELSE '' END
  END) END""", read="postgres")


def duration_text(micros: exp.Expression) -> exp.Expression:
    """A difference of timestamps in microseconds (a BIGINT) as PostgreSQL writes that interval:
    whole days, then the rest as [-]HH:MM:SS[.ffffff] (`14 days 23:30:00`, `-1 days -00:30:00`,
    `00:00:00.5`)."""
    return _filled(_DURATION_TEXT, {"__us": micros})


YEAR_SPANS = {"CENTURY": (100, 99), "CENTURIES": (100, 99), "DECADE": (10, 0), "DECADES": (10, 0),
               "MILLENNIUM": (1000, 999), "MILLENNIA": (1000, 999)}  # (span, offset): (year + offset) / span


def timestamp_from_parts(node: exp.Expression) -> exp.Expression:
    """make_timestamp(y, m, d, h, mi, s) for DataFusion: make_date's midnight plus the time."""
    day = exp.Anonymous(this="make_date", expressions=[node.args[k] for k in ("year", "month", "day")])
    clock = interval_of([(node.args[key], unit) for key, unit in (("hour", "hours"), ("min", "minutes"), ("sec", "seconds"))])
    return exp.Add(this=arrow_cast(day, _T.TIMESTAMP), expression=clock)


_INTERVAL_UNITS = (("year", "years"), ("month", "months"), ("week", "weeks"), ("day", "days"), ("hour", "hours"),
                   ("minute", "minutes"), ("second", "seconds"))


def make_interval(node: exp.MakeInterval) -> exp.Expression:
    """make_interval(years, months, weeks, days, hours, mins, secs) (by position or by name) for
    both engines: the text `<n> days <m> hours ...` cast to INTERVAL; NULL when an amount is
    NULL (`||`), as PostgreSQL's is; no amount at all is a zero interval."""
    amounts = []
    for key, unit in _INTERVAL_UNITS:
        value = node.args.get(key)
        if value is not None:
            amounts.append((value.expression if isinstance(value, exp.Kwarg) else value, unit))
    if not amounts:
        return exp.Interval(this=exp.Literal.string("0"), unit=exp.var("SECOND"))
    return exp.Cast(this=interval_text([(amount.copy(), unit) for amount, unit in amounts]),
                    to=exp.DataType.build("INTERVAL"))


def timestamp_precision(cast: exp.Cast) -> exp.Expression | None:
    """`CAST(x AS TIMESTAMP(p))` (or TIMESTAMPTZ(p)) for p < 6 as PostgreSQL makes it: x rounded
    to p digits of a second, half up (both engines ignored p or truncated); None for any other cast."""
    to = cast.to
    params = to.expressions
    if to.this not in (_T.TIMESTAMP, _T.TIMESTAMPTZ) or len(params) != 1 or not isinstance(params[0].this, exp.Literal):
        return None
    digits = int(params[0].this.this)
    if not 0 <= digits < 6:
        return None
    whole = exp.Cast(this=cast.this.copy(), to=exp.DataType.build(to.this))
    unit = 10 ** (6 - digits)
    fraction = exp.Mod(this=exp.Cast(this=exp.Extract(this=exp.var("MICROSECOND"), expression=whole.copy()), to=_BIGINT.copy()),
                       expression=exp.Literal.number(1_000_000))
    rounded = exp.Mul(this=exp.Div(this=exp.Paren(this=exp.Add(this=fraction.copy(), expression=exp.Literal.number(unit // 2))),
                                   expression=exp.Literal.number(unit), typed=True), expression=exp.Literal.number(unit))
    shift = exp.Cast(this=interval_text([(exp.Sub(this=rounded, expression=fraction), "microseconds")]),
                     to=exp.DataType.build("INTERVAL"))
    return exp.Add(this=whole, expression=shift)


def null_count(node: exp.Anonymous, nulls: bool) -> exp.Expression:
    """num_nulls(a, b, ...) (`nulls`) or num_nonnulls(...): how many arguments are (not) NULL, an INT."""
    each = [exp.Case(ifs=[exp.If(this=exp.Is(this=arg.copy(), expression=exp.Null()),
                                 true=exp.Literal.number(1 if nulls else 0))],
                     default=exp.Literal.number(0 if nulls else 1)) for arg in node.expressions]
    total = each[0]
    for term in each[1:]:
        total = exp.Add(this=total, expression=term)
    return exp.Cast(this=total, to=exp.DataType.build("INT"))


def overlay(node: exp.Expression) -> exp.Expression:
    """overlay(s PLACING r FROM i [FOR n]) for DuckDB: s's first i - 1 characters, r, and s after
    n more (n is r's length by default)."""
    text, put, start = node.this, node.expression, node.args["from_"]
    length = node.args.get("for_") or exp.Length(this=put.copy())
    head = exp.Left(this=text.copy(), expression=exp.Sub(this=start.copy(), expression=exp.Literal.number(1)))
    tail = exp.Substring(this=text.copy(), start=exp.Add(this=start.copy(), expression=exp.Paren(this=length)))
    return exp.DPipe(this=exp.DPipe(this=head, expression=put.copy()), expression=tail)


def regexp_match(node: exp.Expression) -> exp.Expression:
    """regexp_match(s, pattern [, flags]) for DuckDB: the first match's groups as a list (the whole
    match when the pattern has none), NULL when nothing matches."""
    text, pattern, *flags = node.expressions
    groups = group_count(pattern.this)
    found = exp.Anonymous(this="regexp_matches", expressions=[text.copy(), pattern.copy(), *[f.copy() for f in flags]])
    parts = [exp.Anonymous(this="regexp_extract", expressions=[text.copy(), pattern.copy(), exp.Literal.number(g),
                                                               *[f.copy() for f in flags]])
             for g in (range(1, groups + 1) if groups else [0])]
    return exp.Case(ifs=[exp.If(this=found, true=exp.Array(expressions=parts))])


def age(node: exp.Expression) -> exp.Expression:
    """PostgreSQL's age(t1, t2) (age(t) is from midnight today): years, months and days between the
    two, field by field, borrowing a day from the time of day and the length of the earlier
    date's month from the days, then the sign of t1 - t2; as DataFusion's interval."""
    args = node.expressions
    first = args[0] if len(args) == 2 else exp.Cast(this=exp.CurrentDate(), to=exp.DataType.build("TIMESTAMP"))
    second = args[-1]
    later = exp.Greatest(this=first.copy(), expressions=[second.copy()])
    earlier = exp.Least(this=first.copy(), expressions=[second.copy()])

    def part(unit: str, of: exp.Expression) -> exp.Expression:
        return exp.Cast(this=exp.Anonymous(this="date_part", expressions=[exp.Literal.string(unit), of.copy()]),
                        to=_BIGINT.copy())

    def time_of_day(of: exp.Expression) -> exp.Expression:
        return exp.Add(this=exp.Add(this=exp.Mul(this=part("hour", of), expression=exp.Literal.number(3_600_000_000)),
                                    expression=exp.Mul(this=part("minute", of), expression=exp.Literal.number(60_000_000))),
                       expression=part("microsecond", of))

    def minus(a: exp.Expression, b: exp.Expression) -> exp.Expression:
        return exp.Paren(this=exp.Sub(this=exp.Paren(this=a), expression=exp.Paren(this=b)))

    def below_zero(a: exp.Expression) -> exp.Expression:
        return exp.Case(ifs=[exp.If(this=exp.LT(this=a, expression=exp.Literal.number(0)),
                                    true=exp.Literal.number(1))], default=exp.Literal.number(0))

    day = 86_400_000_000
    micros = minus(time_of_day(later), time_of_day(earlier))
    borrow_day = below_zero(micros.copy())
    micros = exp.Add(this=micros, expression=exp.Mul(this=borrow_day.copy(), expression=exp.Literal.number(day)))
    days = minus(minus(part("day", later), part("day", earlier)), borrow_day)
    month_end = exp.Sub(this=exp.Add(this=exp.Anonymous(this="date_trunc", expressions=[exp.Literal.string("month"),
                                                                                        earlier.copy()]),
                                     expression=exp.Interval(this=exp.Literal.string("1 months"))),
                        expression=exp.Interval(this=exp.Literal.string("1 days")))
    month_days = part("day", month_end)
    # as many of the earlier month's lengths as make the days whole (PostgreSQL adds the same one)
    borrow_months = exp.Case(ifs=[exp.If(this=exp.LT(this=days.copy(), expression=exp.Literal.number(0)), true=exp.Add(
        this=exp.Div(this=exp.Paren(this=exp.Sub(this=exp.Neg(this=days.copy()), expression=exp.Literal.number(1))),
                     expression=month_days.copy(), typed=True), expression=exp.Literal.number(1)))],
        default=exp.Literal.number(0))
    days = exp.Add(this=days, expression=exp.Mul(this=borrow_months.copy(), expression=month_days))
    months = exp.Sub(this=exp.Add(this=exp.Mul(this=minus(part("year", later), part("year", earlier)),
                                               expression=exp.Literal.number(12)),
                                  expression=minus(part("month", later), part("month", earlier))),
                     expression=borrow_months)
    sign = exp.Case(ifs=[exp.If(this=exp.LT(this=first.copy(), expression=second.copy()),
                                true=exp.Literal.number(-1))], default=exp.Literal.number(1))
    age = interval_of([(exp.Mul(this=sign.copy(), expression=exp.Paren(this=amount)), unit)
                       for amount, unit in ((months, "months"), (days, "days"), (micros, "microseconds"))])
    unknown = exp.or_(exp.Is(this=first.copy(), expression=exp.Null()), exp.Is(this=second.copy(), expression=exp.Null()))
    return exp.Case(ifs=[exp.If(this=unknown, true=exp.Null())], default=age)  # (GREATEST skips a NULL)


def scaled_interval(node: exp.Expression) -> exp.Expression | None:
    """`INTERVAL '1 day 2 hours' * n` (or `n * ...`, `... / n`) for DataFusion, where an interval
    literal times a number is an error: the interval's text with each amount scaled, read back as
    an interval (DataFusion carries a fraction down as PostgreSQL does: 1.5 months is 1 month 15
    days). None when `node` is not such a product."""
    interval, factor = node.this, node.expression
    if isinstance(node, exp.Mul) and isinstance(factor, exp.Interval):
        interval, factor = factor, interval
    if not isinstance(interval, exp.Interval) or not isinstance(interval.this, exp.Literal) \
            or factor.type is None or factor.type.this not in exp.DataType.NUMERIC_TYPES:
        return None
    unit = interval.args.get("unit")
    if unit is not None and not isinstance(unit, exp.Var):  # HOUR TO MINUTE
        return None
    read = read_interval(f"{interval.this.this} {unit.name if unit is not None else ''}")
    if read is None:
        return None
    amounts = [(str(n), name) for n, name in ((read.months, "months"), (read.days, "days"),
                                               (read.micros, "microseconds")) if n] or [("0", "days")]
    whole = isinstance(node, exp.Mul) and factor.type.this in exp.DataType.INTEGER_TYPES
    scaled: list[tuple[exp.Expression, str]] = []
    for amount, unit_name in amounts:
        if whole:
            value: exp.Expression = exp.Mul(this=exp.Cast(this=exp.Literal.number(amount), to=_BIGINT.copy()),
                                            expression=exp.Cast(this=factor.copy(), to=_BIGINT.copy()))
        else:
            product = (exp.Mul if isinstance(node, exp.Mul) else exp.Div)(
                this=exp.Cast(this=exp.Literal.number(amount), to=_DOUBLE.copy()),
                expression=exp.Cast(this=factor.copy(), to=_DOUBLE.copy()))
            value = exp.Cast(this=product, to=exp.DataType.build("DECIMAL(38, 9)"))
        scaled.append((value, unit_name))
    return interval_of(scaled)


def group_count(pattern: str) -> int:
    try:
        return re.compile(pattern).groups
    except re.error:  # a form Python does not read: each unescaped "(" not opening "(?"
        return len(re.findall(r"(?<!\\)\((?!\?)", pattern))
