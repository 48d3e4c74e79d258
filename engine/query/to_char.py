"""PostgreSQL's `to_char(timestamp, template)` as expressions DuckDB, DataFusion and PostgreSQL
itself (a query pushed down whole) all evaluate alike.

sqlglot reads a template through a table of strftime equivalents, where several of PostgreSQL's
patterns have none or a wrong one: `Q` (quarter) and `J` were written as text, `D` became ISO's
day of the week (Monday 1; PostgreSQL's Sunday is 1), `WW` a Sunday-based week, `US`
nanoseconds on DataFusion, `DDth` gave `31th`, `Month` was not blank-padded to 9 as PostgreSQL
pads it. Here the template is read as PostgreSQL reads it (longest pattern first, `FM` and
`TH`/`th`, "quoted" and backslash-escaped text), the patterns strftime writes alike on both
engines go to one strftime call (`TimeToStr`), and the others are built from EXTRACT. A pattern
with no such form (`RM`, `BC`, `TZ`, `FF1`...) is refused by name rather than written wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from sqlglot import exp

from ..errors import SqlError

Build = Callable[[exp.Expression], exp.Expression]


@dataclass(frozen=True)
class _Number:
    """A numeric pattern: its strftime spec (padded, FM) when strftime writes it as PostgreSQL
    does, else its value and zero-padded width."""
    spec: tuple[str, str] | None = None
    value: Build | None = None
    width: int = 0


def _part(name: str) -> Build:
    # a BIGINT: PostgreSQL's EXTRACT is a numeric, on which the arithmetic below would not be integer
    return lambda x: exp.Cast(this=exp.Extract(this=exp.var(name), expression=x.copy()), to=exp.DataType.build("BIGINT"))


def _div(a: exp.Expression, b: int) -> exp.Expression:
    return exp.Div(this=a, expression=exp.Literal.number(b), typed=True)  # integer division, as PostgreSQL's


def _add(a: exp.Expression, b: int) -> exp.Expression:
    return exp.Add(this=a, expression=exp.Literal.number(b))


def _less_one(a: exp.Expression) -> exp.Expression:
    return exp.Sub(this=a, expression=exp.Literal.number(1))


def _mod(a: exp.Expression, b: int) -> exp.Expression:
    return exp.Mod(this=exp.Paren(this=a), expression=exp.Literal.number(b))


def _sub_second(x: exp.Expression) -> exp.Expression:  # microseconds within the second
    return _mod(_part("MICROSECOND")(x), 1_000_000)


_HOUR_OF_12 = _Number(("%I", "%-I"), lambda x: _add(_mod(_add(_part("HOUR")(x), 11), 12), 1))
_NUMBERS: dict[str, _Number] = {
    "YYYY": _Number(("%Y", "%Y"), _part("YEAR")),
    "YYY": _Number(None, lambda x: _mod(_part("YEAR")(x), 1000), 3),
    "YY": _Number(("%y", "%y"), lambda x: _mod(_part("YEAR")(x), 100)),
    "Y": _Number(None, lambda x: _mod(_part("YEAR")(x), 10), 1),
    "IYYY": _Number(("%G", "%G"), _part("ISOYEAR")),
    "MM": _Number(("%m", "%-m"), _part("MONTH")),
    "DDD": _Number(("%j", "%-j"), _part("DOY")),
    "DD": _Number(("%d", "%-d"), _part("DAY")),
    "D": _Number(None, lambda x: _add(_part("DOW")(x), 1), 1),  # Sunday is 1
    "ID": _Number(None, _part("ISODOW"), 1),  # Monday is 1
    "HH24": _Number(("%H", "%-H"), _part("HOUR")),
    "HH12": _HOUR_OF_12,
    "HH": _HOUR_OF_12,
    "MI": _Number(("%M", "%-M"), _part("MINUTE")),
    "SS": _Number(("%S", "%-S"), lambda x: _sub_second_whole(x)),
    "MS": _Number(None, lambda x: _div(_sub_second(x), 1000), 3),
    "US": _Number(None, _sub_second, 6),
    "SSSSS": _Number(None, lambda x: _seconds_of_day(x), 1),
    "SSSS": _Number(None, lambda x: _seconds_of_day(x), 1),
    "WW": _Number(None, lambda x: _add(_div(exp.Paren(this=_less_one(_part("DOY")(x))), 7), 1), 2),
    "W": _Number(None, lambda x: _add(_div(exp.Paren(this=_less_one(_part("DAY")(x))), 7), 1), 1),
    "IW": _Number(("%V", "%-V"), _part("WEEK")),
    "CC": _Number(None, lambda x: _div(exp.Paren(this=_add(_part("YEAR")(x), 99)), 100), 2),
    "J": _Number(None, lambda x: _add(exp.Sub(this=exp.Cast(this=x.copy(), to=exp.DataType.build("DATE")),
                                               expression=exp.Cast(this=exp.Literal.string("1970-01-01"),
                                                                   to=exp.DataType.build("DATE"))), 2440588), 1),
    "Q": _Number(None, _part("QUARTER"), 1),
}


def _sub_second_whole(x: exp.Expression) -> exp.Expression:
    return _div(_part("MICROSECOND")(x), 1_000_000)


def _seconds_of_day(x: exp.Expression) -> exp.Expression:
    hours = exp.Mul(this=_part("HOUR")(x), expression=exp.Literal.number(3600))
    minutes = exp.Mul(this=_part("MINUTE")(x), expression=exp.Literal.number(60))
    return exp.Add(this=exp.Add(this=hours, expression=minutes), expression=_sub_second_whole(x))


# name patterns: strftime spec, width PostgreSQL blank-pads to without FM (0: none)
_NAMES = {"MONTH": ("%B", 9), "MON": ("%b", 0), "DAY": ("%A", 9), "DY": ("%a", 0), "AM": ("%p", 0), "PM": ("%p", 0),
          "A.M.": ("%p", 0), "P.M.": ("%p", 0)}
_UNSUPPORTED = ("Y,YYY", "IDDD", "IYY", "IY", "I", "RM", "B.C.", "A.D.", "BC", "AD", "TZH", "TZM", "TZ", "OF",
                "FF1", "FF2", "FF3", "FF4", "FF5", "FF6")
_PATTERNS = sorted([*_NUMBERS, *_NAMES, *_UNSUPPORTED], key=len, reverse=True)
# a template for a number (to_char(1234.5, 'FM9,990.00')), see number_to_char
_NUMBER_TEMPLATE = re.compile(r'(?i)^(?:FM|[90.,DGSLV ]|MI|PR|EEEE|TH|RN|PL|SG|"[^"]*")*$')


def is_time_template(template: str) -> bool:
    """Whether `template` is read as a date/time template (else a number's)."""
    return not _NUMBER_TEMPLATE.fullmatch(template) or not re.search(r"[90]", template)


def to_char(value: exp.Expression, template: str) -> exp.Expression:
    """`to_char(value, template)` for a date or time value, as an expression (named `to_char`
    as an output column: `meta["pg_name"]`)."""
    pieces: list[exp.Expression | str] = []  # str: a strftime run (literal text escaped)
    pos, fill = 0, True
    while pos < len(template):
        char = template[pos]
        if char == '"':
            end = pos + 1
            text = []
            while end < len(template) and template[end] != '"':
                if template[end] == "\\" and end + 1 < len(template):
                    end += 1
                text.append(template[end])
                end += 1
            pieces.append("".join(text).replace("%", "%%"))
            pos = end + 1
            continue
        if template.startswith('\\"', pos):  # outside quotes a backslash escapes only a double quote
            pieces.append('"')
            pos += 2
            continue
        prefix = template[pos:pos + 2]
        if prefix.upper() in ("FM", "FX", "TM"):
            fill = fill and prefix.upper() != "FM"
            pos += 2
            continue
        name, written = _pattern_at(template, pos)
        if name is None:
            pieces.append(char.replace("%", "%%"))
            pos += 1
            continue
        pos += len(written)
        suffix = template[pos:pos + 2] if name in _NUMBERS else ""
        ordinal = suffix if suffix in ("TH", "th") else None
        pos += 2 if ordinal else 0
        pieces.extend(_piece(value, name, written, fill, ordinal))
        fill = True
    result = _joined(value, pieces)
    result.meta["pg_name"] = "to_char"
    return result


def _pattern_at(template: str, pos: int) -> tuple[str | None, str]:
    """The pattern starting at `pos` (its canonical name, as written), longest first. Numbers match
    in upper or lower case; names as PostgreSQL's three spellings (MONTH, Month, month)."""
    for name in _PATTERNS:
        written = template[pos:pos + len(name)]
        if written.upper() != name:
            continue
        if name in _NAMES or name in _UNSUPPORTED:
            if written in (name, name.lower(), name.capitalize()) or name in ("AM", "PM") and written in ("am", "pm"):
                return name, written
            continue
        if written in (name, name.lower()):
            return name, written
    return None, ""


def _piece(value: exp.Expression, name: str, written: str, fill: bool,
           ordinal: str | None) -> list[exp.Expression | str]:
    if name in _UNSUPPORTED:
        raise SqlError(f"to_char pattern '{written}' is not supported (supported: YYYY, YY, IYYY, MM, Month, Mon, "
                       f"DD, DDD, D, ID, Day, Dy, HH, HH12, HH24, MI, SS, MS, US, SSSS, AM/PM, WW, W, IW, CC, J, Q, "
                       f"with FM and TH); write other parts with EXTRACT")
    if name in _NAMES:
        spec, width = _NAMES[name]
        if name in ("A.M.", "P.M."):
            hour = _part("HOUR")(value)
            text: exp.Expression = exp.Case(ifs=[
                exp.If(this=exp.LT(this=hour, expression=exp.Literal.number(12)), true=exp.Literal.string("A.M.")),
                exp.If(this=exp.GTE(this=hour.copy(), expression=exp.Literal.number(12)), true=exp.Literal.string("P.M."))])
            return [exp.Lower(this=text) if written.islower() else text]
        padded = bool(width) and fill
        if not padded and (written == name.capitalize() or name in ("AM", "PM") and written.isupper()):
            return [spec]  # strftime writes it as PostgreSQL does
        text = exp.TimeToStr(this=value.copy(), format=exp.Literal.string(spec))
        if written.isupper() and name not in ("AM", "PM"):
            text = exp.Upper(this=text)
        elif written.islower():
            text = exp.Lower(this=text)
        if padded:
            text = exp.Pad(this=text, expression=exp.Literal.number(width), fill_pattern=exp.Literal.string(" "),
                           is_left=False)
        return [text]
    number = _NUMBERS[name]
    pieces: list[exp.Expression | str]
    if number.spec is not None:
        pieces = [number.spec[0] if fill else number.spec[1]]
    else:
        text = exp.Cast(this=number.value(value), to=exp.DataType.build("VARCHAR"))
        if fill and number.width > 1:
            text = exp.Pad(this=text, expression=exp.Literal.number(number.width), fill_pattern=exp.Literal.string("0"),
                           is_left=True)
        pieces = [text]
    if ordinal:
        suffix = _ordinal(number.value(value))
        pieces.append(exp.Upper(this=suffix) if ordinal == "TH" else suffix)
    return pieces


def _ordinal(n: exp.Expression) -> exp.Expression:
    """'st', 'nd', 'rd' or 'th' for the number `n`, as PostgreSQL's TH suffix writes it."""
    last_two, last = _mod(n.copy(), 100), _mod(n.copy(), 10)
    return exp.Case(ifs=[
        exp.If(this=exp.In(this=last_two, expressions=[exp.Literal.number(11), exp.Literal.number(12),
                                                       exp.Literal.number(13)]), true=exp.Literal.string("th")),
        *(exp.If(this=exp.EQ(this=last.copy(), expression=exp.Literal.number(i)), true=exp.Literal.string(s))
          for i, s in ((1, "st"), (2, "nd"), (3, "rd")))], default=exp.Literal.string("th"))


_SPEC = re.compile(r"%[-#]?[A-Za-z]")
_MOST_PARTS = 200  # a template is short; thousands of parts would only make a huge expression


def _concat(parts: list[exp.Expression]) -> exp.Expression:
    """The parts written one after another: one flat CONCAT (a chain of || nests a level per part),
    none of them NULL (the value's NULL is tested once, around it)."""
    if len(parts) > _MOST_PARTS:
        raise SqlError(f"to_char template too long: it makes {len(parts)} parts, at most {_MOST_PARTS}")
    return parts[0] if len(parts) == 1 else exp.Concat(expressions=parts)


def _joined(value: exp.Expression, pieces: list[exp.Expression | str]) -> exp.Expression:
    """One TimeToStr per run of strftime text, concatenated with the other pieces."""
    parts: list[exp.Expression] = []
    run = ""
    for piece in [*pieces, None]:
        if isinstance(piece, str):
            run += piece
            continue
        if run and _SPEC.search(run.replace("%%", "")):
            parts.append(exp.TimeToStr(this=value.copy(), format=exp.Literal.string(run)))
        elif run:
            parts.append(exp.Literal.string(run.replace("%%", "%")))
        run = ""
        if piece is not None:
            parts.append(piece)
    if not parts:
        return exp.TimeToStr(this=value.copy(), format=exp.Literal.string(""))
    if len(parts) == 1:
        return parts[0]
    # NULL in, NULL out (as PostgreSQL's to_char), whichever parts are constants
    joined = _concat(parts)
    return exp.Case(ifs=[exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null())],
                    default=joined)


