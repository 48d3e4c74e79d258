"""Remove secret values from text before it reaches a log, an error or task history."""

from __future__ import annotations

from typing import Iterable

MASK = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of every non-empty secret in `text` with `***`.

    Longer secrets are replaced first so a secret that contains another is masked whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
