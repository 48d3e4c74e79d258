"""Which Arrow types Satchel serves, and `unsupported_type_action` for the rest."""

from __future__ import annotations

import logging
from typing import Mapping

import pyarrow as pa

from engine.errors import UnsupportedType

log = logging.getLogger("satchel.connectors")


def normalize_type(typ: pa.DataType, timestamp_unit: str | None = None) -> pa.DataType:
    """A stable, servable form of a source type: extension types as their storage (a UUID is
    its 16 bytes, JSON its text), dictionaries decoded, all-null -> string.

    `timestamp_unit` forces one unit for inferred timestamps (text formats infer seconds or
    nanoseconds depending on the sample; a fixed unit keeps the schema stable).
    """
    if isinstance(typ, pa.BaseExtensionType):  # arrow.uuid, arrow.json, ...: served as their storage
        return normalize_type(typ.storage_type, timestamp_unit)
    if pa.types.is_dictionary(typ):
        return normalize_type(typ.value_type, timestamp_unit)
    if pa.types.is_null(typ):
        return pa.string()
    if timestamp_unit and pa.types.is_timestamp(typ):
        return pa.timestamp(timestamp_unit, typ.tz)
    return typ


def unservable_reason(typ: pa.DataType) -> str | None:
    """Why Satchel cannot serve a column of `typ` (None if it can)."""
    if pa.types.is_union(typ):
        return f"union type {typ}"
    for i in range(typ.num_fields):
        reason = unservable_reason(typ.field(i).type)
        if reason:
            return reason
    return None


def resolve_unsupported(dataset: str, action: str, problems: Mapping[str, str]) -> dict[str, str]:
    """Apply `unsupported_type_action` to {column: type description}.

    Returns {column: "string" | "drop"}; raises UnsupportedType for `error`. `ignore` and `warn`
    both drop the column with a logged warning (a column never disappears silently).
    """
    decisions: dict[str, str] = {}
    for column, what in problems.items():
        if action == "error":
            raise UnsupportedType(
                f"dataset '{dataset}': column '{column}' has {what}, which Satchel cannot serve; set "
                f"unsupported_type_action to string (serve it as text), ignore or warn (drop the column)"
            )
        if action == "string":
            decisions[column] = "string"
            log.info("dataset '%s': column '%s' has %s; serving it as text", dataset, column, what)
        else:
            decisions[column] = "drop"
            log.warning("dataset '%s': dropping column '%s' (%s, unsupported_type_action=%s)",
                        dataset, column, what, action)
    return decisions
