"""Authentication for the Flight SQL server: bearer API keys, basic-auth handshake.

Every call passes through `AuthMiddlewareFactory.start_call`, which reads the caller's key from
the `authorization` header; the call's handler then resolves it to an engine `Principal` with
the caller's address (`AuthMiddleware.principal_for`), which pyarrow gives handlers but not
middleware, so that a client sending wrong keys is throttled by address (see
`engine.auth_throttle`). The Handshake RPC has no handler: it is checked here, under one
address for all handshakes. Accepted credentials, in the `authorization` header:

* `Bearer <api key>` on any call;
* `Basic base64(user:password)`, the password being the API key. Flight SQL clients given a
  username/password (ADBC, flightsql-dbapi, JDBC) send it on a Handshake call and use the
  bearer token from the Handshake's response headers afterwards; Satchel answers with
  `Bearer <api key>`.

Refusals here are accounted (task history, metrics) like every other refused request.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING

from pyarrow import flight

from engine.errors import SatchelError, Unauthenticated
from .errors import to_flight_error

if TYPE_CHECKING:  # pragma: no cover
    from engine.runtime import Principal, Runtime

MIDDLEWARE_KEY = "satchel_auth"
HANDSHAKE_CLIENT = "flight handshake"

_HOW = "send 'authorization: Bearer <api key>' or authenticate with the API key as password"


class AuthMiddleware(flight.ServerMiddleware):
    """Per-call state: the caller's key, its principal once known, and the token to hand back."""

    def __init__(self, principal: Principal | None, token: str | None = None, key: str | None = None):
        self.principal = principal
        self._token = token
        self._key = key

    def principal_for(self, runtime: Runtime, client: str) -> Principal:
        """The caller's principal, checking its key (throttled by `client` address) once."""
        if self.principal is None:
            self.principal = authenticate(runtime, self._key, client)
        return self.principal

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token}"} if self._token else {}


class AuthMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Reads every call's credentials; checks handshakes and malformed credentials at once."""

    def __init__(self, runtime: Runtime):
        self._runtime = runtime

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> AuthMiddleware:
        started = time.monotonic()
        try:
            return self._start_call(info, headers)
        except SatchelError as exc:
            error = self._runtime.refused(exc, protocol="flight", principal=None, started=started,
                                          text=f"{info.method.name.title().replace('_', '')} (authentication)")
        raise to_flight_error(error, secrets=self._runtime.secrets)

    def _start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> AuthMiddleware:
        # A handshake answers with the bearer token the client should send from now on
        # (clients insist on one even when the server does not check it).
        is_handshake = info.method == flight.FlightMethod.HANDSHAKE
        if not self._runtime.auth_enabled:
            key = _api_key(headers, strict=False) if is_handshake else None
            return AuthMiddleware(self._runtime.authenticate(None), token=key)
        key = _api_key(headers)
        if not is_handshake:
            return AuthMiddleware(None, key=key)  # checked by the handler, which knows the address
        return AuthMiddleware(authenticate(self._runtime, key, HANDSHAKE_CLIENT), token=key)


def authenticate(runtime: Runtime, key: str | None, client: str) -> Principal:
    """The principal of `key` sent from `client`; Unauthenticated (or Overloaded) otherwise."""
    if key is None:
        raise Unauthenticated(f"missing API key: {_HOW}")
    return runtime.authenticate(key, client=client, protocol="flight")


def _api_key(headers: dict[str, list[str]], strict: bool = True) -> str | None:
    """The API key from a Bearer or Basic `authorization` header, or None if absent.

    Malformed credentials raise Unauthenticated, or give None when not `strict`.
    """
    try:
        return _parse_authorization(headers)
    except Unauthenticated:
        if strict:
            raise
        return None


def _parse_authorization(headers: dict[str, list[str]]) -> str | None:
    values = headers.get("authorization") or headers.get("Authorization") or []
    if not values:
        return None
    scheme, _, credentials = values[0].strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            # Some clients (the Go Flight client) send unpadded base64.
            padded = credentials + "=" * (-len(credentials) % 4)
            decoded = base64.b64decode(padded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated(f"malformed basic credentials: {_HOW}") from None
        _, _, password = decoded.partition(":")
        return password or None
    raise Unauthenticated(f"unsupported authorization scheme {scheme!r}: {_HOW}")


class HandshakeAuthHandler(flight.ServerAuthHandler):
    """Lets the Handshake RPC succeed; the middleware has already checked credentials.

    Without a handler pyarrow answers Handshake with UNIMPLEMENTED, which breaks clients
    that always perform the basic-auth handshake when given a username and password.
    """

    def authenticate(
        self, outgoing: flight.ServerAuthSender, incoming: flight.ServerAuthReader
    ) -> None:
        return None

    def is_valid(self, token: bytes) -> str:
        # Per-call authentication is the middleware's job; accept every call here.
        return ""