# -- numbers ------------------------------------------------------------------------------------
# to_char(number, '9,990.00'): digit positions 9 (dropped when a leading zero) and 0 (kept), the
# decimal point (. or D), group separators (, or G), FM, the sign as S, MI or PR, and text.
_NUMBER_PARTS = re.compile(r'(?i)FM|MI|PR|"[^"]*"|[90.,DGS ]|EEEE|RN|PL|SG|TH|[LV]')


def number_to_char(value: exp.Expression, template: str) -> exp.Expression:
    """`to_char(value, template)` for a number, as PostgreSQL writes it, as an expression."""
    tokens = _NUMBER_PARTS.findall(template)
    if "".join(tokens) != template:
        raise SqlError(f"to_char template '{template}' for a number has text outside double quotes")
    for t in tokens:
        if t.upper() in ("EEEE", "RN", "PL", "SG", "TH", "L", "V"):
            raise SqlError(f"to_char pattern '{t}' for a number is not supported (supported: 9, 0, '.', D, ',', G, "
                           f"FM, S, MI, PR and \"text\")")
    layout = _NumberLayout(tokens)
    if len(layout.int_slots) > 38 or layout.places > 30:
        raise SqlError(f"to_char template '{template[:40]}' has more digit positions than a number has here "
                       f"(38, 30 after the point)")
    # |value| rounded to the template's places, as exact decimal text: its integer and fraction digits
    rounded = exp.Cast(this=exp.Round(this=exp.Abs(this=value.copy()), decimals=exp.Literal.number(layout.places)),
                       to=exp.DataType.build(f"DECIMAL(38, {layout.places})"))
    as_text = exp.Cast(this=rounded, to=exp.DataType.build("VARCHAR"))
    whole = exp.SplitPart(this=as_text, delimiter=exp.Literal.string("."), part_index=exp.Literal.number(1))
    fraction = exp.SplitPart(this=as_text.copy(), delimiter=exp.Literal.string("."), part_index=exp.Literal.number(2))
    negative = exp.LT(this=value.copy(), expression=exp.Literal.number(0))
    overflow = exp.GT(this=exp.Length(this=whole.copy()), expression=exp.Literal.number(len(layout.int_slots)))
    result = exp.Case(ifs=[exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null()),
                           exp.If(this=overflow, true=layout.render(whole, fraction, negative, hashes=True))],
                      default=layout.render(whole, fraction, negative, hashes=False))
    result.meta["pg_name"] = "to_char"
    return result


