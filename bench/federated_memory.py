"""Peak memory of the federated route: the sidecar's peak RSS while a slow client reads a
`SELECT *` of a live (not accelerated) source, and while a join of two live sources runs, for
growing data sizes, under `runtime.params.memory_limit`.

The sources are Parquet files read through the `file:` connector (a stream the federated engine
must consume); the client reads over Flight SQL (ADBC) one batch at a time with a pause, as a
slow agent would. Peak RSS is the kernel's high-water mark (VmHWM) of the `satchel run` process
plus those of its children (the federated engine's worker processes, which run the join): an
upper bound, since pages of shared memory (a scan the sidecar hands a worker in a memfd) count
in both. Peak PSS is the proportional set size of the same processes summed, sampled every
20 ms: shared pages counted once, so closer to the memory in use (a lower bound: a peak between
two samples, or memfd pages no process maps, are missed).

    /tmp/venv/bin/python bench/federated_memory.py [--rows 2000000,5000000,10000000] [--limit 512MiB]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, adbc_connect, satchel, table, write_results  # noqa: E402
from tests.processes import children  # noqa: E402  (the repo is on the path: _common puts it there)


def _write(path: Path, rows: int) -> int:
    """A Parquet file of `rows` rows (id, k, payload); returns its size in Arrow memory."""
    if not path.exists():
        with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("k", pa.int64()), ("payload", pa.string())])) as w:
            for start in range(0, rows, 1_000_000):
                n = min(1_000_000, rows - start)
                ids = np.arange(start, start + n)
                w.write_table(pa.table({"id": ids, "k": ids % 1000,
                                        "payload": pa.array(np.char.add("payload-", (ids % 97).astype(str)))}))
    return pq.read_metadata(path).num_rows * (8 + 8 + 4 + 10)


def _hwm_mib(pid: int) -> float:
    """VmHWM of `pid` plus its children's (each child's own peak: an upper bound of their sum's)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def _pss_mib(pid: int) -> float:
    """Pss of `pid` plus its children's, now."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:  # ended meanwhile
            continue
        total += next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)
    return total / 1024


@contextlib.contextmanager
def _peak_pss(pid: int, every: float = 0.02):
    """Yields a list whose last item is the highest summed Pss seen so far (sampled)."""
    peak = [_pss_mib(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            peak.append(max(peak[-1], _pss_mib(pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()
        peak.append(max(peak[-1], _pss_mib(pid)))


def _slow_read(uri: str, sql: str, pause: float) -> int:
    with adbc_connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        rows = 0
        for batch in reader:
            rows += batch.num_rows
            time.sleep(pause)
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="2000000,5000000,10000000")
    parser.add_argument("--limit", default="512MiB", help="runtime.params.memory_limit")
    parser.add_argument("--pause", type=float, default=0.002, help="seconds the client waits per batch")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        left, right = DATA / f"fed_{rows}_a.parquet", DATA / f"fed_{rows}_b.parquet"
        size = _write(left, rows)
        _write(right, rows)
        pod = f"""
version: v1
kind: Spicepod
name: fedmem
runtime:
  params:
    memory_limit: {args.limit}
    query_timeout: 0s
datasets:
  - from: file:{left}
    name: a
  - from: file:{right}
    name: b
"""
        for label, sql in [("SELECT * (slow client)", "SELECT * FROM a"),
                           ("join of two sources", "SELECT a.k, count(*) AS n FROM a JOIN b ON a.id = b.id GROUP BY a.k")]:
            with satchel(DATA / "pods" / f"fedmem_{rows}", pod) as server:
                settle = time.monotonic() + 10  # idle includes the worker the sidecar starts at once
                while not children(server.process.pid) and time.monotonic() < settle:
                    time.sleep(0.1)
                time.sleep(0.5)
                base = _hwm_mib(server.process.pid)
                started = time.perf_counter()
                with _peak_pss(server.process.pid) as pss:
                    try:
                        got = _slow_read(f"grpc://127.0.0.1:{server.flight_port}", sql,
                                         args.pause if label.startswith("SELECT") else 0)
                        outcome = f"{got:,} rows"
                    except Exception as e:  # a refusal is a result too: it must be clear, not a crash
                        outcome = f"refused: {str(e).splitlines()[0][:80]}"
                elapsed = time.perf_counter() - started
                peak = _hwm_mib(server.process.pid)
                alive = server.process.poll() is None
            results.append([label, f"{rows:,}", f"{size / 2**20:,.0f}", f"{base:,.0f}", f"{peak:,.0f}",
                            f"{(peak - base) / (size / 2**20):.2f}x", f"{pss[0]:,.0f}", f"{pss[-1]:,.0f}",
                            f"{elapsed:.1f}", outcome, "yes" if alive else "NO"])
            print(results[-1], flush=True)
    body = (f"memory_limit {args.limit}; peak RSS is VmHWM of the sidecar process plus its worker processes' (an upper "
            f"bound: shared memory counts in each process that maps it); growth = (peak - idle) / source size in Arrow "
            f"memory; PSS is the same processes' proportional set size summed, sampled every 20 ms (shared pages once).\n\n" +
            table(["query", "rows per source", "source MiB", "idle RSS MiB", "peak RSS MiB", "growth / source",
                   "idle PSS MiB", "peak PSS MiB", "seconds", "outcome", "sidecar alive"], results))
    print(body)

    def over_idle(r: list[str], idle: int, peak: int) -> float:
        return float(r[peak].replace(",", "")) - float(r[idle].replace(",", ""))

    write_results("federated_memory", "Federated route: peak memory vs data size", body, [
        (f"federated {r[0]}, {r[1]} rows per source: peak RSS over idle (x the source's size); peak PSS over idle",
         f"{over_idle(r, 3, 4):,.0f} MiB ({r[5]}); PSS {over_idle(r, 6, 7):,.0f} MiB; sidecar alive: {r[10]}",
         f"does not grow with the rows (memory_limit {args.limit})") for r in results])


if __name__ == "__main__":
    main()
