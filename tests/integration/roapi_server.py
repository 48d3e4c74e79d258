"""A real roapi (DataFusion over files, `pip install roapi`) serving Flight SQL on 127.0.0.1.

`start_roapi({"name": path, ...})` starts it on free ports and waits until its Flight SQL port
answers; `server.statements()` lists the SQL it received (roapi logs each prepared statement
at INFO), so tests can prove what a connector pushed down. No roapi binary is a test failure
with the command to install it, never a skip.
"""

from __future__ import annotations

import os
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


def roapi_binary() -> str:
    found = shutil.which("roapi") or shutil.which("roapi", path=os.path.dirname(sys.executable))
    if not found:
        pytest.fail("the roapi binary is missing: pip install roapi (part of the test extra)", pytrace=False)
    return found


@dataclass
class RoapiServer:
    process: subprocess.Popen
    flight_port: int
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def statements(self) -> list[str]:
        """SQL statements roapi prepared, in order."""
        marker = "do_action_create_prepared_statement: "
        return [line.split(marker, 1)[1].strip() for line in self.log().splitlines() if marker in line]

    def stop(self) -> None:
        stop_group(self.process)


def start_roapi(tables: dict[str, Path], workdir: Path, timeout: float = 30) -> RoapiServer:
    flight, http, pg = free_port(), free_port(), free_port()
    log_path = workdir / f"roapi-{flight}.log"
    cmd = [roapi_binary(), "--addr-flight-sql", f"127.0.0.1:{flight}", "-a", f"127.0.0.1:{http}",
           "-p", f"127.0.0.1:{pg}"]
    for name, path in tables.items():
        cmd += ["-t", f"{name}={path}"]
    env = {**os.environ, "RUST_LOG": "info"}
    with open(log_path, "ab") as log:
        proc = start_group(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = RoapiServer(proc, flight, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"roapi exited with {proc.returncode}:\n{server.log()}")
        if "for FlightSQL traffic" in server.log():
            try:
                with socket.create_connection(("127.0.0.1", flight), timeout=1):
                    return server
            except OSError:
                pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"roapi did not start in {timeout}s:\n{server.log()}")
