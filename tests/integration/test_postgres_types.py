"""Every PostgreSQL type the issue names, with NULLs and extremes, round-trips exactly through
the connector (and unsupported types follow unsupported_type_action)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal

import pyarrow as pa
import pytest

from connectors.base import DatasetSpec, description_of
from connectors.sql.postgres import PostgresConnector
from engine.errors import UnsupportedType
from tests.integration.postgres_server import PgServer, postgres_server  # noqa: F401

pytestmark = pytest.mark.integration

DDL = """
DROP TABLE IF EXISTS public.types;
DROP TYPE IF EXISTS mood;
DROP DOMAIN IF EXISTS posint;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE public.types (
  id int PRIMARY KEY,
  i2 smallint, i4 integer, i8 bigint, dom posint,
  n_small numeric(5,2), n_mid numeric(38,10), n_big numeric(60,5), n_free numeric,
  r real, d double precision,
  t text, v varchar(10), c char(3),
  b boolean, dt date, tm time, ts timestamp, tstz timestamptz, iv interval,
  u uuid, j json, jb jsonb, by bytea, ai integer[], at text[], e mood, m money, ip inet, pt point, bx box
);
COMMENT ON COLUMN public.types.i8 IS 'a big integer';
COMMENT ON COLUMN public.types.t IS 'source comment';
INSERT INTO public.types VALUES
 (1, -32768, -2147483648, -9223372036854775808, 1,
  -999.99, '-9999999999999999999999999999.9999999999', '-9999999999999999999999999999999999999999999999999999.99999', '-1e-20',
  '-Infinity', '-1.7976931348623157e308',
  '', '', 'a', false, '0001-01-01', '00:00:00', '0001-01-01 00:00:00', '0001-01-01 00:00:00+00', '-1 days -00:00:00.000001',
  '00000000-0000-0000-0000-000000000000', '{"a": [1, 2]}', '{"b": null, "a": 1}', '', '{}', '{}', 'sad',
  '-92233720368547758.08', '10.0.0.0/8', '(1,2)', '((0,0),(1,1))'),
 (2, 32767, 2147483647, 9223372036854775807, 2147483647,
  999.99, '9999999999999999999999999999.9999999999', '9999999999999999999999999999999999999999999999999999.99999', '123456789012345678901234567890.123456789',
  'Infinity', '1.7976931348623157e308',
  '日本語 🙂 "quoted" \\ back', '0123456789', 'abc', true, '9999-12-31', '23:59:59.999999', '9999-12-31 23:59:59.999999',
  '9999-12-31 23:59:59.999999+00', '1 year 2 mons 3 days 04:05:06.789',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '[]', '[1, "x"]', '\\x00ff', '{1,NULL,3}', '{"a","b c",NULL}', 'happy',
  '92233720368547758.07', '::1', '(-1.5,2.25)', '((1,1),(0,0))'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, 0, 5, 0, 0, 0, 0, 'NaN', 'NaN', 'x', 'y', 'z  ', true, '2024-02-29', '12:34:56.5',
  '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56.123456+05:30', '00:00:00',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'null', '"s"', '\\x', '{0}', '{""}', 'ok', '0', '192.168.0.1/32', '(0,0)', '((0,0),(0,0))');
