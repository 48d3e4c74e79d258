"""Values one call would build, bounded before the query runs: `repeat('x', 2000000000)`,
`lpad(...)`, `space(...)` and row generators (`generate_series` and `range` as values, `unnest(range(...))`)
allocate outside every engine's memory pool, so with constant arguments past the query's memory
budget they are refused up front (507 resource_exhausted) instead of taking the process down."""

from __future__ import annotations

from sqlglot import exp

from ..errors import ResourceExhausted

# Measured in DataFusion (peak growth of the process): unnest(range(10M)) takes ~45 bytes a
# row, repeat() about 4 times the string it builds (copies between operators).
_ROW_BYTES = 48
_STRING_COPIES = 4


def check(tree: exp.Expression, budget: int) -> None:
    """Raise ResourceExhausted when a constant-argument call in `tree` would build more than
    `budget` bytes."""
    for node in tree.walk():
        size = _bytes_built(node)
        if size is not None and size > budget:
            raise ResourceExhausted(f"{node.sql('postgres')[:80]} would build about {size / 2**20:,.0f} MiB, more than "
                                    f"the query's memory budget ({budget >> 20} MiB, from runtime.params.memory_limit)")


def _bytes_built(node: exp.Expression) -> float | None:
    if isinstance(node, exp.Repeat):
        times = _number(node.args.get("times"))
        text = node.this
        width = len(text.this) if isinstance(text, exp.Literal) and text.is_string else 1
        return None if times is None else times * max(1, width) * _STRING_COPIES
    if isinstance(node, (exp.Pad, exp.Space)):
        length = _number(node.expression if isinstance(node, exp.Pad) else node.this)
        return None if length is None else length * _STRING_COPIES
    if isinstance(node, (exp.GenerateSeries, exp.ExplodingGenerateSeries)) and not isinstance(node.parent, exp.Table):
        # (in FROM it is both engines' table function, which streams its rows)
        start, end = _number(node.args.get("start")), _number(node.args.get("end"))
        step = _number(node.args.get("step")) or 1
        return None if start is None or end is None else abs(end - start) / abs(step) * _ROW_BYTES
    if isinstance(node, exp.Anonymous) and node.name.lower() in ("range", "generate_series"):
        args = [_number(a) for a in node.expressions]
        if not args or any(a is None for a in args):
            return None
        start, end = (0, args[0]) if len(args) == 1 else (args[0], args[1])
        step = args[2] if len(args) > 2 and args[2] else 1
        return abs(end - start) / abs(step) * _ROW_BYTES
    return None


def _number(node: exp.Expression | None) -> float | None:
    """The value of a constant numeric expression (literals, signs, + - * /, casts), else None."""
    if node is None:
        return None
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    if isinstance(node, (exp.Paren, exp.Cast, exp.TryCast)):
        return _number(node.this)
    if isinstance(node, exp.Neg):
        value = _number(node.this)
        return None if value is None else -value
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div)):
        left, right = _number(node.this), _number(node.expression)
        if left is None or right is None:
            return None
        if isinstance(node, exp.Add):
            return left + right
        if isinstance(node, exp.Sub):
            return left - right
        if isinstance(node, exp.Mul):
            return left * right
        return left / right if right else None
    return None
