"""DuckDB's JSON functions as DataFusion scalar functions, so the federated engine (Arrow-accelerated
datasets, queries across sources) reads JSON text as the DuckDB route does: `payload ->> 'name'`
is planned as `json_extract_string(payload, '$."name"')` on both (see json_forms).

DataFusion has no JSON functions; each call here hands a whole batch to an in-memory DuckDB
(its JSON reader is vectorised C++), never a Python loop over rows."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Callable

import pyarrow as pa
import pyarrow.compute as pc
from datafusion import ScalarUDF, SessionContext, udf

if TYPE_CHECKING:  # DuckDB and sqlglot (json_forms) are imported at a function's first call:
    import duckdb  # a worker that runs none starts 90 ms sooner and holds 12 MiB less

# name: (DuckDB's expression over the columns a, b; the argument types; the result's type)
_FUNCTIONS: dict[str, tuple[str, list[pa.DataType], pa.DataType]] = {
    "json_extract": ("json_extract(a, b)::VARCHAR", [pa.string(), pa.string()], pa.string()),
    "json_extract_string": ("json_extract_string(a, b)", [pa.string(), pa.string()], pa.string()),
    "json_type": ("json_type(a)", [pa.string()], pa.string()),
    "json_array_length": ("json_array_length(a)::BIGINT", [pa.string()], pa.int64()),
    # lists a select list spreads into rows (json_forms: jsonb_array_elements(_text), jsonb_object_keys)
    "json_elements": ("json_extract(a, '$[*]')::VARCHAR[]", [pa.string()], pa.list_(pa.string())),
    "json_elements_text": ("json_extract_string(a, '$[*]')", [pa.string()], pa.list_(pa.string())),
    "json_keys": ("json_keys(a)", [pa.string()], pa.list_(pa.string())),
}
# name: (json_forms' builder of DuckDB's expression over the column a for a constant b, the
# result's type): jsonb's @> and ?, each test in one pass, where calls of the functions above took one each
_BY_CONSTANT: dict[str, tuple[str, pa.DataType]] = {
    "satchel_jsonb_contains": ("containment_sql", pa.bool_()),
    "satchel_jsonb_has_key": ("has_key_sql", pa.bool_()),
}

_CONNECTION: list[duckdb.DuckDBPyConnection] = []  # made on first use, in the process that calls
_MADE = threading.Lock()


def _cursor() -> duckdb.DuckDBPyConnection:
    """A cursor of the process's one in-memory DuckDB: DataFusion calls functions from several
    threads at once, and a cursor each lets them run in parallel."""
    import duckdb

    with _MADE:
        if not _CONNECTION:
            _CONNECTION.append(duckdb.connect(config={"threads": 1, "enable_external_access": False}))
    return _CONNECTION[0].cursor()


class JsonFunctionError(ValueError):
    """A value the JSON function cannot read (malformed JSON, a bad path)."""


def _batch_function(name: str, expression: str, result_type: pa.DataType) -> Callable[..., pa.Array]:
    def run(*columns: pa.Array) -> pa.Array:
        import duckdb

        table = pa.table({"ab"[i]: column for i, column in enumerate(columns)})
        try:
            cursor = _cursor()
            try:
                result = cursor.from_arrow(table).project(expression).to_arrow_table()
            finally:
                cursor.close()
        except duckdb.Error as e:
            # DuckDB's reason, without the value it quotes (data does not belong in errors)
            reason = str(e).splitlines()[0].split("  Input:")[0].removeprefix("Invalid Input Error: ")
            if reason.startswith("Malformed JSON"):
                raise JsonFunctionError(f"a value read as JSON is not JSON ({reason.rstrip('.')})") from None
            raise JsonFunctionError(f"{name}(): {reason}") from None
        column = result.column(0).combine_chunks()
        # a list's field is named as declared (DuckDB's `l`; pyarrow's == does not compare the names)
        return column.view(result_type) if pa.types.is_list(result_type) else column
    return run


def _by_constant(name: str, builder: str, result: pa.DataType) -> Callable[..., pa.Array]:
    """The function of a column and a constant (its needle, its key): DuckDB's expression for
    that constant, made once per constant, over the column."""
    made: dict[str, Callable[..., pa.Array]] = {}

    def run(values: pa.Array, constants: pa.Array) -> pa.Array:
        if len(constants) == 0:
            return pa.array([], pa.bool_())
        constant = constants[0].as_py()
        if constants.null_count or not pc.all(pc.equal(constants, constant)).as_py():
            raise JsonFunctionError(f"{name}(): its second argument must be a constant")
        if constant not in made:
            if len(made) >= 256:  # a worker lives long: the needles of past queries go
                made.clear()
            from . import json_forms

            try:
                made[constant] = _batch_function(name, getattr(json_forms, builder)(constant), result)
            except ValueError:
                raise JsonFunctionError(f"{name}(): its second argument is not JSON") from None
        return made[constant](values)
    return run


@functools.cache
def _made() -> list[ScalarUDF]:
    """The functions, made once per process (making them took 6x a session's own start)."""
    return [*(udf(_batch_function(name, expression, result), arguments, result, "immutable", name)
              for name, (expression, arguments, result) in _FUNCTIONS.items()),
            *(udf(_by_constant(name, builder, result), [pa.string(), pa.string()], result, "immutable", name)
              for name, (builder, result) in _BY_CONSTANT.items())]


def register(ctx: SessionContext) -> None:
    for function in _made():
        ctx.register_udf(function)
