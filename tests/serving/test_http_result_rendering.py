"""HTTP result rendering. A small JSON result is rendered in Python (`small_json`), a large one
by DuckDB (`json_chunks`): the two must write the same bytes for every value of every type the
fast path takes, or an agent would see a value's text change with the size of its result. And
every type a query returns renders as JSON and CSV alike."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import struct

import pyarrow as pa

from serving.http import formats
from serving.http.formats import json_chunks, small_json

EDGE_DOUBLES = [0.0, -0.0, 1.0, -1.0, 0.5, 0.1, 1 / 3, 100.0, 5e-324, 2.2250738585072014e-308,
                1.7976931348623157e308, 12345678901234567890.0, float("nan"), float("inf"), float("-inf")]
EDGE_DOUBLES += [m * 10.0 ** k for k in range(-25, 26) for m in (1.0, 1.5, -7.25, 9.999999)]
CHARS = [chr(i) for i in range(0x250)] + ["\u2028", "\u2029", "\ufeff", "\U0001F600", "中", "\x7f", "\U0010ffff"]


def _double(rng: random.Random) -> float | None:
    pick = rng.random()
    if pick < 0.05:
        return None
    if pick < 0.2:
        return rng.choice(EDGE_DOUBLES)
    if pick < 0.6:  # any bit pattern: subnormals, huge and tiny exponents
        return struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
    return round(rng.uniform(-1e4, 1e4), rng.randint(0, 8)) * 10.0 ** rng.randint(-25, 25)


def _day(rng: random.Random) -> dt.date:
    if rng.random() < 0.1:
        return rng.choice([dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1970, 1, 1)])
    return dt.date(1, 1, 1) + dt.timedelta(days=rng.randrange(3_652_059))


def _moment(rng: random.Random) -> dt.datetime | None:
    if rng.random() < 0.05:
        return None
    at = dt.datetime.combine(_day(rng), dt.time()) + dt.timedelta(seconds=rng.randrange(86_400))
    return at.replace(microsecond=rng.choice([0, 0, 1, 999_999, rng.randrange(1_000_000)]))


def _corpus(rows: int, seed: int = 7) -> pa.Table:
    rng = random.Random(seed)
    return pa.table({
        "i8": pa.array([rng.choice([None, -128, 127, 0]) for _ in range(rows)], pa.int8()),
        "u64": pa.array([rng.choice([None, 0, 2**64 - 1, 2**53 + 1]) for _ in range(rows)], pa.uint64()),
        "i64": pa.array([rng.choice([None, -2**63, 2**63 - 1, rng.randint(-10**12, 10**12)])
                         for _ in range(rows)], pa.int64()),
        "flag": pa.array([rng.choice([None, True, False]) for _ in range(rows)], pa.bool_()),
        "x": pa.array([_double(rng) for _ in range(rows)], pa.float64()),
        "text": pa.array([None if rng.random() < 0.05 else "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 8)))
                          for _ in range(rows)], pa.string()),
        "large": pa.array([rng.choice([None, "", "ü\n\"\\", "/</script>"]) for _ in range(rows)], pa.large_string()),
        "nothing": pa.nulls(rows),
        "f32": pa.array([_double(rng) for _ in range(rows)], pa.float32()),
        "money": pa.array([None if rng.random() < 0.05 else decimal.Decimal(rng.randint(-10**12, 10**12)).scaleb(-2)
                           for _ in range(rows)], pa.decimal128(12, 2)),
        "ratio": pa.array([decimal.Decimal(rng.randint(-10**15 + 1, 10**15 - 1)).scaleb(-7) for _ in range(rows)],
                          pa.decimal128(15, 7)),
        "day": pa.array([None if rng.random() < 0.05 else _day(rng) for _ in range(rows)], pa.date32()),
        "at": pa.array([_moment(rng) for _ in range(rows)], pa.timestamp("us", tz="UTC")),
        "local": pa.array([_moment(rng) for _ in range(rows)], pa.timestamp("ms")),
        "second": pa.array([_moment(rng) for _ in range(rows)], pa.timestamp("s", tz="UTC")),
        'we"ird\nname\x01': pa.array(range(rows), pa.int32()),
        "A": pa.array(range(rows), pa.int16()),
        "a": pa.array(range(rows), pa.uint16()),  # names alike but for case: renamed alike by both
    })


def _duckdb(table: pa.Table, batches: list[pa.RecordBatch]) -> bytes:
    return b"".join(json_chunks(table.schema, iter(batches)))


def test_python_and_duckdb_write_the_same_json(monkeypatch):
    monkeypatch.setattr(formats, "SMALL_JSON_CELLS", 10**9)  # compare on many values at once
    table = _corpus(20_000)
    batches = table.to_batches(max_chunksize=777)
    expected = _duckdb(table, batches)
    assert small_json(table.schema, batches) == expected
    assert b'"NaN"' in expected and b"1e-7" in expected and b"\\u0001" in expected  # the corpus covers them
    for rows in (0, 1, 2):
        part = table.slice(0, rows)
        assert small_json(part.schema, part.to_batches()) == _duckdb(part, part.to_batches())
    assert small_json(table.schema, []) == b"[]"


def test_only_small_results_of_plain_types_take_the_python_path():
    most = formats.SMALL_JSON_CELLS // _corpus(1).num_columns
    plain = _corpus(most)
    assert small_json(plain.schema, plain.to_batches()) == _duckdb(plain, plain.to_batches())
    past = _corpus(most + 1)
    assert small_json(past.schema, past.to_batches()) is None  # DuckDB renders it
    for column in (pa.array([1], pa.decimal128(16, 2)), pa.array([0], pa.timestamp("ns")),
                   pa.array([0], pa.timestamp("us", tz="Europe/Paris")), pa.array([0], pa.date64()),
                   pa.array([0], pa.time64("us")), pa.array([[1]]), pa.array([b"x"]),
                   pa.array(["x"]).dictionary_encode()):
        one = pa.table({"id": [1], "other": column})
        assert small_json(one.schema, one.to_batches()) is None, column.type


def test_dates_past_pythons_years_are_left_to_duckdb():
    late = pa.table({"day": pa.array([2_932_897], pa.int32()).cast(pa.date32())})  # 10000-01-01
    assert small_json(late.schema, late.to_batches()) is None
    assert _duckdb(late, late.to_batches()) == b'[{"day":"10000-01-01"}]'


def test_each_edge_double_alone():
    for value in EDGE_DOUBLES:
        table = pa.table({"x": pa.array([value], pa.float64())})
        assert small_json(table.schema, table.to_batches()) == _duckdb(table, table.to_batches()), value


def test_timestamps_far_from_1970_render_in_every_unit():
    """DuckDB formats second and millisecond timestamps through nanoseconds, which end in 2262: a
    `9999-12-31` "valid until" in a Parquet file's milliseconds failed the whole response."""
    from serving.http.formats import csv_chunks

    for unit in ("s", "ms", "us"):
        moments = pa.table({"valid_to": pa.array([dt.datetime(9999, 12, 31, 23, 59, 59), dt.datetime(1, 1, 1)],
                                                 pa.timestamp(unit))})
        big = moments.to_batches()
        assert _duckdb(moments, big) == b'[{"valid_to":"9999-12-31T23:59:59"},{"valid_to":"0001-01-01T00:00:00"}]'
        csv = b"".join(csv_chunks(moments.schema, iter(big))).decode().splitlines()
        assert csv == ['"valid_to"', '"9999-12-31T23:59:59"', '"0001-01-01T00:00:00"'], unit


