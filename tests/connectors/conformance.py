"""Connector conformance suite: one set of tests every connector must pass.

Every check compares a connector with DuckDB over a known reference table: the connector's
source is loaded with `reference_table(columns)`, and each scan (projection x filters x limit)
must give what DuckDB gives over the reference, exactly as the engine will use it:

- the engine re-applies every filter, so `duckdb(connector output WHERE all filters)` must
  equal `duckdb(reference WHERE all filters)` (sorted multisets);
- filters the connector classifies EXACT must really be applied: the raw output equals
  `reference WHERE <exact filters>` (a connector may not drop rows, nor skip an exact filter);
- a limit (only ever passed when every filter is exact) returns min(limit, matches) rows, all
  of them matches;
- the schema carries the reference's names and types, and the pod's column descriptions.

Adding a connector (postgres, mongodb, elasticsearch, iceberg, ...)
-------------------------------------------------------------------
1. Write a builder `def build(request) -> Source` that loads `reference_table(COLUMNS)` into
   the source (servers come from fixtures: `request.getfixturevalue("postgres_server")`) and
   returns a `Source` whose `make(descriptions)` creates the connector over it, plus the bad
   configurations it must reject clearly (`ErrorCase`) and any secret strings that must never
   appear in errors or logs.
2. Declare the case, with the reference columns the source can carry:

       class TestPostgresConformance(ConformanceSuite):
           pytestmark = pytest.mark.integration
           cases = [ConformanceCase("postgres", ALL_COLUMNS, build=build_postgres)]

   in a uniquely named module (tests/connectors/test_postgres_conformance.py). The suite's
   `pytest_generate_tests` expands every test over the cases and the scenarios that apply to
   their columns.
3. Optional capabilities add their suites as mixins: `TopNSuite` (the connector implements
   `classify_order` and `scan(..., order_by=...)`: top-N rows checked against DuckDB's
   ORDER BY ... LIMIT) and `CountSuite` (`count(filters)` checked), e.g.
   `class TestMongoConformance(ConformanceSuite, TopNSuite, CountSuite)`.
4. A gap is declared, never skipped: `gaps={"test_filters:s-like-*": "reason"}` (fnmatch over
   `<test name>:<param id>`) marks those tests `xfail(strict=True)`; a tuple
   `(reason, ExceptionType)` adds `raises=`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import fnmatch
import functools
import logging
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import duckdb
import pyarrow as pa
import pytest

from connectors.base import Connector, Filter, FilterSupport, SortKey, description_of, filter_columns
from engine.errors import ConnectorError, SatchelError

# -- the reference data --------------------------------------------------------------------

COLUMN_TYPES: dict[str, pa.DataType] = {
    "id": pa.int64(),
    "i8": pa.int8(),
    "i16": pa.int16(),
    "i32": pa.int32(),
    "i64": pa.int64(),
    "u8": pa.uint8(),
    "u16": pa.uint16(),
    "u32": pa.uint32(),
    "u64": pa.uint64(),
    "f32": pa.float32(),
    "f64": pa.float64(),
    "dec": pa.decimal128(12, 3),
    "s": pa.string(),
    "b": pa.bool_(),
    "d": pa.date32(),
    "ts": pa.timestamp("us"),
    "tstz": pa.timestamp("us", "UTC"),
    "bin": pa.binary(),
}
ALL_COLUMNS = tuple(COLUMN_TYPES)
# What text formats carry with type inference (CSV: pyarrow's; JSON: ISO strings for time).
CSV_COLUMNS = ("id", "i64", "f64", "s", "b", "d", "ts", "tstz")
JSON_COLUMNS = CSV_COLUMNS

ROWS = 40
UTC = dt.timezone.utc
_INT_EXTREMES = {
    "i8": (-(2**7), 2**7 - 1), "i16": (-(2**15), 2**15 - 1), "i32": (-(2**31), 2**31 - 1), "i64": (-(2**63), 2**63 - 1),
    "u8": (0, 2**8 - 1), "u16": (0, 2**16 - 1), "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1),
}
_STRINGS = ["", "a", "A", "abc", "a%c", "a_c", "a\\c", "é", "日本語", "🙂 emoji", "line\nbreak", 'quo"te',
            "comma, here", " lead", "NA", "null", "z"]
_FLOATS = [0.0, -0.0, 1.5, -2.25, 0.1, 1e10, 3.0, 1.0, math.nan, math.inf, -math.inf]
_DECIMALS = ["0.000", "-1.500", "2.250", "12345.678", "0.100", "-0.001", "1.000"]
_DATES = [dt.date(1970, 1, 1), dt.date(1969, 12, 31), dt.date(2000, 2, 29), dt.date(2024, 1, 15), dt.date(2024, 2, 29),
          dt.date(2038, 1, 19)]
_TIMES = [dt.datetime(2024, 1, 15, 12, 0, 0, 123456), dt.datetime(1970, 1, 1), dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
          dt.datetime(2024, 1, 15, 12, 0), dt.datetime(2030, 6, 1, 8, 30, 15), dt.datetime(2024, 1, 15, 11, 59, 59)]
_BINARY = [b"", b"\x00", b"\x00\xff", b"abc", b"\xff", b"ab"]


def _column_values(name: str, rng: random.Random, nan: bool) -> list[Any]:
    """ROWS values for a reference column: extremes and every pool value first, then random
    draws from the small pool (so = and in match several rows), about one in seven NULL."""
    if name == "id":
        return list(range(ROWS))
    if name in _INT_EXTREMES:
        lo, hi = _INT_EXTREMES[name]
        pool = [v for v in (-3, -1, 0, 1, 2, 3, 42) if lo <= v <= hi]
        head: list[Any] = [lo, hi, None]
    elif name in ("f32", "f64"):
        pool = [f for f in _FLOATS if nan or math.isfinite(f)]
        head = [None, -0.0, 0.0] + ([math.nan, math.inf] if nan else [])
    elif name == "dec":
        pool, head = [decimal.Decimal(x) for x in _DECIMALS], [None]
    elif name == "s":
        pool, head = _STRINGS, [None, ""]
    elif name == "b":
        pool, head = [True, False], [None]
    elif name == "d":
        pool, head = _DATES, [None]
    elif name == "ts":
        pool, head = _TIMES, [None]
    elif name == "tstz":
        pool, head = [t.replace(tzinfo=UTC) for t in _TIMES], [None]
    elif name == "bin":
        pool, head = _BINARY, [None]
    else:
        raise KeyError(name)
    head = head + list(pool)  # every special value at least once
    values = head + [None if rng.random() < 0.14 else rng.choice(pool) for _ in range(ROWS - len(head))]
    if name == "f32":
        values = [v if v is None else float(pa.scalar(v, pa.float32()).as_py()) for v in values]
    return values


def reference_table(columns: Sequence[str] = ALL_COLUMNS, nan: bool = True) -> pa.Table:
    """The reference rows for `columns` (a stable function of its arguments); `nan=False`
    leaves out NaN and infinities, which JSON cannot carry."""
    if "id" not in columns:
        raise ValueError("the reference needs its 'id' column")
    arrays = {}
    for name in columns:
        rng = random.Random(f"satchel-{name}")
        arrays[name] = pa.array(_column_values(name, rng, nan), type=COLUMN_TYPES[name])
    return pa.table(arrays)


@functools.lru_cache(maxsize=None)
def _cached_reference(columns: tuple[str, ...], nan: bool) -> pa.Table:
    return reference_table(columns, nan)


DESCRIPTIONS = {"id": "Row number; unique.", "s": "Free text — unicode ✓"}


# -- cases ---------------------------------------------------------------------------------

@dataclass
class ErrorCase:
    """A bad configuration and the clear error it must raise (at creation, schema() or scan)."""

    id: str
    make: Callable[[], Connector]
    match: str  # regex searched in the message
    raises: type[SatchelError] = ConnectorError


@dataclass
class Source:
    """A loaded source: how to create the connector over it, and how to break it."""

    make: Callable[[Mapping[str, str]], Connector]  # column descriptions -> connector
    errors: Sequence[ErrorCase] = ()
    secrets: Sequence[str] = ()  # must never appear in error messages or logs
    dataset: str = "reference"  # the dataset name the connector was given


@dataclass
class ConformanceCase:
    """One source holding `reference_table(columns, nan)`; `build(request)` loads it."""

    id: str
    columns: Sequence[str]
    build: Callable[[pytest.FixtureRequest], Source]
    nan: bool = True
    gaps: Mapping[str, str | tuple[str, type[BaseException]]] = field(default_factory=dict)

    @property
    def reference(self) -> pa.Table:
        return _cached_reference(tuple(self.columns), self.nan)


# -- scenarios -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    id: str
    filters: tuple[Filter, ...]

    @property
    def columns(self) -> set[str]:
        return set().union(*(filter_columns(f) for f in self.filters))


def _f(column: str, op: str, value: Any = None) -> Filter:
    return Filter(column, op, value)


_TS = dt.datetime(2024, 1, 15, 12, 0)
_IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
_TSTZ = _TS.replace(tzinfo=UTC)
# Per column: a value for the comparisons, values for in / not in.
_PROBES: dict[str, tuple[Any, tuple, tuple]] = {
    "i8": (1, (-1, 1, 99), (0, 1)),
    "i32": (1, (-1, 1, 99), (0, 1)),
    "i64": (1, (-1, 1, 99), (0, 1)),
    "u64": (2, (0, 3, 2**64 - 1), (0, 1)),
    "f32": (1.5, (1.5, 0.0, 0.1), (1.5, 0.1)),
    "f64": (1.5, (1.5, 0.0, 7.0), (1.5, 0.0)),
    "dec": (decimal.Decimal("1.000"), (decimal.Decimal("0.100"), decimal.Decimal("-1.5")), (decimal.Decimal("2.25"),)),
    "s": ("a", ("a", "", "NA", "é"), ("a", "")),
    "b": (False, (True,), (True,)),
    "d": (dt.date(2024, 1, 15), (dt.date(1970, 1, 1), dt.date(2024, 2, 29)), (dt.date(2000, 2, 29),)),
    "ts": (_TS, (_TS, dt.datetime(1970, 1, 1)), (dt.datetime(1970, 1, 1),)),
    "tstz": (_TSTZ, (_TSTZ, dt.datetime(1970, 1, 1, tzinfo=UTC)), (_TSTZ,)),
    "bin": (b"ab", (b"abc", b""), (b"\x00",)),
}
_LIKE = ["a%", "%c", "a_c", "_", "a\\c", "%\n%", "%é%", "%", "", "A%", "%\\%%"]


def _scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    for col, (value, in_values, not_in_values) in _PROBES.items():
        for op in ("=", "!=", "<", "<=", ">", ">="):
            out.append(Scenario(f"{col}{op}", (_f(col, op, value),)))
        out += [
            Scenario(f"{col}-in", (_f(col, "in", in_values),)),
            Scenario(f"{col}-not_in", (_f(col, "not_in", not_in_values),)),
            Scenario(f"{col}-is_null", (_f(col, "is_null"),)),
            Scenario(f"{col}-is_not_null", (_f(col, "is_not_null"),)),
        ]
    out += [Scenario(f"s-like-{i}", (_f("s", "like", p),)) for i, p in enumerate(_LIKE)]
    out += [Scenario(f"s-not_like-{i}", (_f("s", "not_like", p),)) for i, p in enumerate(_LIKE[:5])]
    out += [
        # NaN, -0.0 and infinities against SQL ordering
        Scenario("f64>0", (_f("f64", ">", 0.0),)),
        Scenario("f64>=inf", (_f("f64", ">=", math.inf),)),
        Scenario("f64<-inf", (_f("f64", "<", -math.inf),)),
        Scenario("f64=-0.0", (_f("f64", "=", -0.0),)),
        Scenario("f64=nan", (_f("f64", "=", math.nan),)),
        Scenario("f64>nan", (_f("f64", ">", math.nan),)),
        # value coercion: exact where possible, never silently wrong
        Scenario("f64>int", (_f("f64", ">", 1),)),
        Scenario("f64=int", (_f("f64", "=", 3),)),
        Scenario("f32>int", (_f("f32", ">", 1),)),
        Scenario("f32=0.1", (_f("f32", "=", 0.1),)),
        Scenario("f64<huge-int", (_f("f64", "<", 2**60 + 1),)),
        Scenario("f64-in-ints", (_f("f64", "in", (1, 3)),)),
        Scenario("i64>1.5", (_f("i64", ">", 1.5),)),
        Scenario("i32>1.5", (_f("i32", ">", 1.5),)),
        Scenario("i64=2.0", (_f("i64", "=", 2.0),)),
        Scenario("i8<1000", (_f("i8", "<", 1000),)),
        Scenario("i64>decimal", (_f("i64", ">", decimal.Decimal("1")),)),
        Scenario("i64=bool", (_f("i64", "=", True),)),
        Scenario("u64>2^63", (_f("u64", ">", 2**63),)),
        Scenario("dec>int", (_f("dec", ">", 1),)),
        Scenario("dec=float", (_f("dec", "=", 2.25),)),
        Scenario("dec<fine-decimal", (_f("dec", "<", decimal.Decimal("0.0005")),)),
        Scenario("d>=str", (_f("d", ">=", "2000-02-29"),)),
        Scenario("d<datetime", (_f("d", "<", dt.datetime(2024, 1, 15, 1)),)),
        Scenario("ts>=date", (_f("ts", ">=", dt.date(2024, 1, 15)),)),
        Scenario("ts>aware", (_f("ts", ">", _TSTZ),)),
        Scenario("tstz>naive", (_f("tstz", ">", _TS),)),
        Scenario("tstz>=+05:30", (_f("tstz", ">=", dt.datetime(2024, 1, 15, 17, 30, tzinfo=_IST)),)),
        Scenario("ts<fraction", (_f("ts", "<", dt.datetime(2024, 1, 15, 12, 0, 0, 123457)),)),
        Scenario("b=int", (_f("b", "=", 1),)),
        Scenario("s=null", (_f("s", "=", None),)),
        Scenario("i64-in-null", (_f("i64", "in", (1, None)),)),
        Scenario("i64-not_in-null", (_f("i64", "not_in", (2, None)),)),
        # conjunctions, and exact mixed with filters a source may not take
        Scenario("and-exact", (_f("i64", ">=", 0), _f("s", "is_not_null"), _f("b", "=", True))),
        Scenario("and-mixed", (_f("s", "like", "a%"), _f("i64", ">", 1.5), _f("f64", ">", 0.0))),
        Scenario("and-mixed-2", (_f("d", ">=", "2000-02-29"), _f("b", "=", 1), _f("ts", "is_not_null"))),
        Scenario("and-empty", (_f("id", "<", 10), _f("id", ">", 20))),
        Scenario("id-range", (_f("id", ">=", 5), _f("id", "<", 15))),
        # composites: OR / NOT / nested AND under SQL's three-valued logic (NULL -> dropped)
        Scenario("or-2", (_or(_f("i64", "=", 1), _f("s", "=", "a")),)),
        Scenario("or-same-column", (_or(_f("i64", "<", 0), _f("i64", ">", 5)),)),
        Scenario("or-nulls", (_or(_f("s", "=", "a"), _f("f64", ">", 1.5)),)),
        Scenario("or-is_null", (_or(_f("s", "is_null"), _f("i64", "=", 1)),)),
        Scenario("or-and", (_or(_and(_f("i64", ">=", 0), _f("b", "=", True)), _f("s", "is_null")),)),
        Scenario("not-eq", (_not(_f("i64", "=", 1)),)),
        Scenario("not-lt", (_not(_f("f64", "<", 1.5)),)),
        Scenario("not-in", (_not(_f("i64", "in", (1, 99))),)),
        Scenario("not-like", (_not(_f("s", "like", "a%")),)),
        Scenario("not-is_null", (_not(_f("s", "is_null")),)),
        Scenario("not-or", (_not(_or(_f("i64", "<", 0), _f("s", "like", "a%"))),)),
        Scenario("not-and", (_not(_and(_f("d", ">=", dt.date(2000, 2, 29)), _f("d", "<", dt.date(2024, 1, 15)))),)),
        Scenario("not-not", (_not(_not(_f("f64", ">", 0.0))),)),
        Scenario("or-nan", (_or(_f("f64", "=", math.nan), _f("i32", "=", 1)),)),
        Scenario("or-with-and-conjunct", (_or(_f("ts", ">=", _TS), _f("b", "=", False)), _f("id", "<", 40))),
    ]
    return out


def _or(*parts: Filter) -> Filter:
    return Filter("", "or", parts)


def _and(*parts: Filter) -> Filter:
    return Filter("", "and", parts)


def _not(part: Filter) -> Filter:
    return Filter("", "not", (part,))


SCENARIOS = _scenarios()
_SCENARIO_INDEX = {s.id: i for i, s in enumerate(SCENARIOS)}
assert len(_SCENARIO_INDEX) == len(SCENARIOS), "scenario ids must be unique"
PROJECTIONS = ("all", "subset", "reordered")
LIMIT_SCENARIOS = ("none", "id-range", "s-like-0", "and-exact", "f64>0", "and-empty")
LIMITS = (0, 1, 7, 1000)
# Top-N orderings: (id, sort keys, filters scenario or None)
ORDERINGS: tuple[tuple[str, tuple[SortKey, ...], str | None], ...] = (
    ("id-asc", (SortKey("id"),), None),
    ("id-desc", (SortKey("id", True, True),), None),
    ("i64-asc-nulls-last", (SortKey("i64"), SortKey("id")), None),
    ("i64-asc-nulls-first", (SortKey("i64", False, True), SortKey("id")), None),
    ("i64-desc-nulls-first", (SortKey("i64", True, True), SortKey("id")), None),
    ("i64-desc-nulls-last", (SortKey("i64", True, False), SortKey("id")), None),
    ("s-asc", (SortKey("s"), SortKey("id")), None),
    ("f64-desc", (SortKey("f64", True, True), SortKey("id")), None),
    ("ts-asc-filtered", (SortKey("ts"), SortKey("id")), "id-range"),
    ("d-desc-filtered", (SortKey("d", True, True), SortKey("id")), "and-exact"),
)
ORDER_LIMITS = (1, 5, 1000)


def applicable(case: ConformanceCase) -> list[Scenario]:
    return [s for s in SCENARIOS if s.columns <= set(case.columns)]


def projection_of(kind: str, columns: Sequence[str]) -> list[str] | None:
    """None (all), a subset (every other column, id first), or all columns reversed."""
    if kind == "all":
        return None
    if kind == "subset":
        return ["id"] + [c for c in columns[1::2] if c != "id"]
    return list(reversed(columns))


# -- the DuckDB oracle ---------------------------------------------------------------------

_SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _param(value: Any) -> tuple[str, Any]:
    """A placeholder and its value (aware datetimes travel as TIMESTAMPTZ text)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return "CAST(? AS TIMESTAMPTZ)", value.isoformat()
    return "?", value


