"""Checks that span fields or items of a spicepod, run on the plain (substituted) YAML tree.

They run even when field validation fails elsewhere, so every problem is reported in one pass;
each check skips values of the wrong type (field validation reports those). Each yields
(path, message); the loader turns paths into lines.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable, Iterator

from .config_types import parse_columns
from .durations import parse_duration
from .yaml_positions import Path

Finding = tuple[Path, str]


CHANGES_SOURCES = ("postgres", "mongodb")  # connectors that read a change feed
# connectors whose schema a pod's column types override (inferred, or read through a driver
# that loses types: SQLite dates, Iceberg's narrow integers, Elasticsearch arrays)
TYPED_COLUMN_SOURCES = ("http", "https", "mongodb", "elasticsearch", "iceberg", "flightsql", "adbc")
SNAPSHOT_APPEND_SOURCES = ("iceberg",)  # append by snapshot: no time_column needed


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[tuple[int, dict]]:
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)] if isinstance(value, list) else []


def _set(value: Any) -> bool:
    return value is not None and value != "" and value is not False


def check_pod(pod: dict, known_prefixes: Callable[[], Iterable[str]]) -> Iterator[Finding]:
    """All cross-field findings for a whole pod."""
    yield from _unique_names(pod)
    embedders = {e.get("name") for _, e in _items(pod.get("embeddings"))}
    for i, ds in _items(pod.get("datasets")):
        yield from _connector(("datasets", i), ds, known_prefixes)
        yield from _column_types(("datasets", i), ds)
        yield from _acceleration(("datasets", i), ds)
        yield from _search_columns(("datasets", i), ds, embedders)
    yield from _runtime(_d(pod.get("runtime")))
    yield from _principals(pod)
    yield from _snapshots(pod)


def _principals(pod: dict) -> Iterator[Finding]:
    """A principal's dataset names (not globs) must name datasets or views; names are unique."""
    known = {item["name"].lower(): item["name"] for section in ("datasets", "views")
             for _, item in _items(pod.get(section)) if isinstance(item.get("name"), str)}
    seen: set[str] = set()
    for i, p in _items(_d(_d(pod.get("runtime")).get("auth")).get("principals")):
        at = ("runtime", "auth", "principals", i)
        name = p.get("name")
        if isinstance(name, str):
            if name.lower() in seen or name.lower().startswith("api_key_"):
                yield at + ("name",), f"principal name '{name}' is taken (names are unique; api_key_N names keys)"
            seen.add(name.lower())
        entries = p.get("datasets") if isinstance(p.get("datasets"), list) else []
        for j, entry in enumerate(entries):
            target = entry.get("name") if isinstance(entry, dict) else entry
            if not isinstance(target, str) or any(c in target for c in "*?["):
                continue
            if target.lower() not in known:
                close = difflib.get_close_matches(target.lower(), list(known), n=1)
                hint = f"; did you mean '{known[close[0]]}'?" if close else ""
                yield at + ("datasets", j) + (("name",) if isinstance(entry, dict) else ()), \
                    f"'{target}' is not a dataset or view of this pod{hint}"


def _column_types(at: tuple, ds: dict) -> Iterator[Finding]:
    """A column `type` overrides an inferred schema; a source with real types would ignore it."""
    prefix = str(ds.get("from", "")).partition(":")[0]
    if prefix in TYPED_COLUMN_SOURCES:
        return
    for j, col in _items(ds.get("columns")):
        if _set(col.get("type")):
            yield at + ("columns", j, "type"), (
                f"{prefix} datasets take their column types from the source; `type` applies only to sources "
                f"that take pod types ({', '.join(TYPED_COLUMN_SOURCES)})")


