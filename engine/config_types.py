"""Field types shared by the spicepod models: frozen maps, param strings, durations, sizes, columns.

Validators here raise ValueError (or PydanticCustomError) with messages that never include a
secret: values that came from a secret keep their `SecretText` type and masked repr.
"""

from __future__ import annotations

import datetime as _dt
import re
from datetime import timedelta
from typing import Annotated, Any, Iterator, Mapping, TypeVar

from pydantic import AfterValidator, PlainSerializer, PlainValidator, WrapValidator

from .durations import HINT as DURATION_HINT
from .durations import parse_duration
from .secrets import SecretText

K = TypeVar("K")
V = TypeVar("V")

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B|B)?", re.IGNORECASE)


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping (what frozen models expose instead of `dict`)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V] | None = None):
        object.__setattr__(self, "_data", dict(data or {}))

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __eq__(self, other: object) -> bool:
        return dict(self._data) == dict(other) if isinstance(other, Mapping) else NotImplemented

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMap is immutable")

    def __repr__(self) -> str:
        return repr(self._data)


def _keep_secret(value: Any, handler: Any) -> Any:
    """Let a SecretText through unchanged so its masked repr survives validation."""
    return value if isinstance(value, SecretText) else handler(value)


def _param_value(value: Any, handler: Any) -> str:
    """YAML scalars -> str (`true` -> "true", 5 -> "5"); lists, maps and null are errors."""
    if isinstance(value, SecretText):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if value is None:
        raise ValueError("expected a value, got nothing")
    raise ValueError(f"expected a string, number or boolean, got {kind_of(value)}")


def _param_or_list(value: Any) -> str | tuple[str, ...]:
    """A model param: a scalar (as str) or a list of scalars (as a tuple of str)."""
    if isinstance(value, (list, tuple)):
        return tuple(_param_value(v, None) for v in value)
    return _param_value(value, None)


def _duration(value: Any, handler: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"expected a duration, got {kind_of(value)}; {DURATION_HINT}")


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative (0s turns it off)")
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


def _size(value: str) -> str:
    if not SIZE.fullmatch(value.strip()):
        raise ValueError("expected a size such as 512MiB, 2GiB or 1000000 (bytes)")
    return value


def _nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _identifier(value: str) -> str:
    if not IDENT.fullmatch(value):
        raise ValueError(
            f"'{value}' is not a valid table name: use letters, digits and underscores, "
            "starting with a letter or underscore (optionally schema.table)"
        )
    return value


def parse_columns(value: Any) -> tuple[str, ...]:
    """`col`, `(a, b)` or a YAML list -> ("col",) / ("a", "b")."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("(") and text.endswith(")"):
            text = text[1:-1]
        items = text.split(",")
    else:
        raise ValueError(f"expected a column name, '(a, b)' or a list of columns, got {kind_of(value)}")
    cols = tuple(str(c).strip() for c in items if isinstance(c, (str, int)))
    if len(cols) != len(items) or not cols or any(not c for c in cols):
        raise ValueError("expected a column name, '(a, b)' or a list of column names")
    return cols


def kind_of(value: Any) -> str:
    """A short name of a YAML value's type for messages (never the value itself)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _freeze(value: Mapping) -> FrozenMap:
    return FrozenMap(value)


Str = Annotated[str, WrapValidator(_keep_secret)]
NonEmptyStr = Annotated[str, WrapValidator(_keep_secret), AfterValidator(_nonempty)]
Identifier = Annotated[str, AfterValidator(_identifier)]
ParamStr = Annotated[str, WrapValidator(_param_value)]
ParamValue = Annotated[str | tuple[str, ...], PlainValidator(lambda v: _param_or_list(v))]
Duration = Annotated[timedelta, WrapValidator(_duration)]
PositiveDuration = Annotated[timedelta, WrapValidator(_duration), AfterValidator(_positive)]
OptionalDuration = Annotated[timedelta, WrapValidator(_duration), AfterValidator(_not_negative)]
"""A duration where 0s means off."""
Size = Annotated[str, WrapValidator(_keep_secret), AfterValidator(_size)]
Columns = Annotated[tuple[str, ...], WrapValidator(lambda v, h: h(parse_columns(v)))]
_ser = PlainSerializer(dict)


def frozen_map(value_type: Any) -> Any:
    """`Mapping[str, value_type]` validated into a FrozenMap (serialised as a dict)."""
    return Annotated[Mapping[str, value_type], AfterValidator(_freeze), _ser]