def test_bytes_views_and_uuids_render_as_csv_as_in_json():
    """Arrow's CSV writer refuses bytes that are not UTF-8 (a BLOB column failed the response),
    string and binary views (DataFusion's strings) and UUIDs: DuckDB writes their text, as in JSON."""
    import uuid

    from serving.http.formats import csv_chunks

    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    table = pa.table({"blob": pa.array([b"\xff\x00a", None]), "big": pa.array([b"x", b""], pa.large_binary()),
                      "fixed": pa.array([b"\x01\x02", b"ab"], pa.binary(2)),
                      "view": pa.array(["v", "w"], pa.string_view()), "bytes_view": pa.array([b"b", b"c"], pa.binary_view()),
                      "id": pa.array([key.bytes, key.bytes], pa.uuid())})
    batches = table.to_batches()
    rows = json.loads(_duckdb(table, batches))
    assert rows[0] == {"blob": "\\xFF\\x00a", "big": "x", "fixed": "\\x01\\x02", "view": "v", "bytes_view": "b",
                       "id": str(key)}
    csv = b"".join(csv_chunks(table.schema, iter(batches))).decode().splitlines()
    assert csv[1:] == ['"\\xFF\\x00a","x","\\x01\\x02","v","b","12345678-1234-5678-1234-567812345678"',
                       ',"","ab","w","c","12345678-1234-5678-1234-567812345678"']


