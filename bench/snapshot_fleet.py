"""Fleet snapshots (issue 17): a new sidecar's time to ready from the source vs from a snapshot,
and the statements a PostgreSQL source sees per refresh as a fleet grows.

A throwaway PostgreSQL 15 holds `fleet_orders` (--rows rows: int, numeric(12,2), text, timestamptz);
an S3 API (`moto_server`, a test double speaking the real protocol) holds the snapshots.

1. Time to ready, alternating run by run: a new in-process runtime with the dataset DuckDB-
   accelerated from PostgreSQL (`snapshots: disabled`) vs one that follows the publisher's
   snapshot (`snapshots: follow`), from `start()` to `ready()`.
2. Source statements per refresh: a publisher of `fleet_small` (--fleet-rows rows) refreshes (and publishes) three times while a
   fleet of 1, 10 or 50 followers (in-process runtimes: the product's follower path, one per
   follower) picks each snapshot up; PostgreSQL's own statement log counts the loads it served.

    /tmp/venv/bin/python bench/snapshot_fleet.py [--rows 1000000] [--runs 3] [--fleets 1,10,50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, free_port, table, wait_port, write_results  # noqa: E402

ENV = {"S3_KEY": "bench-key", "S3_SECRET": "bench-secret"}


def pod(pg, s3_port: int, mode: str, name: str) -> str:
    snapshots = f"""runtime:
  snapshots:
    enabled: true
    location: s3://fleet/bench
    params:
      s3_endpoint: http://127.0.0.1:{s3_port}
      s3_key: ${{env:S3_KEY}}
      s3_secret: ${{env:S3_SECRET}}
""" if mode != "disabled" else ""
    interval = "      refresh_check_interval: 1s\n" if mode == "follow" else ""
    return f"""version: v1
