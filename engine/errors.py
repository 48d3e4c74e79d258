"""Every error Satchel raises on purpose, each mapped once to an HTTP status and a Flight status.

Serving layers translate with `http_status` / `flight_kind`; nothing else decides statuses.
Messages must never contain secret values (see `engine.redact`).
"""

from __future__ import annotations


class SatchelError(Exception):
    """Base class. `http_status` and `flight_kind` say how serving layers report it."""

    http_status: int = 500
    # One of: invalid_argument, not_found, unauthenticated, unauthorized, unavailable,
    # timed_out, cancelled, unimplemented, internal (names of pyarrow.flight error classes).
    flight_kind: str = "internal"
    code: str = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InternalError(SatchelError):
    """A bug or an unexpected failure; the message says where to look, never what broke."""


class ConfigError(SatchelError):
    """A spicepod that cannot be loaded. `issues` lists each problem with file, line and key."""

    http_status = 400
    flight_kind = "invalid_argument"
    code = "config_error"

    def __init__(self, issues: list["ConfigIssue"] | None = None, message: str | None = None):
        self.issues = list(issues or [])
        text = message or "\n".join(str(i) for i in self.issues) or "invalid spicepod"
        super().__init__(text)


class ConfigIssue:
    """One problem in a pod file: where it is and what is wrong."""

    def __init__(self, file: str, line: int | None, key: str, message: str):
        self.file, self.line, self.key, self.message = file, line, key, message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"ConfigIssue({self!s})"


class StartupError(SatchelError):
    """`satchel run` cannot start (e.g. a port already in use); one line, no traceback."""

    code = "startup_error"


class NotSupportedYet(SatchelError):
    """A documented feature Satchel does not implement yet (never silently ignored)."""

    http_status = 501
    flight_kind = "unimplemented"
    code = "not_supported_yet"


class SqlError(SatchelError):
    """SQL that cannot be parsed or planned."""

    http_status = 400
    flight_kind = "invalid_argument"
    code = "sql_error"


class SqlTooComplex(SqlError):
    """SQL past the size or nesting limits, refused before it is parsed (runtime.params)."""

    code = "sql_too_complex"


class ReadOnlyViolation(SqlError):
    """A statement that would write, change settings or touch files."""

    http_status = 403
    flight_kind = "unauthorized"
    code = "read_only"


class UnknownDataset(SqlError):
    """A table name that is not a dataset, view or runtime table (`table`: the name as written)."""

    http_status = 404
    flight_kind = "not_found"
    code = "unknown_dataset"

    def __init__(self, message: str, table: str | None = None):
        super().__init__(message)
        self.table = table


class DatasetNotReady(SatchelError):
    """A dataset with `ready_state: on_load` that has not finished its first load."""

    http_status = 503
    flight_kind = "unavailable"
    code = "dataset_not_ready"


class Unauthenticated(SatchelError):
    http_status = 401
    flight_kind = "unauthenticated"
    code = "unauthenticated"


class Forbidden(SatchelError):
    http_status = 403
    flight_kind = "unauthorized"
    code = "forbidden"


class QueryTimeout(SatchelError):
    http_status = 504
    flight_kind = "timed_out"
    code = "timeout"


class RequestCancelled(SatchelError):
    """Work stopped because its client went away (or the server is stopping)."""

    http_status = 499
    flight_kind = "cancelled"
    code = "cancelled"


class ConnectorError(SatchelError):
    """A source that failed: unreachable, bad params, unreadable data."""

    http_status = 502
    flight_kind = "unavailable"
    code = "source_error"


class MissingDependency(SatchelError):
    """A connector or accelerator whose optional dependency is not installed."""

    http_status = 500
    flight_kind = "internal"
    code = "missing_dependency"


class UnsupportedType(ConnectorError):
    """A source column type with no Arrow mapping under `unsupported_type_action: error`."""

    http_status = 400
    flight_kind = "invalid_argument"
    code = "unsupported_type"


class NotFound(SatchelError):
    http_status = 404
    flight_kind = "not_found"
    code = "not_found"


class Overloaded(SatchelError):
    """Too much work for a source or dataset right now; `retry_after` (seconds), when known, says
    when to try again (HTTP `Retry-After`)."""

    http_status = 429
    flight_kind = "unavailable"
    code = "overloaded"

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ResourceExhausted(SatchelError):
    """A query that needs more memory than its budget (runtime.params.memory_limit)."""

    http_status = 507
    flight_kind = "unavailable"
    code = "resource_exhausted"


class ModelUnavailable(SatchelError):
    """A model that is still loading, failed to load, or whose queue cannot take more work."""

    http_status = 503
    flight_kind = "unavailable"
    code = "model_unavailable"


class ModelError(SatchelError):
    """A model call that failed (upstream error, generation failure)."""

    http_status = 502
    flight_kind = "unavailable"
    code = "model_error"


class BadRequest(SatchelError):
    """A malformed request body."""

    http_status = 400
    flight_kind = "invalid_argument"
    code = "bad_request"


class PayloadTooLarge(BadRequest):
    """A request body (or a Flight SQL parameter upload) past the sidecar's limit for it."""

    http_status = 413
    code = "payload_too_large"
