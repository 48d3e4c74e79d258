"""DuckDB's errors for what it lacks of PostgreSQL, said as what to write instead (DataFusion's
are in federated._ADVICE): a PostgreSQL function DuckDB does not have runs over live
PostgreSQL tables; jsonb's @> and ? that it cannot write run there as written."""

from __future__ import annotations

import re

import duckdb

from ..errors import SqlError
from .postgres_functions import ALLOWED

_NO_FUNCTION = re.compile(r"Scalar Function with name (\w+) does not exist!(?:\s*Did you mean \"([\w.]+)\"\?)?")
_CONTAINMENT = re.compile(r"No function matches the given name and argument types '(@>|<@)\(VARCHAR")
_KEY_TEST = re.compile(r'syntax error at or near "(\?[|&]?)"')  # (parameters are bound before DuckDB sees SQL)


def explained(error: duckdb.Error) -> Exception:
    """The error a client gets for DuckDB's `error`: with advice when there is some, else as it is."""
    text = str(error)
    if (found := _NO_FUNCTION.search(text)) is not None:
        name, close = found[1], found[2]
        return SqlError(f"function {name}() does not exist in DuckDB (DuckDB-accelerated datasets, and queries naming "
                        f"no table)" + (f"; did you mean {close}()?" if close else "")
                        + ("; it runs over live PostgreSQL tables (the whole query goes to PostgreSQL)"
                           if name.lower() in ALLOWED else ""))
    if (found := _CONTAINMENT.search(text)) is not None:
        return SqlError(f"the JSON operator {found[1]} runs in DuckDB only with constant JSON whose arrays list only "
                        f"scalars (payload @> '{{\"status\": \"active\"}}', tags @> '[\"x\"]'); it runs as written over "
                        f"live PostgreSQL tables")
    if (found := _KEY_TEST.search(text)) is not None:
        return SqlError(f"the JSON operator {found[1]} runs in DuckDB only with constant keys (payload ? 'k', "
                        f"payload ?| ARRAY['a', 'b']); it runs as written over live PostgreSQL tables")
    return error
