"""Map Satchel errors to Flight (gRPC) statuses, once, from `SatchelError.flight_kind`.

Clients get `<code>: <message>` and nothing else. pyarrow.flight has exception classes for
UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED and INTERNAL; those
travel with a clean status detail. INVALID_ARGUMENT, NOT_FOUND and UNIMPLEMENTED can only be sent
by raising the matching Arrow error, and pyarrow then appends the Python traceback (server file
paths included) to the status message (`PythonErrorDetail`, formatted lazily with
`traceback.format_exception`). The `_Public*` classes below mark those errors, and the hook
installed here formats a marked error as its status name alone; every other exception formats
as before. tests/serving/test_audit.py checks through real clients that no traceback leaves.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from pyarrow import flight

from engine.errors import (
    BadRequest,
    InternalError,
    NotSupportedYet,
    RequestCancelled,
    SatchelError,
)
from engine.redact import public_message

log = logging.getLogger("satchel.flight_sql")


class _Public:
    """A status whose message is already what the client may see."""

    status = ""


class _PublicInvalid(_Public, pa.ArrowInvalid):
    status = "InvalidArgument"


class _PublicNotFound(_Public, pa.ArrowKeyError):
    status = "NotFound"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class _PublicUnimplemented(_Public, pa.ArrowNotImplementedError):
    status = "Unimplemented"


_BY_KIND: dict[str, type[Exception]] = {
    "invalid_argument": _PublicInvalid,
    "not_found": _PublicNotFound,
    "unimplemented": _PublicUnimplemented,
    "unauthenticated": flight.FlightUnauthenticatedError,
    "unauthorized": flight.FlightUnauthorizedError,
    "unavailable": flight.FlightUnavailableError,
    "timed_out": flight.FlightTimedOutError,
    "cancelled": flight.FlightCancelledError,
    "internal": flight.FlightInternalError,
}


def as_satchel_error(exc: BaseException, method: str = "") -> SatchelError:
    """The SatchelError a client is told about for `exc`.

    Arrow errors raised on purpose by the protocol layer are bad requests; anything else that is
    not a SatchelError is an internal error, logged here with its traceback and reported without
    its message, which could hold details the client should not see.
    """
    if isinstance(exc, SatchelError):
        return exc
    if isinstance(exc, flight.FlightCancelledError):
        return RequestCancelled("the client cancelled the call")
    if isinstance(exc, pa.ArrowNotImplementedError) and not isinstance(exc, flight.FlightError):
        return NotSupportedYet(str(exc))
    if isinstance(exc, pa.ArrowInvalid) and not isinstance(exc, flight.FlightError):
        return BadRequest(str(exc))
    log.error("internal error in Flight SQL %s", method or "call", exc_info=exc)
    return InternalError(f"internal error in Flight SQL {method or 'call'}; see the server log")


def to_flight_error(exc: BaseException, method: str = "", secrets: Iterable[str] = ()) -> Exception:
    """The exception a Flight handler raises for `exc`: its status, `<code>: <message>` redacted."""
    if isinstance(exc, _Public):
        return exc  # type: ignore[return-value]
    error = as_satchel_error(exc, method)
    cls = _BY_KIND.get(error.flight_kind, flight.FlightInternalError)
    return cls(public_message(f"{error.code}: {error.message}", secrets))


_format_exception = traceback.format_exception


def _format_public(*args: Any, **kwargs: Any) -> list[str]:
    """`traceback.format_exception`, except that a `_Public` error formats as its status name."""
    value = args[1] if len(args) > 1 else kwargs.get("value", args[0] if args else None)
    if isinstance(value, _Public):
        return [value.status]
    return _format_exception(*args, **kwargs)


if not getattr(traceback.format_exception, "_satchel", False):
    _format_public._satchel = True  # type: ignore[attr-defined]
    traceback.format_exception = _format_public
