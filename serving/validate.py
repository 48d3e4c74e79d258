"""`satchel validate`'s checks past loading the pod: `file:` sources exist, views name known
tables ("did you mean ...?"), and with `--connect` every source answers (its schema, in time).
Each problem is one `file:line: key: message` line, as the pod loader reports its own."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlglot import exp

from engine.config import Pod, did_you_mean
from engine.errors import ConfigIssue, SatchelError
from engine.redact import redact
from engine.yaml_positions import format_path, line_of, load_yaml


def problems(pod: Pod, connect: bool = False, timeout: float = 10.0) -> list[ConfigIssue]:
    """Every problem found, in pod order."""
    root, _ = load_yaml(Path(pod.source_file).read_text(encoding="utf-8"))

    def issue(path: tuple, message: str) -> ConfigIssue:
        return ConfigIssue(pod.source_file, line_of(root, path)[0], format_path(path), message)

    missing = list(_files(pod))
    found = [issue(path, message) for path, message in missing]
    found += [issue(path, message) for path, message in _view_tables(pod)]
    if connect:
        skip = {path[1] for path, _ in missing}  # reported already
        found += [issue(path, message) for path, message in _connect(pod, timeout, skip)]
    return found


def _files(pod: Pod) -> Iterator[tuple[tuple, str]]:
    """`file:` sources whose file, directory or glob finds nothing (the runtime's own message)."""
    from engine.refresh.dataset import connector_for

    for i, ds in enumerate(pod.datasets):
        if ds.connector_prefix != "file":
            continue
        try:
            connector_for(ds, pod.base_dir, pod.name).files()
        except SatchelError as e:
            yield ("datasets", i, "from"), e.message


def _view_tables(pod: Pod) -> Iterator[tuple[tuple, str]]:
    """Tables a view's SQL reads that are neither a dataset nor a view."""
    from engine.query.planner import _names_cte_in_scope
    from engine.query.sql_policy import parse_query

    known = {item.name.lower(): item.name for item in (*pod.datasets, *pod.views)}
    for i, view in enumerate(pod.views):
        try:
            tree, _ = parse_query(view.sql)
        except SatchelError as e:
            yield ("views", i, "sql"), e.message
            continue
        for table in tree.find_all(exp.Table):
            if table.db.lower() == "runtime" or (not table.db and _names_cte_in_scope(table)):
                continue
            if table.name.lower() not in known:
                hint = did_you_mean(table.name.lower(), known)  # names are case-insensitive
                message = f"view '{view.name}': unknown table '{table.name}'"
                yield ("views", i, "sql"), message + (f";{hint}" if hint else "")


def _connect(pod: Pod, timeout: float, skip: set[int]) -> Iterator[tuple[tuple, str]]:
    """Sources (but the datasets in `skip`) that do not answer with their schema within `timeout` seconds."""
    from engine.refresh.dataset import connector_for

    for i, ds in enumerate(pod.datasets):
        if i in skip:
            continue
        error = _within(timeout, lambda ds=ds: connector_for(ds, pod.base_dir, pod.name).schema())
        if error:
            error = error.removeprefix(f"dataset '{ds.name}': ")
            yield ("datasets", i, "from"), redact(f"dataset '{ds.name}': the source does not answer: {error}",
                                                  pod.secret_values)


def _within(timeout: float, work: Callable[[], Any]) -> str | None:
    """None when `work()` returns within `timeout` seconds, else what went wrong."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - reported, never raised
            outcome.append(e)

    thread = threading.Thread(target=run, name="satchel-validate", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer in {timeout:g}s"
    e = outcome[0]
    if e is None:
        return None
    return e.message if isinstance(e, SatchelError) else f"{type(e).__name__}: {e}"
