"""connectors/documents.py: schema inference from document samples and batch conversion."""

from __future__ import annotations

import datetime as dt
import decimal
import logging

import pyarrow as pa
import pytest

from connectors.documents import infer_schema, to_record_batch
from engine.errors import ConnectorError, UnsupportedType

UTC = dt.timezone.utc


def infer(docs, **kw):
    return infer_schema(docs, dataset="ds", **kw)


def test_plain_json_types_in_first_appearance_order():
    schema = infer([{"b": True, "i": 1, "f": 1.5, "s": "x"}, {"n": None, "by": b"\x00", "i": 2}])
    assert schema == pa.schema([("b", pa.bool_()), ("i", pa.int64()), ("f", pa.float64()), ("s", pa.string()),
                                ("n", pa.string()), ("by", pa.binary())])


def test_nested_documents_and_arrays():
    docs = [{"customer": {"name": "a", "tier": 1}, "items": [{"sku": "x", "qty": 1}]},
            {"customer": {"name": "b", "vip": True}, "items": [{"sku": "y", "qty": 2, "price": 1.5}], "tags": []}]
    schema = infer(docs)
    assert schema.field("customer").type == pa.struct([("name", pa.string()), ("tier", pa.int64()), ("vip", pa.bool_())])
    assert schema.field("items").type == pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64()),
                                                             ("price", pa.float64())]))
    assert schema.field("tags").type == pa.list_(pa.string())  # only empty arrays: text elements
    batch = to_record_batch(docs, schema, dataset="ds")
    assert batch.to_pylist()[0] == {"customer": {"name": "a", "tier": 1, "vip": None},
                                    "items": [{"sku": "x", "qty": 1, "price": None}], "tags": None}


def test_widening_int_float_and_int_decimal():
    schema = infer([{"x": 1, "d": 1}, {"x": 2.5, "d": decimal.Decimal("12.345")}])
    assert schema.field("x").type == pa.float64()
    assert schema.field("d").type == pa.decimal128(38, 3)
    batch = to_record_batch([{"x": 1, "d": 1}, {"x": 2.5, "d": decimal.Decimal("12.345")}], schema, dataset="ds")
    assert batch.column(0).to_pylist() == [1.0, 2.5]
    assert batch.column(1).to_pylist() == [decimal.Decimal("1.000"), decimal.Decimal("12.345")]


def test_times_and_dates():
    aware, naive = dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 1)
    schema = infer([{"a": aware, "n": naive, "d": dt.date(2024, 1, 2)}])
    assert schema == pa.schema([("a", pa.timestamp("us", "UTC")), ("n", pa.timestamp("us")), ("d", pa.date32())])


def test_conflict_error_names_field_path_and_types():
    with pytest.raises(UnsupportedType, match=r"field 'c\.x' has values of types int, str.*unsupported_type_action"):
        infer([{"c": {"x": 1}}, {"c": {"x": "one"}}])


def test_conflict_string_serves_json_text():
    docs = [{"v": 1}, {"v": "one"}, {"v": {"a": [1, 2]}}, {"v": None}]
    schema = infer(docs, unsupported_type_action="string")
    assert schema.field("v").type == pa.string()
    batch = to_record_batch(docs, schema, dataset="ds", unsupported_type_action="string")
    assert batch.column(0).to_pylist() == ["1", "one", '{"a": [1, 2]}', None]


@pytest.mark.parametrize("action", ["warn", "ignore"])
def test_conflict_warn_ignore_drop_the_field(action, caplog):
    with caplog.at_level(logging.WARNING):
        schema = infer([{"k": 1, "v": 1, "c": {"x": 1, "y": 2}}, {"v": "one", "c": {"x": "a"}}],
                       unsupported_type_action=action)
    assert schema == pa.schema([("k", pa.int64()), ("c", pa.struct([("y", pa.int64())]))])
    assert "dropping field 'v'" in caplog.text and "dropping field 'c.x'" in caplog.text


def test_overrides_win_and_add_columns():
    schema = infer([{"a": 1, "b": "x"}], overrides={"a": pa.int16(), "z": pa.date32()})
    assert schema == pa.schema([("a", pa.int16()), ("b", pa.string()), ("z", pa.date32())])
    # an override also settles a conflicting field
    schema = infer([{"a": 1}, {"a": "x"}], overrides={"a": pa.string()})
    assert schema.field("a").type == pa.string()


def test_empty_document_and_only_nulls_are_text():
    schema = infer([{"e": {}, "n": None}])
    assert schema == pa.schema([("e", pa.string()), ("n", pa.string())])
    assert to_record_batch([{"e": {}, "n": None}], schema, dataset="ds").to_pylist() == [{"e": "{}", "n": None}]


def test_huge_int_and_special_decimal_are_unsupported():
    with pytest.raises(UnsupportedType, match="field 'big'"):
        infer([{"big": 2**70}])
    with pytest.raises(UnsupportedType, match="field 'nan'"):
        infer([{"nan": decimal.Decimal("NaN")}])


def test_unknown_action_is_a_clear_error():
    with pytest.raises(ConnectorError, match="unknown unsupported_type_action 'maybe'"):
        infer([{"a": 1}], unsupported_type_action="maybe")


def test_later_value_of_unexpected_type_errors_clearly():
    schema = infer([{"a": 1, "c": {"x": 1}}])
    with pytest.raises(ConnectorError, match=r"field 'c\.x' holds a value of type str where the schema .* has int64"):
        to_record_batch([{"a": 2, "c": {"x": "oops"}}], schema, dataset="ds")


@pytest.mark.parametrize("action", ["warn", "ignore", "string"])
def test_later_value_of_unexpected_type_is_null_and_warned_once(action, caplog):
    schema = infer([{"a": 1, "c": {"x": 1}}])
    docs = [{"a": "two", "c": {"x": "oops"}}, {"a": 3, "c": {"x": 4}}, {"a": "five", "c": "not a doc"}]
    with caplog.at_level(logging.WARNING):
        batch = to_record_batch(docs, schema, dataset=f"warned-{action}", unsupported_type_action=action)
    assert batch.to_pylist() == [{"a": None, "c": {"x": None}}, {"a": 3, "c": {"x": 4}}, {"a": None, "c": None}]
    assert caplog.text.count("field 'a' holds") == 1


def test_new_fields_after_inference_are_ignored():
    schema = infer([{"a": 1}])
    batch = to_record_batch([{"a": 2, "late": {"x": 1}}, {"late": 5}], schema, dataset="ds")
    assert batch.to_pylist() == [{"a": 2}, {"a": None}]


def test_date_column_reads_midnight_datetimes():
    schema = pa.schema([("d", pa.date32())])
    batch = to_record_batch([{"d": dt.datetime(2024, 2, 29, tzinfo=UTC)}, {"d": None}], schema, dataset="ds")
    assert batch.column(0).to_pylist() == [dt.date(2024, 2, 29), None]


def test_non_text_into_text_column_is_json():
    schema = pa.schema([("t", pa.string())])
    batch = to_record_batch([{"t": 5}, {"t": [1, "a"]}, {"t": True}], schema, dataset="ds",
                            json_text=lambda v: f"<{v}>")
    assert batch.column(0).to_pylist() == ["<5>", "<[1, 'a']>", "<True>"]
