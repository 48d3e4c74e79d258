"""Load `spicepod.yaml` into frozen models, reporting every problem with file, line and key.

    pod = load_pod("spicepod.yaml")          # raises ConfigError listing all issues
    print(describe_errors(err))              # "file:line: key: message", one per line

Steps: parse YAML with positions -> substitute `${secrets:..}`/`${env:..}` -> flag keys that are
"not supported yet" (the NOT_SUPPORTED_YET table) -> cross-field checks -> pydantic field
validation. Issues from all steps are collected, then raised together. Messages never contain
a resolved secret: a value that came from a secret is shown as its `${...}` reference.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path as _FsPath
from typing import Any, Iterable, Iterator, Mapping, NoReturn, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .config_checks import check_pod
from .config_models import (
    ACCELERATION_PARAMS, INTERNAL_FIELDS, Acceleration, ApiKeyAuth, AuthConfig, Chunking, Column, ColumnEmbedding,
    Dataset, Embedding, FullTextSearch, Model, Pod, ResultsCacheConfig, RuntimeConfig, RuntimeParams, SecretStore, TaskHistoryConfig,
    TlsConfig, View, split_from,
)
from .config_types import FrozenMap, kind_of
from .durations import format_duration, parse_duration
from .errors import ConfigError, ConfigIssue, NotSupportedYet
from .redact import redact
from .secrets import REF, SUPPORTED_STORES, SecretResolver, SecretText
from .yaml_positions import Path, format_path, line_of, load_yaml

__all__ = [
    "ACCELERATION_PARAMS", "Acceleration", "ApiKeyAuth", "AuthConfig", "Chunking", "Column", "ColumnEmbedding",
    "ConfigError", "ConfigIssue", "Dataset", "Embedding", "FullTextSearch", "FrozenMap", "Model", "NOT_SUPPORTED_YET", "NotSupportedYet", "Pod",
    "ResultsCacheConfig", "RuntimeConfig", "RuntimeParams", "SecretStore", "TaskHistoryConfig",
    "TlsConfig", "View", "describe_errors", "format_duration", "load_pod", "load_pod_text",
    "parse_duration", "split_from",
]

# Documented keys Satchel does not implement yet. Edit this table as features land.
# Key forms: `a.b` (present and non-empty), `a.b=value`, `a.b!=value`; `x[]` = every item of list x.
NOT_SUPPORTED_YET: tuple[tuple[str, str], ...] = (
    ("secrets[].from!=env", "secret stores other than 'env' are not supported yet"),
    ("datasets[].access=read_write", "writable datasets (access: read_write) are not supported yet"),
)

_FREE_MAPS = ("params", "on_conflict", "indexes")  # user-keyed maps: a null value there is an error
_SENSITIVE = re.compile(r"pass|secret|token|api_?key|connection_string|auth|credential", re.IGNORECASE)
_FRIENDLY = {
    "bool_parsing": "expected true or false", "bool_type": "expected true or false",
    "int_parsing": "expected an integer", "int_type": "expected an integer",
    "int_from_float": "expected an integer", "string_type": "expected a string",
    "tuple_type": "expected a list", "list_type": "expected a list",
    "dict_type": "expected a mapping", "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def known_connector_prefixes() -> list[str]:
    """Connector prefixes the runtime can load (the registry is the single source of truth)."""
    from connectors.registry import known_prefixes

    return known_prefixes()


def load_pod(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Pod:
    """Load the spicepod at `path`; `env` (default os.environ) backs the env secret store."""
    file = os.fspath(path)
    try:
        text = _FsPath(file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(file, None, "", "cannot read the file: it is not UTF-8 text")]) from None
    except OSError as e:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read the file: {e.strerror or e}")]) from None
    return load_pod_text(text, file=file, env=env, base_dir=os.path.dirname(os.path.abspath(file)))


def load_pod_text(text: str, file: str = "spicepod.yaml", env: Mapping[str, str] | None = None,
                  base_dir: str | None = None) -> Pod:
    """Load a spicepod from `text`; `file` is only used in messages and for the default base_dir."""
    base = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(file))
    return _Loader(file, os.environ if env is None else env).load(text, base)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` did you mean 'x'?` for the closest of `known` to `name` (difflib), else ''."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" did you mean '{close[0]}'?" if close else ""


def unknown_key(key: str, allowed: Iterable[str]) -> str:
    """The message for an unknown key: the closest allowed one, then all of them."""
    allowed = list(allowed)
    return f"unknown key '{key}';{did_you_mean(key, allowed)} allowed: {', '.join(allowed)}"


def describe_errors(err: ConfigError) -> str:
    """What `satchel validate` prints: one `file:line: key: message` per issue."""
    return "\n".join(str(i) for i in err.issues) or str(err)


class _Loader:
    """One load of one file: collects issues from every step, then raises them together."""

    def __init__(self, file: str, env: Mapping[str, str]):
        self.file, self.env = file, env
        self.root: Any = None
        self.issues: list[tuple[int | None, str, str]] = []
        self.raw: dict[Path, str] = {}  # path -> original text, for values that used a secret
        self.resolved: dict[Path, str] = {}
        self.unresolved: set[Path] = set()
        self.secrets: set[str] = set()

    def add(self, path: Path, message: str, line: int | None = None) -> None:
        if line is None:
            line = line_of(self.root, path)[0]
        self.issues.append((line, format_path(path), message))

    def load(self, text: str, base_dir: str) -> Pod:
        self.root, problems = load_yaml(text)
        for p in problems:
            self.issues.append((p.line, format_path(p.path), p.message))
        if self.root is None and not problems:
            self.add((), "the file is empty; expected a mapping with version, kind, name, datasets, ...", None)
        elif self.root is not None and not isinstance(self.root, dict):
            self.add((), f"expected a mapping at the top level (version, kind, name, ...), got {kind_of(self.root)}", 1)
        if not isinstance(self.root, dict):
            self.fail()
        plain = self.substitute(self.root, (), _resolver(self.root, self.env))
        self.prepare(plain)
        self.not_supported(plain)
        for path, message in check_pod(plain, known_connector_prefixes):
            self.add(path, message)
        data = {**plain, "source_file": self.file, "base_dir": base_dir, "secret_values": frozenset(self.secrets)}
        pod = None
        try:
            pod = Pod.model_validate(data)
        except ValidationError as e:
            self.validation_issues(e)
        if self.issues or pod is None:
            self.fail()
        return pod

    def fail(self) -> NoReturn:
        seen, issues = set(), []
        for line, key, message in sorted(self.issues, key=lambda i: (i[0] or 0, i[1])):
            if (line, key, message) not in seen:
                seen.add((line, key, message))
                issues.append(ConfigIssue(self.file, line, key, _scrub(message, self.secrets)))
        raise ConfigError(issues)

    # -- secrets -------------------------------------------------------------------------
    def substitute(self, node: Any, path: Path, resolver: SecretResolver) -> Any:
        """A plain copy of the YAML tree with references resolved (SecretText where used)."""
        if isinstance(node, dict):
            return {str(k): self.substitute(v, path + (str(k),), resolver) for k, v in node.items()}
        if isinstance(node, list):
            return [self.substitute(v, path + (i,), resolver) for i, v in enumerate(node)]
        if isinstance(node, str):
            sub = resolver.substitute(str(node))
            for problem in sub.problems:
                self.add(path, problem)
            if sub.unresolved:
                self.unresolved.add(path)
                return str(node)
            if sub.changed:
                self.raw[path], self.resolved[path] = str(node), sub.value
                self.secrets.update(s for s in sub.secrets if s)
                return SecretText(sub.value)
            return str(node)
        if isinstance(node, bool) or type(node).__name__ == "ScalarBoolean":
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        return node

    # -- normalisation -------------------------------------------------------------------
    def prepare(self, plain: dict) -> None:
        """Reject loader-only keys, drop nulls (= default), mask literal credentials."""
        for key in INTERNAL_FIELDS:
            if key in plain:
                self.add((key,), unknown_key(key, _yaml_keys(Pod)))
                del plain[key]
        for section in ("datasets", "models", "embeddings", "secrets"):
            for i, item in enumerate(plain.get(section) or []):
                if isinstance(item, dict) and "from_" in item:
                    self.add((section, i, "from_"), "unknown key 'from_'; did you mean 'from'?")
                    del item["from_"]
        _drop_nulls(plain)
        for parent, key in _credentials(plain):
            value = parent[key]
            if isinstance(value, str) and value and not isinstance(value, SecretText):
                parent[key] = SecretText(value)
                self.secrets.add(value)

    def not_supported(self, plain: dict) -> None:
        for spec, reason in NOT_SUPPORTED_YET:
            for path in _matches(plain, spec):
                self.add(path, reason)

    # -- pydantic errors -----------------------------------------------------------------
    def validation_issues(self, err: ValidationError) -> None:
        for e in err.errors(include_url=False):
            loc = tuple(x for x in e["loc"] if x != "[key]")
            if any(loc[:n] in self.unresolved for n in range(1, len(loc) + 1)):
                continue  # already reported as a missing secret
            ctx = e.get("ctx") or {}
            if e["type"] == "unknown_keys":
                for key in ctx["keys"]:
                    self.add(loc + (key,), unknown_key(key, ctx["allowed"]))
                continue
            self.add(loc, self.message(loc, e))

    def message(self, loc: Path, e: Mapping[str, Any]) -> str:
        typ, ctx = e["type"], e.get("ctx") or {}
        if typ == "extra_forbidden":
            return unknown_key(str(loc[-1]), _allowed_keys(loc[:-1]))
        if typ == "missing":
            return f"missing required key '{loc[-1]}'"
        got = self.shown(loc, e.get("input"))
        if typ == "literal_error":
            allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            return f"invalid value {got}; allowed: {', '.join(allowed)}"
        if typ in ("value_error", "assertion_error") and "error" in ctx:
            msg = str(ctx["error"])
        elif typ == "greater_than_equal":
            msg = f"must be at least {ctx.get('ge')} (got {got})"
        else:
            msg = f"{_FRIENDLY.get(typ, e['msg'])} (got {got})"
        if loc in self.raw and self.resolved.get(loc):
            msg = msg.replace(self.resolved[loc], self.raw[loc])
        return msg

    def shown(self, loc: Path, value: Any) -> str:
        if loc in self.raw:
            return self.raw[loc]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return repr(value if len(value) <= 60 else value[:57] + "...")
        if isinstance(value, (int, float)):
            return str(value)
        return kind_of(value)


def _resolver(root: Mapping[str, Any], env: Mapping[str, str]) -> SecretResolver:
    stores, unsupported = [], []
    declared = root.get("secrets")
    for item in declared if isinstance(declared, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            (stores if item.get("from") in SUPPORTED_STORES else unsupported).append(item["name"])
    return SecretResolver(env, stores or ["env"], unsupported)


def _scrub(message: str, secrets: Iterable[str]) -> str:
    """Redact secret values, leaving `${...}` references intact."""
    out, pos = [], 0
    for m in REF.finditer(message):
        out += [redact(message[pos:m.start()], secrets), m.group(0)]
        pos = m.end()
    out.append(redact(message[pos:], secrets))
    return "".join(out)


def _drop_nulls(node: Any, free: bool = False) -> None:
    """Remove `key:` entries with no value (they mean "use the default"), except in user maps."""
    if isinstance(node, dict):
        for k in list(node):
            if node[k] is None and not free:
                del node[k]
            else:
                _drop_nulls(node[k], free=k in _FREE_MAPS)
    elif isinstance(node, list):
        for item in node:
            _drop_nulls(item)


def _credentials(plain: dict) -> Iterator[tuple[Any, Any]]:
    """(container, key) of literal credentials: sensitive params and API keys."""
    for section in ("datasets", "models", "embeddings"):
        for i, item in enumerate(plain.get(section) or []):
            params = item.get("params") if isinstance(item, dict) else None
            if isinstance(params, dict):
                for key in params:
                    if _SENSITIVE.search(key):
                        yield params, key
    runtime = plain.get("runtime")
    api = ((runtime or {}).get("auth") or {}).get("api_key") if isinstance(runtime, dict) else None
    keys = api.get("keys") if isinstance(api, dict) else None
    if isinstance(keys, list):
        for i in range(len(keys)):
            yield keys, i


def _matches(plain: dict, spec: str) -> Iterator[Path]:
    """Paths in `plain` that match one NOT_SUPPORTED_YET key form."""
    key, op, want = re.match(r"([^=!]+)(?:(!=|=)(.*))?$", spec).groups()  # type: ignore[union-attr]
    for path, value in _find(plain, key.split("."), ()):
        have = ("true" if value else "false") if isinstance(value, bool) else str(value).lower()
        if op is None and value not in (None, "", [], {}, False):
            yield path
        elif op == "=" and have == want.lower():
            yield path
        elif op == "!=" and value is not None and have != want.lower():
            yield path


def _find(node: Any, steps: list[str], path: Path) -> Iterator[tuple[Path, Any]]:
    if not steps:
        yield path, node
        return
    name, each = steps[0].removesuffix("[]"), steps[0].endswith("[]")
    if not isinstance(node, dict) or name not in node:
        return
    child = node[name]
    if not each:
        yield from _find(child, steps[1:], path + (name,))
    elif isinstance(child, list):
        for i, item in enumerate(child):
            yield from _find(item, steps[1:], path + (name, i))


def _yaml_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items() if n not in INTERNAL_FIELDS]


def _allowed_keys(path: Path) -> list[str]:
    """The YAML keys of the model at `path` (walking field annotations from Pod)."""
    tp: Any = Pod
    for step in path:
        tp = _unwrap(tp)
        if isinstance(step, int):
            args = get_args(tp)
            tp = args[0] if args else None
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if step in (n, f.alias)), None)
            tp = field.annotation if field else None
        else:
            tp = None
    tp = _unwrap(tp)
    return _yaml_keys(tp) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """Strip Optional[...] from an annotation."""
    if get_origin(tp) is Union or type(tp).__name__ == "UnionType":
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp
