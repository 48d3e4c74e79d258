"""Parsing and validation of connector params (shared by the file-like connectors).

Every message names the dataset and the param; param *values* are only echoed for params
that can never hold a secret (formats, booleans, delimiters, durations).
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Mapping

from engine.errors import ConnectorError

# file_format value -> canonical format
FORMAT_ALIASES: dict[str, str] = {
    "parquet": "parquet",
    "csv": "csv",
    "json": "json",
    "ndjson": "ndjson",
    "jsonl": "ndjson",
}
FORMATS = ("parquet", "csv", "json", "ndjson")

# file extension -> canonical format
EXTENSIONS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}


def check_params(dataset: str, connector: str, params: Mapping[str, str], allowed: Iterable[str]) -> None:
    """Raise ConnectorError naming every unknown param and listing the allowed ones."""
    allowed = sorted(allowed)
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        raise ConnectorError(
            f"dataset '{dataset}': unknown param(s) {', '.join(unknown)} for the {connector} connector; "
            f"allowed: {', '.join(allowed)}"
        )


def parse_format(dataset: str, value: str) -> str:
    """`file_format` -> canonical format, or an error listing the allowed values."""
    fmt = FORMAT_ALIASES.get(value.strip().lower())
    if fmt is None:
        raise ConnectorError(
            f"dataset '{dataset}': unknown file_format '{value}'; allowed: {', '.join(FORMAT_ALIASES)}"
        )
    return fmt


def format_of_path(path: str) -> str | None:
    """The format implied by a file name's extension, if any."""
    return EXTENSIONS.get(os.path.splitext(path)[1].lower())


def parse_bool(dataset: str, key: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ConnectorError(f"dataset '{dataset}': param {key} must be true or false, got '{value}'")


def parse_delimiter(dataset: str, value: str) -> str:
    text = "\t" if value in ("\\t", "tab") else value
    if len(text) != 1:
        raise ConnectorError(f"dataset '{dataset}': param csv_delimiter must be one character (or \\t), got '{value}'")
    return text


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(dataset: str, key: str, value: str) -> float:
    """`30s`, `500ms`, `2m`, `1h` or a bare number of seconds -> seconds (> 0)."""
    match = _DURATION.match(str(value))
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ConnectorError(
            f"dataset '{dataset}': param {key} must be a positive duration like 30s, 500ms, 2m or 1h, got '{value}'"
        )
    return seconds


UNSUPPORTED_TYPE_ACTIONS = ("error", "warn", "ignore", "string")


def check_type_action(dataset: str, value: str) -> str:
    if value not in UNSUPPORTED_TYPE_ACTIONS:
        raise ConnectorError(
            f"dataset '{dataset}': unknown unsupported_type_action '{value}'; allowed: {', '.join(UNSUPPORTED_TYPE_ACTIONS)}"
        )
    return value
