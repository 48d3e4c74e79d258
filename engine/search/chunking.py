"""Splitting long text into overlapping chunks before embedding (Spice's `chunking` keys).

Sizes count words (runs of non-space characters), a model-independent stand-in for tokens: the
engine does not run the model's tokenizer. Each chunk is a slice of the original text."""

from __future__ import annotations

import re

from ..config import Chunking

_WORD = re.compile(r"\S+")


def chunks(text: str, chunking: Chunking | None) -> list[str]:
    """`text` as one chunk, or (chunking enabled) windows of `target_chunk_size` words that
    overlap by `overlap_size` words. Never empty: a blank text is one (blank) chunk."""
    if chunking is None or not chunking.enabled:
        return [text]
    spans = [m.span() for m in _WORD.finditer(text)]
    size = chunking.target_chunk_size
    if len(spans) <= size:
        return [text.strip() if chunking.trim_whitespace else text]
    step = max(1, size - min(chunking.overlap_size, size - 1))
    out = []
    for start in range(0, len(spans), step):
        window = spans[start:start + size]
        end = window[-1][1]
        if not chunking.trim_whitespace:  # keep the whitespace up to the next word
            following = start + len(window)
            end = spans[following][0] if following < len(spans) else len(text)
        out.append(text[window[0][0]:end])
        if start + size >= len(spans):
            break
    return out
