"""PostgreSQL's interval input (`'1 day 02:00'`, `'-1 day +02:03'`, `'2 weeks ago'`, `'@ 3 days'`)
read into months, days and microseconds, and written back in words every engine reads alike.

sqlglot keeps only the first "number unit" pair of such a text: `INTERVAL '1 day 02:00'` became
`INTERVAL '1' DAY` and `'2 weeks ago'` two weeks ahead, with no error. DataFusion reads no
`hh:mm:ss` part at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_MICROS = {"microsecond": 1, "millisecond": 1000, "second": 1_000_000, "minute": 60_000_000, "hour": 3_600_000_000}
_UNITS = {  # PostgreSQL's spellings -> (kind, size): kind "months", "days" or a time unit in _MICROS
    **{w: ("months", 12) for w in ("y", "yr", "yrs", "year", "years")},
    **{w: ("months", 120) for w in ("decade", "decades", "dec", "decs")},
    **{w: ("months", 1200) for w in ("century", "centuries", "cent", "c")},
    **{w: ("months", 12000) for w in ("millennium", "millennia", "mil", "mils")},
    **{w: ("months", 1) for w in ("mon", "mons", "month", "months")},
    **{w: ("days", 7) for w in ("w", "week", "weeks")},
    **{w: ("days", 1) for w in ("d", "day", "days")},
    **{w: ("hour", 1) for w in ("h", "hr", "hrs", "hour", "hours")},
    **{w: ("minute", 1) for w in ("m", "min", "mins", "minute", "minutes")},
    **{w: ("second", 1) for w in ("s", "sec", "secs", "second", "seconds")},
    **{w: ("millisecond", 1) for w in ("ms", "msec", "msecs", "millisecond", "milliseconds")},
    **{w: ("microsecond", 1) for w in ("us", "usec", "usecs", "microsecond", "microseconds")},
}
_TOKEN = re.compile(r"\s*(?:([+-]?)(\d+):(\d+)(?::(\d+(?:\.\d*)?))?|([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*([a-z]+)?)")
_SINGLE = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*[a-z]+\s*", re.I)


@dataclass(frozen=True)
class Interval:
    months: int
    days: int
    micros: int

    def words(self) -> str:
        """The interval in words DuckDB, DataFusion and PostgreSQL all read the same way."""
        parts = [f"{self.months} months"] if self.months else []
        parts += [f"{self.days} days"] if self.days else []
        rest = self.micros
        sign = -1 if rest < 0 else 1
        for unit in ("hour", "minute", "second", "microsecond"):
            amount = abs(rest) // _MICROS[unit]
            rest = sign * (abs(rest) - amount * _MICROS[unit])
            if amount:
                parts.append(f"{sign * amount} {unit}s")
        return " ".join(parts) or "0 seconds"


def needs_reading(text: str) -> bool:
    """Whether `text` is more than the one `number unit` pair sqlglot reads right."""
    return not _SINGLE.fullmatch(text)


def read_interval(text: str) -> Interval | None:
    """`text` as PostgreSQL reads an interval; None for a form this does not know (ISO 8601's
    `P1D`, SQL-standard `1-2`), which is then left to the engines."""
    text = text.strip().lower()
    text = text[1:] if text.startswith("@") else text
    ago = text.endswith(" ago")
    text = text[:-4] if ago else text
    months, days, micros = Decimal(0), Decimal(0), Decimal(0)
    pos = 0
    while pos < len(text.rstrip()):
        token = _TOKEN.match(text, pos)
        if token is None or token.end() == pos:
            return None
        pos = token.end()
        sign, hours, minutes, seconds, number, unit = token.groups()
        try:
            if hours is not None:  # hh:mm[:ss[.f]]
                whole = Decimal(hours) * _MICROS["hour"] + Decimal(minutes) * _MICROS["minute"] \
                    + Decimal(seconds or 0) * _MICROS["second"]
                micros += -whole if sign == "-" else whole
                continue
            amount = Decimal(number)
        except InvalidOperation:
            return None
        kind, size = _UNITS.get(unit or "second", (None, 0))
        if kind is None:
            return None
        if kind == "months":  # a fraction of a month is 30 days, of a day 24 hours, as in PostgreSQL
            whole_months = int(amount * size)
            months += whole_months
            days_part = (amount * size - whole_months) * 30
            days += int(days_part)
            micros += (days_part - int(days_part)) * 86_400_000_000
        elif kind == "days":
            whole_days = int(amount * size)
            days += whole_days
            micros += (amount * size - whole_days) * 86_400_000_000
        else:
            micros += amount * _MICROS[kind]
    sign = -1 if ago else 1
    return Interval(sign * int(months), sign * int(days), sign * int(micros.to_integral_value()))
