"""SQL patterns (LIKE, SIMILAR TO) as the regular expressions they mean."""

from __future__ import annotations

import re

SIMILAR_OPERATORS = "|*+?{}()[]"  # what SIMILAR TO takes from regular expressions


def pattern_regex(pattern: str, operators: str = "") -> str:
    """`pattern` as a regular expression (not anchored): `%` any text, `_` any one character, a
    backslash escapes the next; the characters in `operators` keep their regular-expression
    meaning (SIMILAR_OPERATORS for SIMILAR TO, none for LIKE); anything else is literal."""
    out, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch in operators:
            out.append(ch)
        else:
            out.append(re.escape(ch))
    return "".join(out)
