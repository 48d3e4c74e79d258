"""Shared helpers for the benchmark scripts: servers, timing, and the results table."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = BENCH / ".data"
RESULTS = BENCH / "results"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_satchel_function():
    """`start_satchel` from tests/conftest.py: a real `satchel run` on free 127.0.0.1 ports."""
    path = REPO / "tests" / "conftest.py"
    spec = importlib.util.spec_from_file_location("satchel_bench_conftest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.start_satchel


@contextlib.contextmanager
def satchel(pod_dir: Path, pod_yaml: str, timeout: float = 900, env: dict | None = None) -> Iterator[object]:
    """A running `satchel run` serving `pod_yaml` (ready: every dataset loaded)."""
    started = time.monotonic()
    server = _start_satchel_function()(pod_dir, pod_yaml, timeout=timeout, env=env)
    print(f"  satchel ready in {time.monotonic() - started:.1f}s (flight 127.0.0.1:{server.flight_port})", flush=True)
    try:
        yield server
    finally:
        server.stop()


class Roapi(NamedTuple):
    flight: str  # grpc://host:port of its Flight SQL server
    http: str  # http://host:port of its HTTP API (POST /api/sql)


@contextlib.contextmanager
def roapi(tables: dict[str, Path], log: Path) -> Iterator[Roapi]:
    """`roapi` serving `tables` over Flight SQL and HTTP."""
    exe = Path(sys.executable).parent / "roapi"
    flight, http, pg = free_port(), free_port(), free_port()
    cmd = [str(exe if exe.exists() else "roapi"), "--addr-flight-sql", f"127.0.0.1:{flight}",
           "--addr-http", f"127.0.0.1:{http}", "--addr-postgres", f"127.0.0.1:{pg}"]
    for name, path in tables.items():
        cmd += ["--table", f"{name}={path}"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(flight, proc)
        wait_port(http, proc)
        print(f"  roapi ready (flight 127.0.0.1:{flight}, http 127.0.0.1:{http})", flush=True)
        yield Roapi(f"grpc://127.0.0.1:{flight}", f"http://127.0.0.1:{http}")
    finally:
        stop(proc)


def adbc_connect(uri: str, api_key: str | None = None):
    import adbc_driver_flightsql.dbapi as adbc

    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {api_key}"} if api_key else {}
    return adbc.connect(uri, autocommit=True, db_kwargs=kwargs)


def timed(fn: Callable[[], object], runs: int = 3, warmup: int = 1) -> tuple[float, list[float], object]:
    """(median seconds, all timings, last result) of `runs` calls after `warmup` untimed calls."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def alternate(systems: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Seconds of `runs` calls of each system, the systems alternating call by call (a slow
    moment of a shared machine hits all of them, not one)."""
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(runs):
        for name, fn in systems.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return times


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def machine() -> str:
    import duckdb
    import pyarrow

    return (f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
            f"pyarrow {pyarrow.__version__} · duckdb {duckdb.__version__}")


# One line of bench/results/all.md's table: (what, the measured ratio or figure, the goal)
Headline = tuple[str, str, str]


def write_results(name: str, title: str, body: str, headlines: Sequence[Headline] = ()) -> Path:
    """`results/<name>.md`, and `results/<name>.json` with the headline ratios run_all.py tabulates."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(f"# {title}\n\nRun {stamp} on {machine()}.\n\n{body}\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"title": title, "run": stamp, "headlines": [list(h) for h in headlines]}, indent=1) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return path