def where_sql(filters: Iterable[Filter]) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) the engine means by `filters`."""
    parts: list[str] = []
    params: list[Any] = []
    for f in filters:
        col = _ident(f.column)
        if f.op in ("and", "or", "not"):
            inner = [where_sql([p]) for p in f.value]
            joined = f" {f.op.upper()} ".join(f"({sql})" for sql, _ in inner)
            parts.append(f"(NOT ({joined}))" if f.op == "not" else f"({joined})")
            params += [v for _, values in inner for v in values]
        elif f.op in _SQL_OPS:
            mark, value = _param(f.value)
            parts.append(f"{col} {_SQL_OPS[f.op]} {mark}")
            params.append(value)
        elif f.op in ("in", "not_in"):
            marks, values = zip(*(_param(v) for v in f.value))
            parts.append(f"{col} {'IN' if f.op == 'in' else 'NOT IN'} ({', '.join(marks)})")
            params += list(values)
        elif f.op in ("is_null", "is_not_null"):
            parts.append(f"{col} IS {'NOT ' if f.op == 'is_not_null' else ''}NULL")
        else:
            parts.append(f"{col} {'LIKE' if f.op == 'like' else 'NOT LIKE'} ?")
            params.append(f.value)
    return " AND ".join(parts) or "TRUE", params


def _normalize(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    return value


_oracle: duckdb.DuckDBPyConnection | None = None


def duckdb_rows(table: pa.Table, columns: Sequence[str], filters: Iterable[Filter] = ()) -> Counter:
    """`SELECT columns FROM table WHERE filters` in DuckDB, as a multiset of row tuples."""
    return duckdb_queries(table, [(columns, filters)])[0]


def duckdb_queries(table: pa.Table, queries: Sequence[tuple[Sequence[str], Iterable[Filter]]]) -> list[Counter]:
    """Several `SELECT columns FROM table WHERE filters` over one table.

    The rows are copied into a DuckDB table first: DuckDB pushes filters on a registered Arrow
    table down into pyarrow, which would bring pyarrow's NaN semantics into the oracle.
    """
    con = _oracle_with(table)
    results = []
    for columns, filters in queries:
        where, params = where_sql(filters)
        select = ", ".join(_ident(c) for c in columns)
        result = con.execute(f"SELECT {select} FROM t WHERE {where}", params).to_arrow_table()
        results.append(Counter(tuple(_normalize(v) for v in row.values()) for row in result.to_pylist()))
    return results


def _oracle_with(table: pa.Table) -> duckdb.DuckDBPyConnection:
    """The oracle connection with `table` copied into its table `t`."""
    global _oracle
    if _oracle is None:
        _oracle = duckdb.connect()
        _oracle.execute("SET TimeZone = 'UTC'")
    _oracle.register("arrow_input", table)
    try:
        _oracle.execute("CREATE OR REPLACE TEMP TABLE t AS SELECT * FROM arrow_input")
    finally:
        _oracle.unregister("arrow_input")
    return _oracle


_reference_cache: dict[tuple, Counter] = {}


def reference_rows(case: ConformanceCase, columns: Sequence[str], filters: Sequence[Filter] = ()) -> Counter:
    """`duckdb_rows` over the case's reference, memoized (cases share reference tables)."""
    key = (tuple(case.columns), case.nan, tuple(columns), repr(list(filters)))
    if key not in _reference_cache:
        _reference_cache[key] = duckdb_rows(case.reference, columns, filters)
    return _reference_cache[key]


