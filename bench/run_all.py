"""Every benchmark, one after another, and one results page: `bench/results/all.md` with the
machine, versions and load average, then each benchmark's own table (each benchmark alternates
the systems it compares run by run and writes `bench/results/<name>.md`).

    /tmp/venv/bin/python bench/run_all.py [--quick] [--only latency,tpch]

`--quick` passes small sizes (minutes in all, for a smoke run); without it each benchmark runs
at the size its figures in the issue notes use. A benchmark that fails is listed as failed with
its exit code and the run goes on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, REPO, RESULTS, machine, table  # noqa: E402

SCRIPTS = {"tpch_arrow": "tpch", "concurrency_unshared": "concurrency", "concurrency_arrow": "concurrency"}  # a result made by another benchmark's script (else bench/<name>.py)
# results name -> (full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "latency": ([], ["--queries", "100"]),
    "bulk_fetch": ([], ["--rows", "1000000", "--runs", "2"]),
    "tpch": ([], ["--sf", "0.1", "--runs", "2", "--no-no-cache-column"]),
    "tpch_arrow": (["--engine", "arrow", "--name", "tpch_arrow", "--no-no-cache-column"],
                   ["--engine", "arrow", "--name", "tpch_arrow", "--sf", "0.1", "--runs", "2", "--no-no-cache-column"]),
    "federated_memory": (["--rows", "5000000,20000000"], ["--rows", "2000000"]),
    "results_cache": ([], ["--queries", "50"]),
    "federated_functions": ([], ["--rows", "200000", "--runs", "2"]),
    "policy_overhead": (["--sf", "1"], ["--sf", "0.1", "--runs", "2", "--select1", "100", "--rate-seconds", "10"]),
    "vector_search": ([], ["--rows", "20000", "--queries", "50"]),
    "iceberg_scan": ([], ["--rows", "500000", "--runs", "2"]),
    "model_tokens": ([], ["--rounds", "2", "--tokens", "32"]),
    "duckdb_file_growth": ([], ["--rows", "200000", "--refreshes", "10"]),
    "refresh_postgres": (["--sf", "1"], ["--sf", "0.05", "--runs", "2"]),
    "tpch_federated": ([], ["--sf", "0.01", "--runs", "2"]),
    "concurrency": ([], ["--seconds", "15"]),
    "concurrency_unshared": (["--no-coalesce", "--name", "concurrency_unshared"],
                             ["--no-coalesce", "--name", "concurrency_unshared", "--seconds", "15"]),
    "concurrency_arrow": (["--engine", "arrow", "--name", "concurrency_arrow"],
                          ["--engine", "arrow", "--name", "concurrency_arrow", "--seconds", "15"]),
    "snapshot_fleet": ([], ["--rows", "200000", "--runs", "1", "--fleets", "1,10"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    chosen = [n for n in BENCHMARKS if not args.only or n in args.only.split(",")]
    outcome = []
    for name in chosen:
        full, quick = BENCHMARKS[name]
        cmd = [sys.executable, str(BENCH / f"{SCRIPTS.get(name, name)}.py"), *(quick if args.quick else full)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        rc = subprocess.run(cmd, cwd=REPO).returncode
        outcome.append((name, rc, time.monotonic() - started))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"# All benchmarks\n\nRun {stamp} on {machine()}; load average {load}; "
             f"{'quick sizes' if args.quick else 'full sizes'}.\n",
             table(["benchmark", "result", "minutes"],
                   [[n, "ok" if rc == 0 else f"failed (exit {rc})", f"{s / 60:.1f}"] for n, rc, s in outcome]),
             "\n## Ratios\n\nEach benchmark's headline figures, measured side by side with its baseline "
             "(details below).\n",
             table(["benchmark", "figure", "measured", "goal"], headline_rows(outcome))]
    for name, rc, _ in outcome:
        page = RESULTS / f"{name}.md"
        if rc == 0 and page.exists():
            parts.append("\n#" + page.read_text())  # its title one level down
    (RESULTS / "all.md").write_text("\n".join(parts) + "\n")
    print(f"wrote {(RESULTS / 'all.md').relative_to(REPO)}")
    sys.exit(0 if all(rc == 0 for _, rc, _ in outcome) else 1)


def headline_rows(outcome: list[tuple[str, int, float]]) -> list[list[str]]:
    """The headlines the benchmarks that passed in this run wrote to `results/<name>.json`."""
    rows = []
    for name, rc, _ in outcome:
        page = RESULTS / f"{name}.json"
        if rc == 0 and page.exists():
            rows += [[name, *h] for h in json.loads(page.read_text())["headlines"]]
    return rows


if __name__ == "__main__":
    main()
