"""JSON pointers (RFC 6901) and the pagination styles of JSON APIs.

A `Paginator` turns one page's response into the next page's URL, or None at the end:

- `none`: one request.
- `link`: the `Link: <url>; rel="next"` response header (GitHub, GitLab, RFC 8288); the end is
  a response without one.
- `cursor`: a value in the body (`cursor_pointer`) sent back as the query parameter
  `cursor_param`; a value that is itself an http(s) URL is followed as the next page's URL.
  The end is a missing, null or empty cursor.
- `page`: `page_param` = start, start+1, ... (`size_param` = page size when given);
- `offset`: `offset_param` = 0, n, 2n, ... with `limit_param` = n.
  For `page` and `offset` the end is an empty page, or a page shorter than the page size (so
  the page size must not exceed the API's own maximum, or the first short page ends the read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from engine.errors import ConnectorError

PAGINATION_STYLES = ("none", "link", "cursor", "page", "offset")
_MISSING = object()


def parse_pointer(dataset: str, key: str, text: str) -> tuple[str, ...]:
    """An RFC 6901 JSON pointer (`""` = the whole document, `/data/items`) -> its tokens."""
    if text == "":
        return ()
    if not text.startswith("/"):
        raise ConnectorError(
            f"dataset '{dataset}': param {key} must be a JSON pointer starting with '/', e.g. /data/items, got '{text}'")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/"))


def resolve(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at `tokens` in `doc`, or `MISSING` (see `is_missing`) when a step is absent."""
    node = doc
    for token in tokens:
        if isinstance(node, dict):
            node = node.get(token, _MISSING)
        elif isinstance(node, list) and token.isdigit() and (token == "0" or not token.startswith("0")):
            index = int(token)
            node = node[index] if index < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def is_missing(value: Any) -> bool:
    return value is _MISSING


def describe_path(doc: Any, tokens: tuple[str, ...]) -> str:
    """Where resolving `tokens` stops, and the keys found there (names only, never values)."""
    node = doc
    for depth, token in enumerate(tokens):
        step = resolve(node, (token,))
        if is_missing(step):
            here = "/" + "/".join(tokens[:depth])
            if isinstance(node, dict):
                keys = ", ".join(sorted(map(str, node))[:20]) or "none"
                return f"no member '{token}' at '{here}' (members: {keys})"
            return f"'{here}' is {json_kind(node)}, not an object"
        node = step
    return "found"


def json_kind(value: Any) -> str:
    """`an array`, `an object`, `a string`, ... for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


@dataclass(frozen=True)
class Pagination:
    """A pagination style and its parameters (validated by the connector)."""

    style: str = "link"
    cursor_pointer: tuple[str, ...] = ()
    cursor_param: str = "cursor"
    page_param: str = "page"
    page_start: int = 1
    size_param: str | None = None  # page style: optional page-size parameter
    page_size: int | None = None
    offset_param: str = "offset"
    limit_param: str = "limit"

    def first_url(self, base: httpx.URL) -> httpx.URL:
        """The URL of the first page."""
        if self.style == "page":
            url = base.copy_set_param(self.page_param, str(self.page_start))
            return url.copy_set_param(self.size_param, str(self.page_size)) if self.size_param else url
        if self.style == "offset":
            return base.copy_set_param(self.offset_param, "0").copy_set_param(self.limit_param, str(self.page_size))
        return base

    def next_url(self, url: httpx.URL, index: int, response: httpx.Response, body: Any, rows: int
                 ) -> httpx.URL | None:
        """The URL after page `index` (0-based) at `url`, which returned `rows` records; None at the end."""
        if self.style == "none":
            return None
        if self.style == "link":
            link = response.links.get("next", {}).get("url")
            return url.join(link) if link else None
        if self.style == "cursor":
            cursor = resolve(body, self.cursor_pointer)
            if is_missing(cursor) or cursor is None or cursor == "" or isinstance(cursor, (dict, list, bool)):
                return None
            text = str(cursor)
            if text.startswith(("http://", "https://")):
                return url.join(text)
            return url.copy_set_param(self.cursor_param, text)
        if rows == 0 or (self.page_size is not None and rows < self.page_size):
            return None
        if self.style == "page":
            return url.copy_set_param(self.page_param, str(self.page_start + index + 1))
        offset = int(url.params.get(self.offset_param, "0"))  # advance by what came, not what was asked
        return url.copy_set_param(self.offset_param, str(offset + rows))
