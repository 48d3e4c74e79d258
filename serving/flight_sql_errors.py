"""Map Satchel errors to Flight (gRPC) statuses, once, from `SatchelError.flight_kind`.

pyarrow.flight has exception classes for UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE,
DEADLINE_EXCEEDED, CANCELLED and INTERNAL. For INVALID_ARGUMENT, NOT_FOUND and UNIMPLEMENTED
the server raises the matching Arrow error, which the Flight transport sends with those
gRPC codes (checked by tests/serving/test_flight_sql.py through real clients).
"""

from __future__ import annotations

import logging

import pyarrow as pa
from pyarrow import flight

from engine.errors import SatchelError

log = logging.getLogger("satchel.flight_sql")

_BY_KIND: dict[str, type[Exception]] = {
    "invalid_argument": pa.ArrowInvalid,
    "not_found": pa.ArrowKeyError,
    "unimplemented": pa.ArrowNotImplementedError,
    "unauthenticated": flight.FlightUnauthenticatedError,
    "unauthorized": flight.FlightUnauthorizedError,
    "unavailable": flight.FlightUnavailableError,
    "timed_out": flight.FlightTimedOutError,
    "cancelled": flight.FlightCancelledError,
    "internal": flight.FlightInternalError,
}


def to_flight_error(exc: BaseException, method: str = "") -> Exception:
    """The exception a Flight handler should raise for `exc`.

    Flight and Arrow errors pass through (they already name their status). Anything else
    that is not a SatchelError is an internal error: logged here with its traceback and
    reported without its message, which could hold details the client should not see.
    """
    if isinstance(exc, (flight.FlightError, pa.ArrowException)):
        return exc  # type: ignore[return-value]
    if isinstance(exc, SatchelError):
        cls = _BY_KIND.get(exc.flight_kind, flight.FlightInternalError)
        return cls(f"{exc.code}: {exc.message}")
    log.error("internal error in Flight SQL %s", method or "call", exc_info=exc)
    return flight.FlightInternalError(
        f"internal error ({type(exc).__name__}) in Flight SQL {method or 'call'}; see the server log"
    )