def _unique_names(pod: dict) -> Iterator[Finding]:
    seen: dict[str, str] = {}
    for section, what in (("datasets", "dataset"), ("views", "view")):
        for i, item in _items(pod.get(section)):
            name = item.get("name")
            if not isinstance(name, str):
                continue
            first = seen.get(name.lower())
            if first:
                yield (section, i, "name"), f"duplicate name '{name}': {first} already uses it (names are case-insensitive)"
            else:
                seen[name.lower()] = f"{what} {section}[{i}]"
    names: dict[str, str] = {}  # models and embeddings share the OpenAI routes' `model` ids
    for section in ("models", "embeddings"):
        for i, item in _items(pod.get(section)):
            name = item.get("name")
            if isinstance(name, str) and name in names:
                yield (section, i, "name"), f"duplicate name '{name}': {names[name]} already uses it"
            elif isinstance(name, str):
                names[name] = f"{section}[{i}]"


def _search_columns(at: Path, ds: dict, embedders: set) -> Iterator[Finding]:
    """Embedding columns and full-text indexes live in the accelerator and need each row's identity."""
    acc = ds.get("acceleration")
    accelerated = isinstance(acc, dict) and acc.get("enabled") is not False
    pk = _d(acc).get("primary_key") if accelerated else None
    for j, col in _items(ds.get("columns")):
        where = at + ("columns", j)
        for k, emb in _items(col.get("embeddings")):
            if not accelerated:
                yield where + ("embeddings", k), "embedding columns need the dataset accelerated (acceleration.enabled: true)"
            name = emb.get("from")
            if isinstance(name, str) and name not in embedders:
                known = ", ".join(sorted(str(e) for e in embedders if e)) or "none (add an `embeddings:` entry)"
                yield where + ("embeddings", k, "from"), f"unknown embedding model '{name}'; embeddings: {known}"
            if not _set(emb.get("row_id")) and not _set(pk):
                yield where + ("embeddings", k), "embedding columns need row_id (or acceleration.primary_key)"
        if len(col.get("embeddings") or []) > 1:
            yield where + ("embeddings",), "one embedding model per column is supported"
        fts = _d(col.get("full_text_search"))
        if fts.get("enabled") is True:
            if not accelerated:
                yield where + ("full_text_search",), "full_text_search needs the dataset accelerated (acceleration.enabled: true)"
            if not _set(fts.get("row_id")) and not _set(pk):
                yield where + ("full_text_search",), "full_text_search needs row_id (or acceleration.primary_key)"


def _connector(at: Path, ds: dict, known_prefixes: Callable[[], Iterable[str]]) -> Iterator[Finding]:
    from .config_models import split_from

    value = ds.get("from")
    if not isinstance(value, str):
        return
    try:
        prefix = split_from(value)[0]
    except ValueError:
        return  # the model reports the shape
    known = sorted(known_prefixes())
    if prefix not in known:
        yield at + ("from",), f"unknown connector '{prefix}'; known: {', '.join(known)}"