kind: Spicepod
name: fleet_bench
{snapshots}datasets:
  - from: postgres:public.{name}
    name: {name}
    params:
{pg.params_yaml(6)}
    acceleration:
      engine: duckdb
      mode: file
      snapshots: {mode}
{interval}"""


def runtime(pg, s3_port: int, where: Path, mode: str, name: str = "fleet_orders"):
    from engine.config import load_pod
    from engine.runtime import Runtime

    where.mkdir(parents=True, exist_ok=True)
    (where / "spicepod.yaml").write_text(pod(pg, s3_port, mode, name))
    return Runtime(load_pod(where / "spicepod.yaml", env=ENV), data_dir=str(where / ".satchel"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fleets", default="1,10,50")
    parser.add_argument("--fleet-rows", type=int, default=100_000, help="rows of the table the fleets follow")
    args = parser.parse_args()
    os.environ.update(ENV)

    from pyarrow import fs

    from tests.integration.postgres_server import start_server

    pg = start_server()
    s3_port = free_port()
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    work = Path(tempfile.mkdtemp(prefix="satchel-bench-fleet-"))
    try:
        wait_port(s3_port, moto)
        fs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3_port}", scheme="http", access_key=ENV["S3_KEY"],
                        secret_key=ENV["S3_SECRET"], region="us-east-1", allow_bucket_creation=True).create_dir("fleet")
        for name, rows in (("fleet_orders", args.rows), ("fleet_small", args.fleet_rows)):
            pg.execute(f"CREATE TABLE public.{name} (id bigint PRIMARY KEY, amount numeric(12,2), note text, "
                       "at timestamptz)",
                       f"INSERT INTO public.{name} SELECT g, (g % 100000) / 100.0, 'order ' || g, "
                       f"timestamptz '2024-01-01' + g * interval '1 second' FROM generate_series(1, {rows}) g",
                       f"VACUUM ANALYZE public.{name}", f"GRANT SELECT ON public.{name} TO satchel")

        def loads(offset: int) -> int:
            # reads of the table's rows (a refresh also looks up the table's size in pg_class first)
            return sum(1 for s in pg.statements_since(offset)
                       if "fleet_small" in s and "TO STDOUT" in s and "pg_class" not in s)

        publisher = runtime(pg, s3_port, work / "publisher", "create_only")
        publisher.refresh("fleet_orders", wait=True)

        # 1. time to ready
        def ready_time(mode: str, n: int) -> float:
            rt = runtime(pg, s3_port, work / f"ready-{mode}-{n}", mode)
            started = time.monotonic()
            rt.start()
            while not rt.ready():
                time.sleep(0.01)
            elapsed = time.monotonic() - started
            rows = rt.query("SELECT count(*) AS n FROM fleet_orders").read_all().to_pylist()[0]["n"]
            rt.stop()
            shutil.rmtree(work / f"ready-{mode}-{n}")
            assert rows == args.rows, (mode, rows)
            return elapsed

        times: dict[str, list[float]] = {"from the source (PostgreSQL)": [], "from a snapshot (S3)": []}
        for n in range(args.runs + 1):  # the first round warms caches and is not counted
            for name, mode in (("from the source (PostgreSQL)", "disabled"), ("from a snapshot (S3)", "follow")):
                t = ready_time(mode, n)
                if n:
                    times[name].append(t)
                    print(f"  run {n} {name}: {t:.2f}s", flush=True)
        source_s = statistics.median(times["from the source (PostgreSQL)"])
        ready_rows = [[name, f"{statistics.median(t):.2f}", " / ".join(f"{x:.2f}" for x in t),
                       f"{statistics.median(t) / source_s:.2f}x"] for name, t in times.items()]

        # 2. statements per refresh
        publisher.stop()
        publisher = runtime(pg, s3_port, work / "publisher-small", "create_only", "fleet_small")
        publisher.refresh("fleet_small", wait=True)
        fleet_rows = []
        for size in (int(x) for x in args.fleets.split(",") if x):
            followers = [runtime(pg, s3_port, work / f"fleet{size}" / f"f{i}", "follow", "fleet_small")
                         for i in range(size)]
            offset = pg.log_offset()
            for f in followers:
                f.start()
            refreshes = 3
            for _ in range(refreshes):
                pg.execute("UPDATE public.fleet_small SET note = note || '.' WHERE id = 1")
                publisher.refresh("fleet_small", wait=True)
                newest = publisher.datasets["fleet_small"].snapshot.snapshot_id
                deadline = time.monotonic() + 600
                while any(f.datasets["fleet_small"].source_version != newest for f in followers):
                    if time.monotonic() > deadline:
                        raise RuntimeError("followers did not pick up the snapshot")
                    time.sleep(0.1)
            count = loads(offset)
            for f in followers:
                f.stop()
            shutil.rmtree(work / f"fleet{size}")
            fleet_rows.append([size, refreshes, count, f"{count / refreshes:g}"])
            print(f"  fleet of {size}: {count} loads for {refreshes} refreshes", flush=True)
        publisher.stop()

        text = (f"`fleet_orders`: {args.rows:,} rows in PostgreSQL 15 (local); snapshots in `moto_server` (S3 API, "
                f"local). Median of {args.runs} alternating runs after a warm-up. The fleets follow `fleet_small` "
                f"({args.fleet_rows:,} rows).\n\n"
                "Time to ready for a new sidecar (in-process runtime, file-mode DuckDB, `start()` to `ready()`):\n\n"
                + table(["start", "median s", "runs s", "vs from the source"], ready_rows)
                + "\n\nStatements PostgreSQL served (loads, from its statement log) while one publisher refreshed "
                  "three times and every follower picked up each snapshot:\n\n"
                + table(["followers", "refreshes", "loads seen by PostgreSQL", "loads per refresh"], fleet_rows)
                + f"\n\nLoad average at the end: {os.getloadavg()[0]:.2f}.")
        print(text)
        write_results("snapshot_fleet", "Fleet snapshots: time to ready and source load", text, [
            ("new sidecar ready from a snapshot / from the source", ready_rows[1][3], "< 1x"),
            *((f"source loads per refresh, fleet of {r[0]}", r[3], "1") for r in fleet_rows)])
    finally:
        pg.stop()
        os.killpg(moto.pid, 15)
        moto.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    main()
