"""The sidecar's memory budget: `runtime.params.memory_limit` (or SATCHEL_MEMORY_LIMIT), else a
share of the container's limit (cgroup v2 or v1) or of the machine's memory.

The budget is split among the engines so the process stays under its Kubernetes limit: each
DuckDB accelerator gets `DUCKDB_SHARE` of it (DuckDB spills past that, or fails with
resource_exhausted), each federated query a DataFusion memory pool of `DATAFUSION_SHARE`
(sorts, joins and aggregates spill to disk past it)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ConfigError

DEFAULT_SHARE = 0.75  # of the container's limit when the pod sets none
DUCKDB_SHARE = 0.5
DATAFUSION_SHARE = 0.25
MIN_POOL = 16 << 20  # DataFusion stalls spilling with a pool of a few MiB: never smaller than this
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def size_bytes(text: str) -> int:
    """`512MiB`, `2GB`, `1000000`, or a Kubernetes quantity (`512Mi`, `2G`: the downward API's
    SATCHEL_MEMORY_LIMIT) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(message=f"memory limit {text!r} is not a size (e.g. 512MiB, 2GB, 512Mi or bytes)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def container_limit() -> int:
    """The memory this process may use: its cgroup's limit, else the machine's memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), physical)
    return physical


def budget_bytes(configured: str | None) -> int:
    return size_bytes(configured) if configured else int(container_limit() * DEFAULT_SHARE)


def datafusion_pool(budget: int) -> int:
    """Each federated query's DataFusion memory pool."""
    return max(MIN_POOL, int(budget * DATAFUSION_SHARE))


def resource_exhausted_text(error: BaseException) -> bool:
    """Whether an engine's error says it ran out of its memory budget."""
    text = str(error)
    return "Resources exhausted" in text or "Out of Memory Error" in text or type(error).__name__ == "OutOfMemoryException"
