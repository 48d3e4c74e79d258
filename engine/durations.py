"""Duration strings as written in spicepod.yaml: `10s`, `5m`, `1h30m`, `500ms`, `2d`."""

from __future__ import annotations

import re
from datetime import timedelta

# unit spelling -> seconds
_UNITS: dict[str, float] = {
    "ms": 0.001, "msec": 0.001, "millis": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")
HINT = "use a number and a unit, e.g. 10s, 5m, 1h, 1h30m, 500ms, 1d (units: ms, s, m, h, d, w)"


def parse_duration(text: str) -> timedelta:
    """Parse `text` into a timedelta; raise ValueError naming the text and the accepted forms."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string, got {type(text).__name__}; {HINT}")
    s = text.strip().lower()
    if not s:
        raise ValueError(f"empty duration; {HINT}")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m or m.group(2) not in _UNITS:
            raise ValueError(f"invalid duration '{text}'; {HINT}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """The shortest spicepod spelling of `value` (`90s` -> `1m30s`); inverse of parse_duration."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
