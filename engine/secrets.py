"""`${secrets:NAME}` / `${env:NAME}` / `${<store>:NAME}` substitution in spicepod string values.

Only the `env` secret store exists today: it reads environment variables. Resolved values are
wrapped in `SecretText`, a `str` whose repr is masked, so a pod printed in a log or a traceback
never shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

REF = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*:\s*([^{}\s]+)\s*\}")
SUPPORTED_STORES = ("env",)


class SecretText(str):
    """A string that holds (part of) a secret. Behaves as `str`; its repr is `'***'`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


@dataclass
class Substitution:
    """The outcome of substituting one string value."""

    value: str
    secrets: list[str] = field(default_factory=list)  # resolved values, for redaction
    problems: list[str] = field(default_factory=list)  # messages without any secret value
    unresolved: bool = False  # some reference could not be resolved

    @property
    def changed(self) -> bool:
        return bool(self.secrets) or self.unresolved


class SecretResolver:
    """Resolves references against the pod's secret stores (all env-backed today).

    `${secrets:NAME}` searches every store; `${env:NAME}` and `${<store name>:NAME}` one store.
    References to declared stores that are not supported are left unresolved silently: the
    store itself is reported as "not supported yet" elsewhere.
    """

    def __init__(self, env: Mapping[str, str], stores: Iterable[str] = ("env",),
                 unsupported_stores: Iterable[str] = ()):
        self.env = env
        self.stores = {"env", *stores}
        self.unsupported = set(unsupported_stores) - self.stores

    def known(self) -> list[str]:
        return sorted({"secrets", *self.stores})

    def substitute(self, text: str) -> Substitution:
        """Replace every reference in `text`; collect problems instead of raising."""
        out = Substitution(text)

        def repl(m: re.Match[str]) -> str:
            store, name = m.group(1), m.group(2)
            if store in self.unsupported:
                out.unresolved = True
                return m.group(0)
            if store != "secrets" and store not in self.stores:
                out.unresolved = True
                out.problems.append(f"unknown secret store '{store}' in {m.group(0)}; known: {', '.join(self.known())}")
                return m.group(0)
            value = self.env.get(name)
            if value is None:
                out.unresolved = True
                out.problems.append(
                    f"secret '{name}' is not set ({m.group(0)}); the env secret store reads it from "
                    f"the environment variable {name}"
                )
                return m.group(0)
            out.secrets.append(value)
            return value

        out.value = REF.sub(repl, text)
        return out