def test_intervals_render_as_csv_as_in_json():
    """Arrow's CSV writer has no text for an interval (a difference of timestamps failed a CSV
    response with an internal error): DuckDB's text, as in JSON."""
    from serving.http.formats import csv_chunks

    table = pa.table({"took": pa.array([pa.MonthDayNano([0, 3, 18_000_000_000_000]), None], pa.month_day_nano_interval()),
                      "lag": pa.array([dt.timedelta(days=1, seconds=1), None], pa.duration("us"))})
    batches = table.to_batches()
    assert json.loads(_duckdb(table, batches))[0] == {"took": "3 days 05:00:00", "lag": "24:00:01"}
    csv = b"".join(csv_chunks(table.schema, iter(batches))).decode().splitlines()
    assert csv[1:] == ['"3 days 05:00:00","24:00:01"', ","]


def test_decimals_past_38_digits_render_as_json():
    """DataFusion makes 256-bit decimals (`CAST(x AS DECIMAL(40, 2))`), which DuckDB cannot read:
    exact when the values fit 38 digits, as doubles past that; never a failed response."""
    fits = pa.table({"d": pa.array([decimal.Decimal("1.00"), None, decimal.Decimal("-1234567890123456789012345678901234.56")],
                                   pa.decimal256(40, 2))})
    assert _duckdb(fits, fits.to_batches()) == b'[{"d":1.00},{"d":null},{"d":-1234567890123456789012345678901234.56}]'
    wide = pa.table({"d": pa.array([decimal.Decimal("1" * 40)], pa.decimal256(40, 0))})
    assert json.loads(_duckdb(wide, wide.to_batches())) == [{"d": float("1" * 40)}]


def test_values_built_in_python_take_the_forms_of_the_json_results():
    """Search results are built in Python from `to_pylist`: `json_ready` gives each value the form
    JSON results give it (FastAPI's encoder failed on a NaN and on bytes that are not UTF-8)."""
    import uuid

    from serving.http.formats import json_body, json_ready

    rng = random.Random(5)
    rows = 300
    table = pa.table({
        "n": pa.array([rng.choice([None, 0, -2**63, 2**63 - 1]) for _ in range(rows)], pa.int64()),
        "x": pa.array([_double(rng) for _ in range(rows)], pa.float64()),
        "flag": pa.array([rng.choice([True, False, None]) for _ in range(rows)]),
        "money": pa.array([decimal.Decimal(rng.randint(-10**9, 10**9)).scaleb(-2) for _ in range(rows)],
                          pa.decimal128(12, 2)),
        "wide": pa.array([decimal.Decimal(rng.randint(-10**19, 10**19)).scaleb(-4) for _ in range(rows)],
                         pa.decimal128(24, 4)),
        "text": pa.array(["".join(rng.choice(CHARS) for _ in range(rng.randint(0, 6))) for _ in range(rows)]),
        "blob": pa.array([bytes(rng.randrange(256) for _ in range(rng.randint(0, 8))) for _ in range(rows)]),
        "day": pa.array([_day(rng) for _ in range(rows)], pa.date32()),
        "at": pa.array([_moment(rng) for _ in range(rows)], pa.timestamp("us", tz="UTC")),
        "paris": pa.array([_moment(rng) for _ in range(rows)], pa.timestamp("us", tz="Europe/Paris")),
        "local": pa.array([_moment(rng) for _ in range(rows)], pa.timestamp("ms")),
        "clock": pa.array([dt.time(rng.randrange(24), rng.randrange(60), rng.randrange(60),
                                   rng.choice([0, rng.randrange(1_000_000)])) for _ in range(rows)], pa.time64("us")),
        "id": pa.array([uuid.UUID(int=rng.getrandbits(128)).bytes for _ in range(rows)], pa.uuid()),
    })
    expected = json.loads(json_body(table.schema, table.to_batches()))
    ours = json.loads(json.dumps([json_ready(row) for row in table.to_pylist()], allow_nan=False))
    assert ours == expected
    assert json_ready({"bytes": bytes(range(256))})["bytes"] == json.loads(
        json_body(pa.schema([("b", pa.binary())]), [pa.record_batch({"b": [bytes(range(256))]})]))[0]["b"]


def test_non_finite_floats_inside_lists_structs_and_maps_are_strict_json():
    """DuckDB writes a NaN inside a nested value bare (`[1.5,NaN]`), which strict parsers (a
    browser's JSON.parse) refuse: written as the strings top-level columns get; text that merely
    says NaN stays as it is."""
    nan, inf = float("nan"), float("inf")
    table = pa.table({"values": pa.array([[1.5, nan, None, inf, -inf]]),
                      "pair": pa.array([{"x": nan, "note": 'NaN "Infinity" \\"NaN'}]),
                      "by_name": pa.array([[("NaN", -inf)]], pa.map_(pa.string(), pa.float64())),
                      "singles": pa.array([[nan]], pa.list_(pa.float32())), "text": ["NaN and Infinity"]})

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in the JSON")

    rows = json.loads(_duckdb(table, table.to_batches()), parse_constant=refuse)
    assert rows == [{"values": [1.5, "NaN", None, "Infinity", "-Infinity"],
                     "pair": {"x": "NaN", "note": 'NaN "Infinity" \\"NaN'}, "by_name": {"NaN": "-Infinity"},
                     "singles": ["NaN"], "text": "NaN and Infinity"}]


def test_timestamps_and_non_finite_floats_inside_nested_values_take_the_top_level_forms():
    """Inside lists, structs and maps (and their keys), in JSON and in CSV's JSON text alike:
    timestamps as ISO 8601 as at the top level (to_json wrote `2024-01-06 10:52:00+00` there),
    NaN and infinities as strings (CSV wrote them bare); `json_ready` (search) agrees."""
    from serving.http.formats import csv_chunks, json_ready

    at = dt.datetime(2024, 1, 6, 10, 52, 0, 123000)
    utc = at.replace(microsecond=0, tzinfo=dt.timezone.utc)
    member = pa.struct([("seen at", pa.timestamp("us", "UTC")), ("score", pa.float32()),
                        ("inner", pa.struct([("until", pa.timestamp("s"))]))])
    table = pa.table({
        "event": pa.array([{"seen at": utc, "score": float("inf"), "inner": {"until": dt.datetime(9999, 12, 31)}},
                           None, {"seen at": None, "score": None, "inner": None}], member),
        "times": pa.array([[at, None], None, []], pa.list_(pa.timestamp("ms"))),
        "pairs": pa.array([[at, at], None, [None, at]], pa.list_(pa.timestamp("us"), 2)),
        "nested": pa.array([[[utc]], [None], None], pa.large_list(pa.list_(pa.timestamp("us", "UTC")))),
        "by_time": pa.array([[(at, 1.5)], None, [(at, float("nan"))]], pa.map_(pa.timestamp("ms"), pa.float64())),
        "events": pa.array([[{"seen at": utc, "score": 0.5, "inner": None}], None, [None]], pa.list_(member)),
        "coded": pa.array([at, None, at], pa.timestamp("ms")).dictionary_encode(),
    })
    iso, iso_z = "2024-01-06T10:52:00.123000", "2024-01-06T10:52:00Z"
    expected = [
        {"event": {"seen at": iso_z, "score": "Infinity", "inner": {"until": "9999-12-31T00:00:00"}},
         "times": [iso, None], "pairs": [iso, iso], "nested": [[iso_z]], "by_time": {iso: 1.5},
         "events": [{"seen at": iso_z, "score": 0.5, "inner": None}], "coded": iso},
        {"event": None, "times": None, "pairs": None, "nested": [None], "by_time": None, "events": None, "coded": None},
        {"event": {"seen at": None, "score": None, "inner": None}, "times": [], "pairs": [None, iso],
         "nested": None, "by_time": {iso: "NaN"}, "events": [None], "coded": iso},
    ]

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant}")

    assert json.loads(_duckdb(table, table.to_batches()), parse_constant=refuse) == expected
    csv = b"".join(csv_chunks(table.schema, iter(table.to_batches()))).decode()
    import csv as csv_module
    import io

    header, *lines = list(csv_module.reader(io.StringIO(csv)))
    assert header == table.column_names
    for line, row in zip(lines, expected):
        assert [json.loads(cell, parse_constant=refuse) if cell else None for cell in line[:-1]] == \
            [row[name] for name in header[:-1]]
        assert line[-1] == (row["coded"] or "")
    assert [json_ready(row) for row in table.to_pylist(maps_as_pydicts="lossy")] == expected
    keyed = pa.table({"m": pa.array([[(1, "a"), (2, "b")]], pa.map_(pa.int64(), pa.string())),
                      "flags": pa.array([[(True, 1.0)]], pa.map_(pa.bool_(), pa.float64()))})
    assert json_ready(keyed.to_pylist(maps_as_pydicts="lossy")) == json.loads(_duckdb(keyed, keyed.to_batches()))


def test_a_struct_with_an_unnamed_field_still_renders():
    """DuckDB cannot rebuild a struct with an empty field name: such a value keeps to_json's own
    forms (it rendered before the nested rewrite, and must still)."""
    from serving.http.formats import csv_chunks

    table = pa.table({"s": pa.array([{"": 1.5, "t": dt.datetime(2024, 1, 6)}],
                                    pa.struct([("", pa.float64()), ("t", pa.timestamp("us"))]))})
    assert json.loads(_duckdb(table, table.to_batches())) == [{"s": {"": 1.5, "t": "2024-01-06 00:00:00"}}]
    assert b"".join(csv_chunks(table.schema, iter(table.to_batches()))).decode().splitlines()[1].startswith('"{""""')
