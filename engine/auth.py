"""Who is asking: API keys to principals, with wrong-key throttling."""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from .auth_throttle import AuthThrottle
from .errors import Overloaded, Unauthenticated
from .metrics import Metrics

if TYPE_CHECKING:
    from .query.policy import Policy


@dataclass(frozen=True)
class Principal:
    name: str
    policy: "Policy | None" = None  # None: sees everything the pod serves (keys without a principal)


def key_secret(key: str) -> str:
    """A key without Spice's access suffix (`:ro`, `:rw`): every Satchel key is read-only."""
    for suffix in (":ro", ":rw"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


ANONYMOUS = Principal("anonymous")


class Authenticator:
    """Checks API keys in constant time; a client that keeps sending wrong keys is refused with
    `overloaded` and a retry time before its key is checked (see AuthThrottle)."""

    def __init__(self, keys: Sequence[str], metrics: Metrics, principals: Mapping[str, Sequence[str]] = {},
                 policies: "Mapping[str, Policy]" = {}) -> None:
        """`keys`: keys that see everything (principals api_key_1, ...); `principals`: name -> its keys."""
        self._keys = tuple((key_secret(k), Principal(f"api_key_{i + 1}")) for i, k in enumerate(keys))
        self._keys += tuple((key_secret(k), Principal(name, policies.get(name)))
                            for name, ks in principals.items() for k in ks)
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
            found = None
            for key, principal in self._keys:  # every key compared: the time says nothing of which matched
                if hmac.compare_digest(api_key.encode(), key.encode()) and found is None:
                    found = principal
            if found is not None:
                self.throttle.succeeded(client)
                return found
            self.throttle.failed(client)
        raise Unauthenticated("a valid API key is required (HTTP X-API-Key header, or Flight 'Authorization: Bearer <key>')")
