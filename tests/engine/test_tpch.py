"""TPC-H (SF 0.01): the 22 standard queries, unchanged, through a real `satchel run` over Flight SQL.

One server holds the 8 tables three times, from the same Parquet files:

* `lineitem`, `orders`, ...            DuckDB-accelerated (whole query runs inside DuckDB);
* `lineitem_arrow`, `orders_arrow`, ... Arrow-accelerated (DataFusion over in-memory tables);
* `lineitem_fed`, `orders_fed`, ...     not accelerated (DataFusion over pushed-down file scans).

Each query's text comes from DuckDB's `tpch_queries()`; for the suffixed routes only the table
names are rewritten, in place (the rest of the text is byte-for-byte the standard one). Every
route must return DuckDB's reference answer (`tpch_answers()`): same column names, same rows,
in the same order wherever the query's ORDER BY fixes it, numbers equal within 1e-6 relative;
and every route returns the same column types. Default lane: Satchel itself is the only server
(about 10 s).
"""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
import math
import sys
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

SCALE_FACTOR = 0.01
TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")
ROUTES = {"duckdb": "", "arrow": "_arrow", "federated": "_fed"}
REL_TOL = 1e-6

_ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


def _start_satchel():
    """`start_satchel` from tests/conftest.py (session fixtures cannot use its function fixture)."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(_ROOT_CONFTEST) and hasattr(module, "start_satchel"):
            return module.start_satchel
    spec = importlib.util.spec_from_file_location("satchel_tests_root_conftest", _ROOT_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.start_satchel


def tpch_connection():
    """An in-memory DuckDB with the TPC-H extension loaded from the installed wheel (no network)."""
    import duckdb
    import duckdb_extension_tpch

    path = Path(duckdb_extension_tpch.__file__).parent / "extensions" / f"v{duckdb.__version__}" / "tpch.duckdb_extension"
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{path}'")
    return con


# -- fixtures --------------------------------------------------------------------------------


class TpchData:
    def __init__(self, directory: Path, queries: dict[int, str], answers: dict[int, str]) -> None:
        self.directory = directory
        self.queries = queries
        self.answers = answers


@pytest.fixture(scope="session")
def tpch_data(tmp_path_factory: pytest.TempPathFactory) -> TpchData:
    """TPC-H at SF 0.01 as one Parquet file per table, with the query texts and answers."""
    directory = tmp_path_factory.mktemp("tpch")
    con = tpch_connection()
    try:
        con.execute(f"CALL dbgen(sf={SCALE_FACTOR})")
        for table in TABLES:
            con.execute(f"COPY {table} TO '{directory / table}.parquet' (FORMAT parquet)")
        queries = dict(con.execute("SELECT query_nr, query FROM tpch_queries()").fetchall())
        answers = dict(con.execute("SELECT query_nr, answer FROM tpch_answers() WHERE scale_factor = ?",
                                   [SCALE_FACTOR]).fetchall())
    finally:
        con.close()
    assert sorted(queries) == sorted(answers) == list(range(1, 23))
    return TpchData(directory, queries, answers)


def pod_yaml(data_dir: Path) -> str:
    lines = ["version: v1", "kind: Spicepod", "name: tpch", "datasets:"]
    for table in TABLES:
        source = f"file:{data_dir / table}.parquet"
        lines += [f"  - from: {source}", f"    name: {table}", "    acceleration:", "      engine: duckdb"]
        lines += [f"  - from: {source}", f"    name: {table}_arrow", "    acceleration:", "      engine: arrow"]
        lines += [f"  - from: {source}", f"    name: {table}_fed"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def tpch_flight(tpch_data: TpchData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One `satchel run` serving all three copies, and an ADBC Flight SQL connection to it."""
    import adbc_driver_flightsql.dbapi as adbc

    server = _start_satchel()(tmp_path_factory.mktemp("tpch_pod"), pod_yaml(tpch_data.directory), timeout=120)
    try:
        with adbc.connect(f"grpc://127.0.0.1:{server.flight_port}", autocommit=True) as conn:
            yield conn
    finally:
        server.stop()


# -- query text and answers --------------------------------------------------------------------


def with_suffix(sql: str, suffix: str) -> str:
    """`sql` with each TPC-H table reference renamed `<table><suffix>`, edited in place in the text."""
    if not suffix:
        return sql
    tree = sqlglot.parse_one(sql, read="postgres")
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    spans = []
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if name in TABLES and name not in ctes:
            meta = table.this.meta
            assert sql[meta["start"]:meta["end"] + 1].strip('"').lower() == name
            spans.append((meta["start"], meta["end"] + 1, name + suffix))
    for start, end, new in sorted(spans, reverse=True):
        sql = sql[:start] + new + sql[end:]
    return sql


def order_keys(sql: str, columns: list[str]) -> list[int] | None:
    """Output column positions of the top-level ORDER BY (None when it orders by anything else)."""
    order = sqlglot.parse_one(sql, read="postgres").args.get("order")
    if order is None:
        return []
    keys = []
    for ordered in order.expressions:
        key = ordered.this
        if not isinstance(key, exp.Column) or key.table or key.name not in columns:
            return None
        keys.append(columns.index(key.name))
    return keys