def _acceleration(at: Path, ds: dict) -> Iterator[Finding]:
    acc = ds.get("acceleration")
    if not isinstance(acc, dict):
        return
    at = at + ("acceleration",)
    if acc.get("enabled") is False:
        if isinstance(acc.get("indexes"), dict) and acc["indexes"]:
            yield at + ("indexes",), "indexes need the dataset accelerated (acceleration.enabled: true)"
        return
    has_time = _set(ds.get("time_column"))
    if _set(acc.get("refresh_check_interval")) and _set(acc.get("refresh_cron")):
        yield at + ("refresh_cron",), "set either refresh_check_interval or refresh_cron, not both"
    if acc.get("refresh_mode") == "changes":
        prefix = str(ds.get("from", "")).partition(":")[0]
        if prefix not in CHANGES_SOURCES:
            yield at + ("refresh_mode",), (f"refresh_mode: changes is not supported yet for {prefix or 'this'} sources "
                                           f"(only {' and '.join(CHANGES_SOURCES)} datasets read changes); use full or append")
        elif not _set(acc.get("primary_key")):
            yield at + ("refresh_mode",), "refresh_mode: changes needs primary_key (the rows' identity)"
        if _set(acc.get("refresh_sql")):
            yield at + ("refresh_sql",), "refresh_sql with refresh_mode: changes is not supported yet"
    if acc.get("refresh_mode") == "append" and not has_time \
            and str(ds.get("from", "")).partition(":")[0] not in SNAPSHOT_APPEND_SOURCES:
        yield at + ("refresh_mode",), "append refresh needs the dataset's time_column (the watermark column)"
    for key in ("refresh_data_window", "retention_period"):
        if _set(acc.get(key)) and not has_time:
            yield at + (key,), f"{key} needs the dataset's time_column"
    if acc.get("retention_check_enabled") is True and not _set(acc.get("retention_period")):
        yield at + ("retention_check_enabled",), "retention_check_enabled needs retention_period"
    engine = acc.get("engine", "arrow")
    if acc.get("mode") == "file" and engine == "arrow":
        yield at + ("mode",), "file mode needs engine: duckdb (the arrow engine is in memory only)"
    params = _d(acc.get("params"))
    for key in params:
        if str(key).startswith("duckdb_") and engine == "arrow":
            yield at + ("params", key), f"{key} needs engine: duckdb"
    for key in ("refresh_min_interval", "refresh_timeout"):
        if key in params:
            try:
                parse_duration(str(params[key]))
            except ValueError as e:
                yield at + ("params", key), str(e)
    yield from _conflicts(at, acc)
    yield from _indexes(at, acc, engine)


def _indexes(at: Path, acc: dict, engine: object) -> Iterator[Finding]:
    indexes = acc.get("indexes")
    if not isinstance(indexes, dict) or not indexes:
        return
    if engine != "duckdb":
        yield at + ("indexes",), "indexes need engine: duckdb (the arrow engine keeps no indexes)"
    for key in indexes:
        try:
            parse_columns(key)
        except ValueError as e:
            yield at + ("indexes", key), f"index key {key!r}: {e}"


def _conflicts(at: Path, acc: dict) -> Iterator[Finding]:
    on_conflict = acc.get("on_conflict")
    if not isinstance(on_conflict, dict) or not on_conflict:
        return
    if not _set(acc.get("primary_key")):
        yield at + ("on_conflict",), "on_conflict needs primary_key"
        return
    try:
        pk = set(parse_columns(acc["primary_key"]))
    except ValueError:
        return
    for key in on_conflict:
        try:
            cols = parse_columns(key)
        except ValueError:
            cols = (str(key),)
        missing = [c for c in cols if c not in pk]
        if missing:
            yield at + ("on_conflict", key), (
                f"on_conflict column '{missing[0]}' is not in primary_key ({', '.join(sorted(pk))})"
            )


def _snapshots(pod: dict) -> Iterator[Finding]:
    """A dataset that uses snapshots needs runtime.snapshots enabled with an s3:// location."""
    snap = _d(_d(pod.get("runtime")).get("snapshots"))
    on = snap.get("enabled") is True
    location = snap.get("location")
    if on and not (isinstance(location, str) and location.startswith("s3://")):
        yield ("runtime", "snapshots", "location"), "snapshots need location: s3://bucket/prefix"
    for i, ds in _items(pod.get("datasets")):
        mode = _d(ds.get("acceleration")).get("snapshots")
        if isinstance(mode, str) and mode not in ("disabled",) and not on:
            yield ("datasets", i, "acceleration", "snapshots"), \
                f"snapshots: {mode} needs runtime.snapshots.enabled: true and a location"


def _runtime(runtime: dict) -> Iterator[Finding]:
    tls = _d(runtime.get("tls"))
    if tls.get("enabled") is True:
        for key in ("certificate_file", "key_file"):
            if not _set(tls.get(key)):
                yield ("runtime", "tls", "enabled"), f"tls enabled needs {key}"
    api = _d(_d(runtime.get("auth")).get("api_key"))
    if api.get("enabled") is True and not api.get("keys"):
        yield ("runtime", "auth", "api_key", "enabled"), "api_key auth enabled needs at least one key in keys"
