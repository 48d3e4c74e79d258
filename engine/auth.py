"""Who is asking: API keys to principals, with wrong-key throttling."""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from typing import Sequence

from .auth_throttle import AuthThrottle
from .errors import Overloaded, Unauthenticated
from .metrics import Metrics


@dataclass(frozen=True)
class Principal:
    name: str


ANONYMOUS = Principal("anonymous")


class Authenticator:
    """Checks API keys in constant time; a client that keeps sending wrong keys is refused with
    `overloaded` and a retry time before its key is checked (see AuthThrottle)."""

    def __init__(self, keys: Sequence[str], metrics: Metrics) -> None:
        self._keys = tuple(keys)
        self._metrics = metrics
        self.throttle = AuthThrottle()

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, api_key: str | None, client: str = "unknown", protocol: str = "http") -> Principal:
        """The principal of `api_key` (ANONYMOUS when the pod has no keys)."""
        if not self.enabled:
            return ANONYMOUS
        wait = self.throttle.retry_after(client)
        if wait is not None:
            self._metrics.auth_throttled.labels(protocol).inc()
            raise Overloaded(f"too many wrong API keys from this client; retry after {math.ceil(wait)} s",
                             retry_after=wait)
        if api_key:
            for i, key in enumerate(self._keys):
                if hmac.compare_digest(api_key.encode(), key.encode()):
                    self.throttle.succeeded(client)
                    return Principal(f"api_key_{i + 1}")
            self.throttle.failed(client)
        raise Unauthenticated("a valid API key is required (HTTP X-API-Key header, or Flight 'Authorization: Bearer <key>')")
