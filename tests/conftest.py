"""Shared fixtures: a real `satchel run` subprocess on free 127.0.0.1 ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SatchelServer:
    """A running `satchel run` as tests see it."""

    process: subprocess.Popen
    pod_dir: Path
    http_port: int
    flight_port: int
    metrics_port: int
    api_key: str | None = None
    log_path: Path | None = None
    scheme: str = "http"
    env: dict = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    @property
    def flight_uri(self) -> str:
        return f"grpc+{'tls' if self.scheme == 'https' else 'tcp'}://127.0.0.1:{self.flight_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def sql(self, query: str, accept: str = "application/json") -> httpx.Response:
        return httpx.post(f"{self.http_url}/v1/sql", content=query, headers={**self.headers(), "Accept": accept},
                          timeout=60, verify=False)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_satchel(pod_dir: Path, pod_yaml: str | None = None, api_key: str | None = None, wait_ready: bool = True,
                  env: dict | None = None, data_dir: Path | None = None, tls: bool = False,
                  timeout: float = 60) -> SatchelServer:
    """Start `satchel run` in `pod_dir` (writing `pod_yaml` to spicepod.yaml when given)."""
    pod_dir.mkdir(parents=True, exist_ok=True)
    if pod_yaml is not None:
        (pod_dir / "spicepod.yaml").write_text(textwrap.dedent(pod_yaml))
    ports = free_port(), free_port(), free_port()
    log_path = pod_dir / f"satchel-{ports[0]}.log"
    full_env = {**os.environ, **(env or {})}
    if api_key:
        full_env["SATCHEL_TEST_API_KEY"] = api_key
    cmd = [sys.executable, "-m", "serving.cli", "run", "--pod", str(pod_dir / "spicepod.yaml"),
           "--http", f"127.0.0.1:{ports[0]}", "--flight", f"127.0.0.1:{ports[1]}",
           "--metrics", f"127.0.0.1:{ports[2]}", "--data-dir", str(data_dir or pod_dir / ".satchel")]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = SatchelServer(proc, pod_dir, *ports, api_key=api_key, log_path=log_path,
                           scheme="https" if tls else "http", env=env or {})
    deadline = time.monotonic() + timeout
    path = "/v1/ready" if wait_ready else "/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"satchel exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.http_url}{path}", timeout=2, verify=False).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"satchel did not become {'ready' if wait_ready else 'healthy'} in {timeout}s:\n{server.log()}")


@pytest.fixture
def satchel_server(tmp_path: Path) -> Iterator[Callable[..., SatchelServer]]:
    """Factory: `satchel_server(pod_yaml, api_key=None, files={name: bytes|str}, **kw)`; all stopped at teardown."""
    started: list[SatchelServer] = []

    def factory(pod_yaml: str | None = None, files: dict | None = None, pod_dir: Path | None = None,
                **kwargs) -> SatchelServer:
        target = pod_dir or tmp_path / f"pod{len(started)}"
        target.mkdir(parents=True, exist_ok=True)
        for name, content in (files or {}).items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        server = start_satchel(target, pod_yaml, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def demo_pod_dir(tmp_path: Path) -> Path:
    """A copy of the repo's default pod (spicepod.yaml + data/) in a temp dir."""
    target = tmp_path / "demo"
    shutil.copytree(REPO / "data", target / "data")
    shutil.copy(REPO / "spicepod.yaml", target / "spicepod.yaml")
    return target


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that collected no tests is a failure, never a silent success (pytest exit 5)."""
    if session.testscollected == 0 and exitstatus == 5:
        session.exitstatus = 1