GRANT SELECT ON public.types TO satchel;
"""

EXPECTED_TYPES = {
    "id": pa.int32(), "i2": pa.int16(), "i4": pa.int32(), "i8": pa.int64(), "dom": pa.int32(),
    "n_small": pa.decimal128(5, 2), "n_mid": pa.decimal128(38, 10), "n_big": pa.decimal256(60, 5),
    "n_free": pa.string(), "r": pa.float32(), "d": pa.float64(), "t": pa.string(), "v": pa.string(),
    "c": pa.string(), "b": pa.bool_(), "dt": pa.date32(), "tm": pa.time64("us"), "ts": pa.timestamp("us"),
    "tstz": pa.timestamp("us", "UTC"), "iv": pa.month_day_nano_interval(), "u": pa.string(), "j": pa.string(),
    "jb": pa.string(), "by": pa.binary(), "ai": pa.list_(pa.int32()), "at": pa.list_(pa.string()),
    "e": pa.string(), "m": pa.decimal128(19, 2), "ip": pa.string(), "pt": pa.string(), "bx": pa.string(),
}
UTC = dt.timezone.utc
MDN = pa.MonthDayNano
EXPECTED_ROWS = [
    {"id": 1, "i2": -32768, "i4": -2**31, "i8": -2**63, "dom": 1, "n_small": Decimal("-999.99"),
     "n_mid": Decimal("-9999999999999999999999999999.9999999999"),
     "n_big": Decimal("-9999999999999999999999999999999999999999999999999999.99999"), "n_free": "-1e-20".replace("-1e-20", "-0.00000000000000000001"),
     "r": -math.inf, "d": -1.7976931348623157e308, "t": "", "v": "", "c": "a  ", "b": False,
     "dt": dt.date(1, 1, 1), "tm": dt.time(0), "ts": dt.datetime(1, 1, 1), "tstz": dt.datetime(1, 1, 1, tzinfo=UTC),
     "iv": MDN([0, -1, -1000]), "u": "00000000-0000-0000-0000-000000000000", "j": '{"a": [1, 2]}',
     "jb": '{"a": 1, "b": null}', "by": b"", "ai": [], "at": [], "e": "sad", "m": Decimal("-92233720368547758.08"),
     "ip": "10.0.0.0/8", "pt": "(1,2)", "bx": "(1,1),(0,0)"},
    {"id": 2, "i2": 32767, "i4": 2**31 - 1, "i8": 2**63 - 1, "dom": 2147483647, "n_small": Decimal("999.99"),
     "n_mid": Decimal("9999999999999999999999999999.9999999999"),
     "n_big": Decimal("9999999999999999999999999999999999999999999999999999.99999"),
     "n_free": "123456789012345678901234567890.123456789", "r": math.inf, "d": 1.7976931348623157e308,
     "t": '日本語 🙂 "quoted" \\ back', "v": "0123456789", "c": "abc", "b": True, "dt": dt.date(9999, 12, 31),
     "tm": dt.time(23, 59, 59, 999999), "ts": dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
     "tstz": dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
     "iv": MDN([14, 3, (4 * 3600 + 5 * 60 + 6) * 10**9 + 789 * 10**6]),
     "u": "ffffffff-ffff-ffff-ffff-ffffffffffff", "j": "[]", "jb": '[1, "x"]', "by": b"\x00\xff", "ai": [1, None, 3],
     "at": ["a", "b c", None], "e": "happy", "m": Decimal("92233720368547758.07"), "ip": "::1",
     "pt": "(-1.5,2.25)", "bx": "(1,1),(0,0)"},
    {"id": 3, **{k: None for k in EXPECTED_TYPES if k != "id"}},
    {"id": 4, "i2": 0, "i4": 0, "i8": 0, "dom": 5, "n_small": Decimal("0.00"), "n_mid": Decimal("0E-10"),
     "n_big": Decimal("0.00000"), "n_free": "0", "r": "NaN", "d": "NaN", "t": "x", "v": "y", "c": "z  ", "b": True,
     "dt": dt.date(2024, 2, 29), "tm": dt.time(12, 34, 56, 500000), "ts": dt.datetime(2024, 2, 29, 12, 34, 56, 123456),
     "tstz": dt.datetime(2024, 2, 29, 7, 4, 56, 123456, tzinfo=UTC), "iv": MDN([0, 0, 0]),
     "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "j": "null", "jb": '"s"', "by": b"", "ai": [0], "at": [""],
     "e": "ok", "m": Decimal("0.00"), "ip": "192.168.0.1", "pt": "(0,0)", "bx": "(0,0),(0,0)"},
]


@pytest.fixture(scope="module")
def types_table(postgres_server: PgServer) -> PgServer:
    postgres_server.execute(*[s for s in DDL.split(";\n") if s.strip()])
    return postgres_server


def connector(server: PgServer, action: str = "string", descriptions=None) -> PostgresConnector:
    return PostgresConnector(DatasetSpec(name="types", path="public.types", prefix="postgres", params=server.params(),
                                         unsupported_type_action=action,
                                         column_descriptions=dict(descriptions or {})))


def _norm(v):
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(UTC)
    return v


def test_every_type_round_trips_exactly(types_table: PgServer) -> None:
    conn = connector(types_table)
    schema = conn.schema()
    assert {f.name: f.type for f in schema} == EXPECTED_TYPES
    table = conn.scan().read_all().sort_by("id")
    assert table.schema.equals(schema)
    got = [{k: _norm(v) for k, v in row.items()} for row in table.to_pylist()]
    for g, w in zip(got, EXPECTED_ROWS):
        bad = {k: (g[k], w[k]) for k in w if g[k] != w[k] or type(g[k]) is not type(w[k])}
        assert not bad, f"row {w['id']}: (got, want) {bad}"
    assert len(got) == len(EXPECTED_ROWS)


def test_uuid_reads_as_canonical_text(types_table: PgServer) -> None:
    value = connector(types_table).scan(["u"], []).read_all().column("u").to_pylist()
    assert str(uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")) in value


def test_unsupported_types_follow_the_action(types_table: PgServer, caplog) -> None:
    with pytest.raises(UnsupportedType, match=r"column 'n_free' has numeric without a precision"):
        connector(types_table, "error").schema()
    for action in ("ignore", "warn"):
        names = connector(types_table, action).schema().names
        assert not {"n_free", "pt", "bx"} & set(names) and "n_big" in names and "e" in names
    assert "dropping column 'pt'" in caplog.text


def test_column_comments_become_descriptions(types_table: PgServer) -> None:
    schema = connector(types_table, descriptions={"t": "pod wins"}).schema()
    assert description_of(schema.field("i8")) == "a big integer"
    assert description_of(schema.field("t")) == "pod wins"
    assert description_of(schema.field("i2")) is None
    # what a column served as its text is in PostgreSQL, so an agent knows it holds JSON
    assert description_of(schema.field("jb")) == "PostgreSQL jsonb, as its JSON text: read a field with jb ->> 'key'"
    assert description_of(schema.field("u")) == "PostgreSQL uuid, as its text"
    assert description_of(schema.field("e")) == "PostgreSQL mood, as its text"


def test_filters_on_every_filterable_type(types_table: PgServer) -> None:
    from connectors.base import Filter, FilterSupport

    conn = connector(types_table)
    cases = [
        (Filter("i8", "=", -2**63), [1]), (Filter("n_mid", ">", 0), [2]), (Filter("n_small", "<", Decimal("0.01")), [1, 4]),
        (Filter("d", ">", 0.0), [2, 4]), (Filter("t", ">=", "x"), [2, 4]), (Filter("dt", "<", dt.date(2000, 1, 1)), [1]),
        (Filter("tstz", ">", dt.datetime(2024, 2, 29, 7, 0, tzinfo=UTC)), [2, 4]), (Filter("by", "=", b"\x00\xff"), [2]),
        (Filter("ts", "<=", dt.datetime(2024, 2, 29, 12, 34, 56, 123456)), [1, 4]), (Filter("b", "=", True), [2, 4]),
        (Filter("n_big", "<", 0), [1]),
    ]
    for f, ids in cases:
        assert conn.classify_filters([f]) == [FilterSupport.EXACT], f
        got = sorted(conn.scan(["id"], [f]).read_all().column("id").to_pylist())
        assert got == ids, f
    for f in (Filter("u", "=", "x"), Filter("c", "=", "abc"), Filter("r", ">", 1.0), Filter("d", "=", math.nan), Filter("n_small", "<", Decimal("0.001")),
              Filter("pt", "=", "(0,0)"), Filter("ts", ">", dt.datetime(2024, 1, 1, tzinfo=UTC))):
        assert conn.classify_filters([f]) == [FilterSupport.UNSUPPORTED], f


ROUTE_COLUMNS = [c for c in EXPECTED_TYPES if c not in ("n_big",)]


@pytest.mark.parametrize("engine", ["duckdb", "arrow", None])
def test_types_are_the_same_accelerated_and_federated(types_table: PgServer, tmp_path, engine) -> None:
    """The accelerated copies hold the same values with the same types as the live table
    (numeric above 38 digits aside: see the next test)."""
    from engine.config import load_pod
    from engine.runtime import Runtime

    lines = ["version: v1", "kind: Spicepod", "name: types", "datasets:", "  - from: postgres:public.types",
             "    name: types", "    unsupported_type_action: string", "    params:", types_table.params_yaml(6)]
    if engine:
        lines += ["    acceleration:", f"      engine: {engine}"]
    if engine == "duckdb":  # the working set without the 60-digit numeric (see the xfail below)
        lines += ["      refresh_sql: SELECT " + ", ".join(ROUTE_COLUMNS) + " FROM types"]
    (tmp_path / "spicepod.yaml").write_text("\n".join(lines) + "\n")
    rt = Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))
    rt.start()
    try:
        assert rt.wait_ready(30), rt.status()
        cols = ", ".join(f'"{c}"' for c in ROUTE_COLUMNS)
        got = rt.query(f"SELECT {cols} FROM types ORDER BY id").read_all()
    finally:
        rt.stop()
    assert {f.name: f.type for f in got.schema} == {c: EXPECTED_TYPES[c] for c in ROUTE_COLUMNS}
    rows = [{k: _norm(v) for k, v in row.items()} for row in got.to_pylist()]
    assert rows == [{c: r[c] for c in ROUTE_COLUMNS} for r in EXPECTED_ROWS]


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="accel/duckdb: DuckDB decimals stop at 38 digits; numeric(60,5) cannot load into a "
                          "DuckDB-accelerated copy (Arrow-accelerated and federated serve it)")
def test_numeric_over_38_digits_in_a_duckdb_copy(types_table: PgServer, tmp_path) -> None:
    from engine.config import load_pod
    from engine.runtime import Runtime

    lines = ["version: v1", "kind: Spicepod", "name: types", "datasets:", "  - from: postgres:public.types",
             "    name: types", "    unsupported_type_action: ignore", "    params:", types_table.params_yaml(6),
             "    acceleration:", "      engine: duckdb", "      refresh_retry_max_attempts: 1"]
    (tmp_path / "spicepod.yaml").write_text("\n".join(lines) + "\n")
    rt = Runtime(load_pod(tmp_path / "spicepod.yaml"), data_dir=str(tmp_path / ".satchel"))
    rt.start()
    try:
        assert rt.wait_ready(3), rt.status()
    finally:
        rt.stop()