def norm(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, (decimal.Decimal, int)):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def reference_rows(answer: str, schema: pa.Schema) -> tuple[list[str], list[tuple]]:
    """DuckDB's answer text (`|`-separated, header first, empty field = NULL) as typed rows."""
    lines = answer.split("\n")
    header, body = lines[0].split("|"), lines[1:]
    if body and body[-1] == "":
        body = body[:-1]
    rows = []
    for line in body:
        fields = line.split("|")
        assert len(fields) == len(schema), f"answer line has {len(fields)} fields: {line!r}"
        row = []
        for text, field in zip(fields, schema):
            typ = field.type
            if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
                row.append(text)
            elif text == "":
                row.append(None)
            elif pa.types.is_date(typ) or pa.types.is_timestamp(typ):
                row.append(text)
            else:
                row.append(float(text))
        rows.append(tuple(row))
    return header, rows


def same_value(got: object, want: object) -> bool:
    if isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=REL_TOL, abs_tol=1e-9)
    return got == want


def same_rows(got: list[tuple], want: list[tuple]) -> bool:
    return len(got) == len(want) and all(
        len(g) == len(w) and all(same_value(a, b) for a, b in zip(g, w)) for g, w in zip(got, want))


def tie_groups(rows: list[tuple], keys: list[int]) -> list[list[tuple]]:
    """Consecutive runs of rows with equal ORDER BY keys (a total order gives runs of one)."""
    groups: list[list[tuple]] = []
    for row in rows:
        if groups and all(same_value(row[k], groups[-1][0][k]) for k in keys):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def sort_key(row: tuple) -> tuple:
    return tuple((v is None, round(v, 4) if isinstance(v, float) else v) for v in row)


def assert_same_result(got: pa.Table, answer: str, sql: str) -> None:
    header, want = reference_rows(answer, got.schema)
    assert got.column_names == header
    rows = [tuple(norm(v) for v in row.values()) for row in got.to_pylist()]
    assert len(rows) == len(want), f"{len(rows)} rows, reference has {len(want)}"
    keys = order_keys(sql, header)
    if keys is None or not keys:
        assert same_rows(sorted(rows, key=sort_key), sorted(want, key=sort_key))
        return
    # Rows must follow the reference order; rows that tie on every ORDER BY key may come in any
    # order among themselves.
    got_groups, want_groups = tie_groups(rows, keys), tie_groups(want, keys)
    assert [len(g) for g in got_groups] == [len(g) for g in want_groups], "ORDER BY keys differ"
    for g, w in zip(got_groups, want_groups):
        assert same_rows(sorted(g, key=sort_key), sorted(w, key=sort_key)), f"rows differ:\n{g[:3]}\n{w[:3]}"


# -- the test ----------------------------------------------------------------------------------


def test_with_suffix_only_renames_tables() -> None:
    sql = "SELECT n1.n_name AS nation FROM nation n1, \"lineitem\" WHERE nation = 'x'"
    assert with_suffix(sql, "_fed") == "SELECT n1.n_name AS nation FROM nation_fed n1, lineitem_fed WHERE nation = 'x'"


@pytest.fixture(scope="session")
def tpch_results(tpch_data: TpchData, tpch_flight):
    """`fetch(route, query_nr)` -> the Arrow result through Flight SQL (each query runs once)."""
    cache: dict[tuple[str, int], pa.Table] = {}

    def fetch(route: str, query_nr: int) -> pa.Table:
        if (route, query_nr) not in cache:
            sql = with_suffix(tpch_data.queries[query_nr], ROUTES[route])
            with tpch_flight.cursor() as cur:
                cur.execute(sql)
                cache[route, query_nr] = cur.fetch_arrow_table()
        return cache[route, query_nr]

    return fetch


# The first line of EXPLAIN for each copy: the route really taken.
EXPECTED_ROUTE = {
    "duckdb": "route: accelerator (served by accelerator)",
    "arrow": "route: federated (served by accelerator)",
    "federated": "route: federated (served by source)",
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("query_nr", range(1, 23))
def test_tpch_query_matches_reference_answer(tpch_data: TpchData, tpch_flight, tpch_results, route: str,
                                             query_nr: int) -> None:
    with tpch_flight.cursor() as cur:
        cur.execute("EXPLAIN " + with_suffix(tpch_data.queries[query_nr], ROUTES[route]))
        plan = cur.fetch_arrow_table().column("plan").to_pylist()
    assert plan[0] == EXPECTED_ROUTE[route]
    got = tpch_results(route, query_nr)
    assert_same_result(got, tpch_data.answers[query_nr], tpch_data.queries[query_nr])


@pytest.mark.parametrize("query_nr", range(1, 23))
def test_tpch_routes_return_the_same_types(tpch_results, query_nr: int) -> None:
    """Routing is an optimisation: DataFusion's result has DuckDB's column types too."""
    duckdb_schema = tpch_results("duckdb", query_nr).schema
    for route in ("arrow", "federated"):
        schema = tpch_results(route, query_nr).schema
        assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in duckdb_schema], route
