"""Load YAML keeping the line of every key and item, and report syntax errors and duplicate keys.

Paths are tuples of mapping keys (str) and list indexes (int), e.g. ("datasets", 0, "name"),
shown as `datasets[0].name`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError

Path = tuple[Any, ...]


@dataclass(frozen=True)
class YamlProblem:
    """A problem found while reading the YAML itself (before any spicepod validation)."""

    line: int | None
    path: Path
    message: str


class _Constructor(RoundTripConstructor):
    """Round-trip constructor that records duplicate keys instead of raising on the first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duplicates: list[tuple[Any, str, int, int | None]] = []

    def check_mapping_key(self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any) -> bool:
        if key in mapping:
            first = next((k.start_mark.line + 1 for k, _ in node.value if k.value == key_node.value), None)
            self.duplicates.append((mapping, str(key), key_node.start_mark.line + 1, first))
            return False
        return True


def load_yaml(text: str) -> tuple[Any, list[YamlProblem]]:
    """Parse `text`; return (root node or None, problems). Never raises for bad YAML."""
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    try:
        root = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = ": ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
        return None, [YamlProblem(mark.line + 1 if mark else None, (), f"YAML syntax error: {what}")]
    except YAMLError as e:  # pragma: no cover - unmarked errors are rare
        return None, [YamlProblem(None, (), f"YAML syntax error: {e}")]
    problems = []
    dups = yaml.constructor.duplicates
    if dups:
        paths = {id(node): path for path, node in walk(root)}
        for mapping, key, line, first in dups:
            where = f" (first at line {first})" if first else ""
            path = paths.get(id(mapping), ()) + (key,)
            problems.append(YamlProblem(line, path, f"duplicate key '{key}'{where}"))
    return root, problems


def walk(node: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Yield (path, node) for `node` and everything below it."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, path + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def _find_key(node: dict, step: Any) -> Any:
    for k in node:
        if k == step or str(k) == str(step):
            return k
    raise KeyError(step)


def line_of(root: Any, path: Path) -> tuple[int | None, int]:
    """Line (1-based) of the deepest node on `path` that exists, and how many steps matched."""
    line = 1 if root is not None else None
    node, depth = root, 0
    for step in path:
        try:
            if isinstance(node, CommentedMap) and not isinstance(step, int):
                key = _find_key(node, step)
                line, node = node.lc.key(key)[0] + 1, node[key]
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node):
                line, node = node.lc.item(step)[0] + 1, node[step]
            else:
                break
        except KeyError:
            break
        depth += 1
    return line, depth


def format_path(path: Path) -> str:
    """("datasets", 0, "acceleration", "engine") -> "datasets[0].acceleration.engine"."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else str(step)
    return out
