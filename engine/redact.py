"""Remove secrets from text before it reaches a client, a log or task history.

Two layers, both applied by `redact`:

* the pod's secret values (`${secrets:...}`), verbatim and percent-encoded;
* credentials wherever they sit in a value, whether or not they came from a secret: URL user
  info (`scheme://user:***@host`), credential query parameters (`?password=***&token=***`),
  connection-string keywords (`password=***`), JSON credential fields, `Authorization:`
  header values and Bearer tokens.

`redact_value` walks JSON-like structures (status pages); `install_log_redaction` masks every
log record of the process.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

MASK = "***"

# scheme://user:password@  (the password may hold '@' or '/': the user info ends at the run's last '@')
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@'\"<>]*:)[^\s'\"<>]*@")
# scheme://token@  (user info without a password, e.g. a token as the user name)
_URL_USER = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s:/@'\"<>]+@")
_CREDENTIAL_KEYS = (r"password|passwd|pwd|pass|token|access_token|refresh_token|id_token|api_key|apikey|"
                    r"api-key|key|secret|client_secret|sig|signature|auth|credentials?")
# ?password=... &token=...  (query strings and form bodies)
_QUERY_PARAM = re.compile(rf"(?i)([?&;](?:{_CREDENTIAL_KEYS})=)[^&#\s'\"<>]*")
# password=... in libpq / ODBC style connection strings, quoted or not
_KEYWORD = re.compile(r"(?i)\b((?:password|passwd|pwd)\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s;,'\"&]+)")
# Authorization: <scheme> <credentials>, and bare Bearer/Basic tokens
_AUTH_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?(?:(?:bearer|basic|token|digest)\s+)?)([^\s'\",;}]+)")
_BEARER = re.compile(r"\b(Bearer)\s+(?![<*])[A-Za-z0-9._~+/=\-]{4,}")
# "password": "..." in JSON bodies (an upstream echoing its request)
_JSON_FIELD = re.compile(rf'(?i)("(?:{_CREDENTIAL_KEYS})"\s*:\s*")(?:[^"\\]|\\.)*"')

# /dir/sub/name: an absolute path of two parts or more, not a URL's path or a fraction (a/b)
_FILE_PATH = re.compile(r"(?<![\w.:/~%-])/(?:[\w.@+=,-]+/)+")

_LOG_SECRETS: set[str] = set()
_LOG_LOCK = threading.Lock()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every non-empty secret (also percent-encoded) and every credential masked.

    Longer secrets are replaced first so a secret that contains another is masked whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
        encoded = urllib.parse.quote(secret, safe="")
        if encoded != secret:
            text = text.replace(encoded, MASK)
    return mask_credentials(text)


def mask_credentials(text: str) -> str:
    """`text` with credential-shaped parts masked (no secret list needed)."""
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    text = _URL_USER.sub(rf"\1{MASK}@", text)
    text = _QUERY_PARAM.sub(rf"\1{MASK}", text)
    text = _KEYWORD.sub(rf"\1{MASK}", text)
    text = _AUTH_HEADER.sub(lambda m: m.group(0) if m.group(2)[0] in "<*" else m.group(1) + MASK, text)
    text = _JSON_FIELD.sub(rf'\1{MASK}"', text)
    return _BEARER.sub(rf"\1 {MASK}", text)


def hide_paths(text: str) -> str:
    """`text` with the directories of absolute file paths left out (`.../name`): a client learns
    which file an engine could not read, not the sidecar's file layout. Logs keep them."""
    return _FILE_PATH.sub(".../", text)


def public_message(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` as a client may read it: redacted and without file paths' directories."""
    return hide_paths(redact(text, secrets))


def redact_value(value: Any, secrets: Iterable[str] = ()) -> Any:
    """`value` (dicts, lists, strings, scalars) with every string redacted."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, secrets) for v in value]
    return value


class _RedactedRecord(logging.LogRecord):
    """A log record whose message and exception text are redacted (after the filters that
    rewrite its arguments have run, when a handler formats it)."""

    def getMessage(self) -> str:
        return redact(super().getMessage(), _LOG_SECRETS)


def install_log_redaction(secrets: Iterable[str]) -> None:
    """Mask `secrets` and credentials in every log record this process creates from now on
    (message and exception text), whichever logger or handler writes it."""
    with _LOG_LOCK:
        _LOG_SECRETS.update(s for s in secrets if s)
        make = logging.getLogRecordFactory()
        if getattr(make, "_satchel_redacts", False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            if type(record) is logging.LogRecord:
                record.__class__ = _RedactedRecord
            if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info), _LOG_SECRETS)
            return record

        factory._satchel_redacts = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
