"""Limits on SQL text checked before it is parsed: the parser and the engines recurse over the
tree, so a statement nested deep enough (50 parentheses exhaust sqlglot's recursion; a chain of
5,000 `+` or `OR` terms crashed the process in the engines) must be refused from its tokens,
which are read without recursion."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from ..errors import SqlError, SqlTooComplex

# Tokens that join two operands into one node: a run of them nests the tree one level each.
# A run of AND/OR nests once per operator, plus the deepest operand between two of them.
_LOGICAL = {TokenType.AND, TokenType.OR}
_BINARY = {
    TokenType.PLUS, TokenType.DASH, TokenType.STAR, TokenType.SLASH, TokenType.MOD, TokenType.DPIPE,
    TokenType.EQ, TokenType.NEQ, TokenType.LT, TokenType.LTE, TokenType.GT,
    TokenType.GTE, TokenType.LIKE, TokenType.ILIKE, TokenType.PIPE, TokenType.AMP, TokenType.CARET,
    TokenType.DCOLON, TokenType.IS, TokenType.IN, TokenType.BETWEEN, TokenType.UNION, TokenType.EXCEPT,
    TokenType.INTERSECT,
}


@dataclass(frozen=True)
class SqlLimits:
    """`runtime.params.max_sql_length` (characters), `max_sql_depth` (nested parentheses) and
    `max_sql_terms` (operands joined by operators in one run, e.g. `a OR b OR ...`)."""

    length: int = 1 << 20
    depth: int = 32
    terms: int = 1000


def check(text: str, tokenize, limits: SqlLimits) -> list:
    """Raise SqlTooComplex when `text` is past `limits`, else return its tokens (`tokenize` is
    the dialect's tokenizer)."""
    if len(text) > limits.length:
        raise SqlTooComplex(f"the SQL text is {len(text):,} characters; at most {limits.length:,} are accepted "
                            f"(runtime.params.max_sql_length)")
    try:
        tokens = tokenize(text)
    except TokenError as e:
        raise SqlError(f"SQL syntax error: {str(e).splitlines()[0]}") from None
    depth = 0
    # per open parenthesis: [AND/OR in the current run, other operators since the last AND/OR,
    # the most of those between two AND/OR]
    runs = [[0, 0, 0]]
    for token in tokens:
        kind = token.token_type
        run = runs[-1]
        if kind == TokenType.L_PAREN:
            depth += 1
            if depth > limits.depth:
                raise SqlTooComplex(f"the SQL nests parentheses (subqueries, calls, expressions) more than "
                                    f"{limits.depth} deep (runtime.params.max_sql_depth)")
            runs.append([0, 0, 0])
        elif kind == TokenType.R_PAREN:
            depth = max(0, depth - 1)
            if len(runs) > 1:
                runs.pop()
        elif kind == TokenType.COMMA:
            run[:] = [0, 0, 0]
        elif kind in _LOGICAL or kind in _BINARY:
            if kind in _LOGICAL:
                run[0], run[1] = run[0] + 1, 0
            else:
                run[1] += 1
                run[2] = max(run[2], run[1])
            if run[0] + run[2] >= limits.terms:
                raise SqlTooComplex(f"the SQL joins more than {limits.terms} terms with operators in one expression "
                                    f"(runtime.params.max_sql_terms); for long lists of values use IN (...)")
    return tokens