def _text(value: str) -> exp.Expression:
    return exp.Literal.string(value)


def _when(condition: exp.Expression, then: exp.Expression | str, otherwise: exp.Expression | str = "") -> exp.Expression:
    return exp.Case(ifs=[exp.If(this=condition, true=then if isinstance(then, exp.Expression) else _text(then))],
                    default=otherwise if isinstance(otherwise, exp.Expression) else _text(otherwise))


class _NumberLayout:
    """A number template's positions, written out as PostgreSQL's NUM_processor writes them."""

    def __init__(self, tokens: list[str]) -> None:
        self.fill = not any(t.upper() == "FM" for t in tokens)
        self.tokens = [t for t in tokens if t.upper() != "FM"]
        self.point = next((i for i, t in enumerate(self.tokens) if t in (".", "D", "d")), len(self.tokens))
        self.int_slots = [i for i, t in enumerate(self.tokens[:self.point]) if t in "90"]
        self.frac_slots = [i for i, t in enumerate(self.tokens) if i > self.point and t in "90"]
        self.places = len(self.frac_slots)
        self.has_zero = "0" in self.tokens
        zero_at = next((k for k, i in enumerate(self.int_slots) if self.tokens[i] == "0"), len(self.int_slots))
        self.forced = len(self.int_slots) - zero_at  # digits a 0 position keeps from there on
        signs = [t.upper() for t in self.tokens if t.upper() in ("S", "MI", "PR")]
        self.sign = signs[0] if signs else None
        first = min([*self.int_slots, *self.frac_slots, self.point])
        self.anchored_sign = self.sign in (None, "PR") or self.sign == "S" and \
            next(i for i, t in enumerate(self.tokens) if t.upper() == "S") < first

    def render(self, whole: exp.Expression, fraction: exp.Expression, negative: exp.Expression,
               hashes: bool) -> exp.Expression:
        blank = " " if self.fill else ""
        n = len(self.int_slots)
        if hashes:  # the number did not fit: every digit position '#'
            shown: exp.Expression = exp.Literal.number(n)
            kept_fraction: exp.Expression = _text("#" * self.places)
        else:
            kept_fraction = self._kept_fraction(fraction)
            # the integer's digits shown; a lone 0 before a fraction is a blank unless the template
            # has a 0 position ('0.1' with 9.99 is '  .10'), or with FM nothing of the fraction is left
            digits = exp.Length(this=whole.copy())
            shown = exp.Greatest(this=digits, expressions=[exp.Literal.number(self.forced)])
            if self.places and not self.has_zero:
                lone_zero = exp.EQ(this=whole.copy(), expression=_text("0"))
                if not self.fill:
                    lone_zero = exp.and_(lone_zero, exp.NEQ(this=kept_fraction.copy(), expression=_text("")))
                shown = _when(lone_zero, exp.Literal.number(0), shown)
        padded = exp.Pad(this=whole.copy(), expression=exp.Literal.number(max(n, 1)), fill_pattern=_text("0"),
                         is_left=True)
        sign_text = {None: ("-", blank), "S": ("-", "+"), "PR": ("<", blank)}.get(self.sign, ("", ""))
        anchored = _when(negative, *sign_text) if self.anchored_sign else _text("")
        out: list[exp.Expression] = []
        for i, t in enumerate(self.tokens):
            if i in self.int_slots:
                k = self.int_slots.index(i)
                first_shown = exp.EQ(this=shown.copy(), expression=exp.Literal.number(n - k))
                visible = exp.GTE(this=shown.copy(), expression=exp.Literal.number(n - k))
                digit = _text("#") if hashes else exp.Substring(this=padded.copy(), start=exp.Literal.number(k + 1),
                                                                length=exp.Literal.number(1))
                out += [_when(first_shown, anchored.copy()), _when(visible, digit, blank)]
            elif t in (",", "G", "g") and i < self.point:
                before = sum(1 for s in self.int_slots if s < i)
                visible = exp.GTE(this=shown.copy(), expression=exp.Literal.number(n - before + 1)) if before \
                    else exp.false()
                out.append(_when(visible, ",", blank))
            elif i == self.point:
                out += [_when(exp.EQ(this=shown.copy(), expression=exp.Literal.number(0)), anchored.copy()), _text(".")]
            elif i in self.frac_slots:
                k = self.frac_slots.index(i)
                out.append(exp.Substring(this=kept_fraction.copy(), start=exp.Literal.number(k + 1),
                                         length=exp.Literal.number(1)))
            elif t in (",", "G", "g"):
                out.append(_text(","))
            elif t.upper() == "S" and not self.anchored_sign:
                out.append(_when(negative, "-", "+"))
            elif t.upper() == "MI":
                out.append(_when(negative, "-", blank))
            elif t.upper() == "PR":
                out.append(_when(negative, ">", blank))
            elif t.upper() == "S":
                continue  # anchored: written before the first digit shown
            else:
                out.append(_text(t[1:-1] if t.startswith('"') else t))
        if self.point == len(self.tokens) and not self.int_slots:
            out.insert(0, anchored)
        return _concat(out)

    def _kept_fraction(self, fraction: exp.Expression) -> exp.Expression:
        """The fraction's digits, without (with FM) the trailing zeros at 9 positions."""
        if self.fill or not self.places:
            return fraction.copy()
        last_zero = max((k + 1 for k, s in enumerate(self.frac_slots) if self.tokens[s] == "0"), default=0)
        trimmed = exp.Anonymous(this="rtrim", expressions=[fraction.copy(), _text("0")])
        width = exp.Cast(this=exp.Greatest(this=exp.Length(this=trimmed.copy()), expressions=[exp.Literal.number(last_zero)]),
                         to=exp.DataType.build("INT"))  # (DuckDB's rpad takes no BIGINT)
        return exp.Pad(this=trimmed, expression=width, fill_pattern=_text("0"), is_left=False)
