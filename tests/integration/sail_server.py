"""A real Sail (LakeSail's Rust, Spark-compatible engine, `pip install pysail`) on 127.0.0.1,
in local-cluster mode (a driver and workers, as in a cluster, in one process), serving Flight
SQL (`sail flight server`) or Spark Connect (`sail spark server`).

`start_sail(workdir)` / `start_sail(workdir, "spark")` starts it on a free port in its own
process group and waits until it answers; `server.create_parquet_table(name, path)` registers
a Parquet file with Spark SQL's `CREATE TABLE ... USING parquet LOCATION ...` sent over Flight
SQL (Sail's Flight SQL server has no flag for tables; its tables live in one shared session);
`server.statements()` lists the SQL it received (its debug log), so tests can prove what a
connector pushed down. No pysail installed is a skip that says how to install it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.processes import start_group, stop_group

_MARKER = "get_flight_info_statement: "
_SPARK_SQL = re.compile(r'ExecutePlanRequest .*?Sql \{ query: "((?:[^"\\]|\\.)*)"')


def sail_binary() -> str:
    """The `sail` CLI of pysail (next to this Python, or on PATH); a skip when it is missing."""
    found = shutil.which("sail", path=os.path.dirname(sys.executable)) or shutil.which("sail")
    if not found:
        pytest.skip("Sail is not installed: pip install pysail (pinned in the test extra)")
    return found


@dataclass
class SailServer:
    process: subprocess.Popen
    port: int
    log_path: Path
    protocol: str = "flight"  # or "spark" (Spark Connect)

    @property
    def endpoint(self) -> str:
        return f"{'sc' if self.protocol == 'spark' else 'grpc'}://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def statements(self) -> list[str]:
        """SQL statements Sail was asked to run, in order."""
        lines = self.log().splitlines()
        if self.protocol == "spark":  # the request's Rust debug form: "..." with \" and \\ escapes
            return [json.loads(f'"{m.group(1)}"') for line in lines if (m := _SPARK_SQL.search(line))]
        return [line.split(_MARKER, 1)[1].strip() for line in lines if _MARKER in line]

    def execute(self, sql: str):
        """Run one statement (ADBC: Flight SQL, or Spark Connect in a session of its own); its
        result as an Arrow table."""
        if self.protocol == "spark":
            import adbc_driver_spark.dbapi as driver
        else:
            import adbc_driver_flightsql.dbapi as driver

        with driver.connect(self.endpoint, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def create_parquet_table(self, name: str, path: Path, database: str | None = None) -> None:
        """`CREATE TABLE [database.]name USING parquet LOCATION path` (Sail would make a missing
        path an empty table, so it is refused here)."""
        if not path.exists():
            raise FileNotFoundError(path)
        location = str(path.resolve()).replace("\\", "\\\\").replace("'", "\\'")
        target = f"`{database}`.`{name}`" if database else f"`{name}`"
        self.execute(f"CREATE TABLE {target} USING parquet LOCATION '{location}'")

    def stop(self) -> None:
        stop_group(self.process)


def start_sail(workdir: Path, protocol: str = "flight", timeout: float = 60) -> SailServer:
    """`sail flight server` (or `sail spark server`: Spark Connect) on a free 127.0.0.1 port,
    answering when this returns."""
    binary = sail_binary()
    if protocol == "spark":
        pytest.importorskip("adbc_driver_spark", reason="pip install adbc-driver-spark (pinned in the test extra)")
    port = free_port()
    log_path = workdir / f"sail-{protocol}-{port}.log"
    logged = "sail_spark_connect::server=debug" if protocol == "spark" else "sail_flight=debug"
    env = {**os.environ, "SAIL_MODE": "local-cluster", "RUST_LOG": f"info,{logged}"}
    with open(log_path, "ab") as log:
        proc = start_group([binary, protocol, "server", "--ip", "127.0.0.1", "--port", str(port)],
                           stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    return answering(SailServer(proc, port, log_path, protocol), "sail", timeout, 0.1)


def answering(server, what: str, timeout: float, interval: float):  # noqa: ANN001 - SailServer or alike
    """`server` (with process, port, log(), execute(), stop()) once it answers `SELECT 1`; stopped
    and an error with its log's tail when it exits or does not answer within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.process.returncode}:\n{server.log()[-5000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                pass
            server.execute("SELECT 1")
            return server
        except Exception:  # noqa: BLE001 - not answering yet
            time.sleep(interval)
    server.stop()
    raise RuntimeError(f"{what} did not answer in {timeout}s:\n{server.log()[-5000:]}")