def diff(got: Counter, want: Counter, limit: int = 5) -> str:
    missing = list((want - got).elements())[:limit]
    extra = list((got - want).elements())[:limit]
    n_missing, n_extra = sum((want - got).values()), sum((got - want).values())
    return f"missing {n_missing} row(s), e.g. {missing}; extra {n_extra}, e.g. {extra}"


def read(reader: pa.RecordBatchReader) -> pa.Table:
    """Drain a connector reader (checking it streams batches of its declared schema)."""
    batches = []
    for batch in reader:
        assert batch.schema.equals(reader.schema), f"batch schema {batch.schema} != reader schema {reader.schema}"
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


# -- the suite -----------------------------------------------------------------------------

class ConformanceSuite:
    """Subclass as `Test<Name>Conformance` and set `cases`; every test runs for every case."""

    cases: Sequence[ConformanceCase] = ()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "case" not in metafunc.fixturenames:
            return
        name = metafunc.function.__name__
        axes: dict[str, Callable[[ConformanceCase], Sequence[tuple[str, Any]]]] = {
            "scenario": lambda c: [(s.id, s) for s in applicable(c)],
            "projection": lambda c: [(p, p) for p in PROJECTIONS],
            "limited": lambda c: [(f"{sid}-limit{n}", (sid, n)) for sid in LIMIT_SCENARIOS for n in LIMITS
                                  if sid == "none" or any(s.id == sid for s in applicable(c))],
            "ordered": lambda c: [(f"{oid}-limit{n}", (keys, sid, n)) for oid, keys, sid in ORDERINGS for n in ORDER_LIMITS
                                  if {k.column for k in keys} <= set(c.columns)
                                  and (sid is None or any(s.id == sid for s in applicable(c)))],
            "counted": lambda c: [(s.id, s) for s in applicable(c)][::3],
        }
        axis = next((a for a in axes if a in metafunc.fixturenames), None)
        params = []
        for case in self.cases:
            values = axes[axis](case) if axis else [("", None)]
            for value_id, value in values:
                pid = f"{case.id}-{value_id}" if value_id else case.id
                marks = _gap_marks(case, f"{name}:{value_id}" if value_id else name)
                args = (case, value) if axis else (case,)
                params.append(pytest.param(*args, id=pid, marks=marks))
        metafunc.parametrize(["case", axis] if axis else ["case"], params)

    # -- fixtures --

    @pytest.fixture(scope="class")
    @classmethod
    def _connectors(cls):
        cache: dict[str, tuple[Source, Connector]] = {}
        yield cache
        for _, conn in cache.values():
            conn.close()

    @pytest.fixture
    def source(self, case: ConformanceCase, request: pytest.FixtureRequest, _connectors) -> Source:
        if case.id not in _connectors:
            src = case.build(request)
            descriptions = {k: v for k, v in DESCRIPTIONS.items() if k in case.columns}
            _connectors[case.id] = (src, src.make(descriptions))
        return _connectors[case.id][0]

    @pytest.fixture
    def connector(self, case: ConformanceCase, source: Source, _connectors) -> Connector:
        return _connectors[case.id][1]

    # -- schema and types --

    def test_schema(self, case: ConformanceCase, connector: Connector) -> None:
        schema = connector.schema()
        reference = case.reference.schema
        assert schema.names == reference.names
        for f in reference:
            assert schema.field(f.name).type == f.type, f"column {f.name}: {schema.field(f.name).type} != {f.type}"
        for f in schema:
            assert description_of(f) == DESCRIPTIONS.get(f.name), f"description of {f.name}"
        assert connector.schema().equals(schema, check_metadata=True), "schema changed between calls"

    def test_full_scan_round_trips_every_type(self, case: ConformanceCase, connector: Connector) -> None:
        table = read(connector.scan())
        reference = case.reference
        assert table.schema.equals(connector.schema(), check_metadata=True)
        assert table.num_rows == reference.num_rows
        table = table.sort_by("id")
        for name in reference.column_names:
            got = [_normalize(v) for v in table[name].to_pylist()]
            want = [_normalize(v) for v in reference[name].to_pylist()]
            bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w or type(g) is not type(w)]
            assert not bad, f"column {name} ({reference.schema.field(name).type}): (id, got, want) {bad[:5]}"

    def test_projection(self, case: ConformanceCase, connector: Connector, projection: str) -> None:
        columns = projection_of(projection, case.columns)
        table = read(connector.scan(columns))
        expected = columns or list(case.columns)
        assert table.column_names == expected
        assert table.schema.equals(pa.schema([connector.schema().field(c) for c in expected]), check_metadata=True)
        assert duckdb_rows(table, expected) == reference_rows(case, expected)

    def test_count_only_projection(self, case: ConformanceCase, connector: Connector) -> None:
        table = read(connector.scan([], [Filter("id", "<", 10)]))
        assert table.num_columns == 0
        support = connector.classify_filters([Filter("id", "<", 10)])
        assert table.num_rows == (10 if support[0] is FilterSupport.EXACT else case.reference.num_rows)

    # -- filters --

    def test_filters(self, case: ConformanceCase, connector: Connector, scenario: Scenario) -> None:
        filters = list(scenario.filters)
        support = connector.classify_filters(filters)
        assert len(support) == len(filters) and all(isinstance(s, FilterSupport) for s in support)
        projection = projection_of(PROJECTIONS[_SCENARIO_INDEX[scenario.id] % len(PROJECTIONS)], case.columns)
        wanted = list(projection or case.columns)
        scan_columns = None if projection is None else wanted + sorted(scenario.columns - set(wanted))
        output = read(connector.scan(scan_columns, filters))
        out_columns = output.column_names
        # what the engine does: re-apply every filter over the connector's rows
        got, raw = duckdb_queries(output, [(wanted, filters), (out_columns, ())])
        want = reference_rows(case, wanted, filters)
        assert got == want, f"engine result differs ({[s.value for s in support]}): {diff(got, want)}"
        # filters classified EXACT were applied by the connector, and no matching row was dropped
        exact = [f for f, s in zip(filters, support) if s is FilterSupport.EXACT]
        applied = reference_rows(case, out_columns, exact)
        if all(s is not FilterSupport.INEXACT for s in support):
            assert raw == applied, f"connector output != reference WHERE exact filters: {diff(raw, applied)}"
        else:
            assert not (raw - applied), f"connector returned rows an EXACT filter excludes: {diff(raw, applied)}"
            assert not (reference_rows(case, out_columns, filters) - raw), "connector dropped matching rows"

    def test_limit(self, case: ConformanceCase, connector: Connector, limited: tuple[str, int]) -> None:
        scenario_id, limit = limited
        filters = [] if scenario_id == "none" else list(next(s for s in SCENARIOS if s.id == scenario_id).filters)
        support = connector.classify_filters(filters)
        if any(s is not FilterSupport.EXACT for s in support):
            pytest.skip("the connector does not apply these filters exactly, so the engine never pushes a limit")
        columns = list(case.columns)
        output = read(connector.scan(None, filters, limit))
        matching = reference_rows(case, columns, filters)
        got = duckdb_rows(output, columns)
        assert output.num_rows == min(limit, sum(matching.values()))
        assert not (got - matching), f"limited rows that do not match: {diff(got, matching)}"

    def test_repeated_scans_are_stable(self, case: ConformanceCase, connector: Connector) -> None:
        filters = [Filter("id", ">=", 3)]
        first = duckdb_rows(read(connector.scan(["id", "s"] if "s" in case.columns else ["id"], filters)), ["id"])
        second = duckdb_rows(read(connector.scan(["id", "s"] if "s" in case.columns else ["id"], filters)), ["id"])
        assert first == second

    def test_unknown_column_is_a_clear_error(self, case: ConformanceCase, connector: Connector, source: Source) -> None:
        with pytest.raises(ConnectorError, match="no_such_column"):
            read(connector.scan(["id", "no_such_column"]))
        support = connector.classify_filters([Filter("no_such_column", "=", 1)])
        assert support == [FilterSupport.UNSUPPORTED]

    # -- errors --

    def test_clear_errors(self, case: ConformanceCase, source: Source, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        assert source.errors, "a case must list the bad configurations its connector rejects"
        failures = []
        for err in source.errors:
            try:
                conn = err.make()
                conn.schema()
                read(conn.scan())
            except SatchelError as e:
                message = str(e)
                if not isinstance(e, err.raises):
                    failures.append(f"{err.id}: raised {type(e).__name__}, expected {err.raises.__name__}: {message}")
                elif not re.search(err.match, message):
                    failures.append(f"{err.id}: message {message!r} does not match {err.match!r}")
                elif f"'{source.dataset}'" not in message:
                    failures.append(f"{err.id}: message does not name the dataset: {message!r}")
                leaked = [s for s in source.secrets if s in message]
                if leaked:
                    failures.append(f"{err.id}: message leaks a secret: {message!r}")
            except Exception as e:  # noqa: BLE001 - a raw library error is the failure we look for
                failures.append(f"{err.id}: raised a raw {type(e).__name__}: {e}")
            else:
                failures.append(f"{err.id}: no error raised")
        logged = caplog.text
        failures += [f"a secret appears in the logs: {s[:3]}..." for s in source.secrets if s in logged]
        assert not failures, "\n".join(failures)


class TopNSuite:
    """Mixin for connectors that return ordered top-N rows (classify_order + scan(order_by=))."""

    def test_ordered_limit(self, case: ConformanceCase, connector: Connector, ordered) -> None:
        """Sources that say they order (classify_order) return exactly the top n rows."""
        keys, scenario_id, limit = ordered
        filters = [] if scenario_id is None else list(next(s for s in SCENARIOS if s.id == scenario_id).filters)
        support = connector.classify_filters(filters)
        if not connector.classify_order(list(keys)):
            pytest.skip("the source does not order by these keys: the engine sorts, no limit is pushed")
        if any(s is not FilterSupport.EXACT for s in support):
            pytest.skip("the filters are not all exact: the engine pushes no limit")
        columns = list(case.columns)
        output = read(connector.scan(columns, filters, limit, order_by=list(keys)))
        where, params = where_sql(filters)
        order = ", ".join(f"{_ident(k.column)} {'DESC' if k.descending else 'ASC'} NULLS {'FIRST' if k.nulls_first else 'LAST'}"
                          for k in keys)
        con = _oracle_with(case.reference)
        want = con.execute(f"SELECT id FROM t WHERE {where} ORDER BY {order} LIMIT {limit}", params).to_arrow_table()
        got_ids = output.column("id").to_pylist()
        assert got_ids == want.column("id").to_pylist(), f"top-{limit} by {order}: got ids {got_ids[:10]}..."


class CountSuite:
    """Mixin for connectors that count at the source (count(filters))."""

    def test_count(self, case: ConformanceCase, connector: Connector, counted: Scenario) -> None:
        """Sources that count (count(filters)) count exactly what the filters select."""
        filters = list(counted.filters)
        support = connector.classify_filters(filters)
        if any(s is not FilterSupport.EXACT for s in support):
            pytest.skip("the filters are not all exact: the engine counts scanned rows itself")
        assert connector.count(filters) == sum(reference_rows(case, ["id"], filters).values())


def _gap_marks(case: ConformanceCase, key: str) -> list[pytest.MarkDecorator]:
    for pattern, gap in case.gaps.items():
        if fnmatch.fnmatchcase(key, pattern):
            reason, raises = (gap, None) if isinstance(gap, str) else gap
            return [pytest.mark.xfail(strict=True, reason=reason, raises=raises)]
    return []
