"""Local models run in a supervised worker process: real SIGKILL/SIGSEGV of the worker mid-request,
mid-stream and with a full queue, while data queries run; deadlines and client disconnects stop
generation. Real `satchel run`, the real Gemma 3 270M GGUF, real signals, real HTTP clients."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.llm, pytest.mark.integration]

ITEMS = "id,name\n" + "".join(f"{i},item{i}\n" for i in range(1, 101))
LONG = {"role": "user", "content": "Write a very long story about a lighthouse keeper and the sea."}


def _pod(model_path: Path) -> str:
    return f"""
version: v1
kind: Spicepod
name: worker_pod
datasets:
  - from: file:items.csv
    name: items
    acceleration:
      enabled: true
models:
  - from: file:{model_path}
    name: gemma
    params:
      chat_format: gemma
      n_ctx: 2048
      n_threads: 2
      temperature: 0
      queue_size: 3
  - from: file:{model_path}
    name: quick
    params:
      chat_format: gemma
      n_ctx: 2048
      n_threads: 2
      timeout: 1.5
"""


@pytest.fixture(scope="module")
def server(module_satchel_server, gguf):
    return module_satchel_server(_pod(gguf), files={"items.csv": ITEMS}, timeout=120)


def _model(server, name: str = "gemma") -> dict:
    models = httpx.get(f"{server.http_url}/v1/status", timeout=10).json()["models"]
    return next(m for m in models if m["name"] == name)


def _wait_ready(server, name: str = "gemma", timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _model(server, name)
        if info["status"] == "ready" and info["worker_pid"]:
            return info
        time.sleep(0.1)
    raise AssertionError(f"model {name} did not come back: {_model(server, name)}")


def _chat(server, max_tokens: int = 8, model: str = "gemma", timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/chat/completions", timeout=timeout, json={
        "model": model, "max_tokens": max_tokens, "messages": [LONG]})


class DataLoad:
    """Data queries on HTTP and Flight SQL in a loop: every one must succeed."""

    def __init__(self, server) -> None:
        self.server, self.stop, self.ok, self.failures = server, threading.Event(), 0, []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import adbc_driver_flightsql.dbapi as flightsql

        with flightsql.connect(self.server.flight_uri) as conn, conn.cursor() as cur:
            while not self.stop.is_set():
                try:
                    r = self.server.sql("SELECT count(*) AS n FROM items")
                    assert r.status_code == 200 and r.json() == [{"n": 100}], r.text
                    assert httpx.get(f"{self.server.http_url}/health", timeout=5).status_code == 200
                    cur.execute("SELECT sum(id) AS s FROM items")
                    assert cur.fetchall() == [(5050,)]
                    self.ok += 1
                except Exception as e:  # collected, asserted empty at the end
                    self.failures.append(repr(e))

    def __enter__(self) -> "DataLoad":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)
        assert self.failures == [] and self.ok > 0


def _kill_when_generating(server, sig: int, delay: float = 0.8) -> int:
    pid = _wait_ready(server)["worker_pid"]
    time.sleep(delay)
    os.kill(pid, sig)
    return pid


def test_sigkill_mid_completion_fails_only_that_request(server) -> None:
    before = _wait_ready(server)
    with DataLoad(server), concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(_chat, server, 1500)
        _kill_when_generating(server, signal.SIGKILL)
        r = running.result(timeout=120)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "model_unavailable"
        assert "SIGKILL" in r.json()["error"]["message"]
        after = _wait_ready(server)
    assert after["restarts"] == before["restarts"] + 1 and after["worker_pid"] != before["worker_pid"]
    assert "SIGKILL" in after["last_crash"]
    assert _chat(server).status_code == 200  # served by the restarted worker
    history = server.sql("SELECT task, model, error FROM runtime.task_history WHERE model = 'gemma'").json()
    assert any(h["task"] == "model_worker" and "SIGKILL" in h["error"] for h in history)
    assert any(h["task"] == "chat" and h["error"] and "SIGKILL" in h["error"] for h in history)
    metrics = httpx.get(server.metrics_url, timeout=10).text
    assert 'satchel_model_worker_restarts_total{model="gemma",reason="killed by SIGKILL"}' in metrics


def test_sigsegv_mid_stream_sends_an_sse_error_event(server) -> None:
    _wait_ready(server)
    events: list[str] = []
    with DataLoad(server):
        with httpx.stream("POST", f"{server.http_url}/v1/chat/completions", timeout=120, json={
                "model": "gemma", "stream": True, "max_tokens": 1500, "messages": [LONG]}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for line in lines:
                if line:
                    events.append(line)
                    break
            os.kill(_model(server)["worker_pid"], signal.SIGSEGV)
            events += [line for line in lines if line]
        _wait_ready(server)
    payloads = [json.loads(e[6:]) for e in events if e != "data: [DONE]"]
    errors = [p["error"] for p in payloads if "error" in p]
    assert len(errors) == 1 and errors[0]["code"] == "model_unavailable" and "SIGSEGV" in errors[0]["message"]
    assert events[-1] == "data: [DONE]"
    assert _chat(server).status_code == 200


def test_sigkill_with_a_full_queue_keeps_the_queued_requests(server) -> None:
    _wait_ready(server)
    with DataLoad(server), concurrent.futures.ThreadPoolExecutor(6) as pool:
        running = pool.submit(_chat, server, 1500)
        time.sleep(0.5)
        queued = [pool.submit(_chat, server, 4) for _ in range(3)]
        time.sleep(0.5)
        overflow = _chat(server, 4)
        _kill_when_generating(server, signal.SIGKILL, delay=0.2)
        assert running.result(timeout=120).status_code == 503
        codes = [f.result(timeout=180).status_code for f in queued]
    assert overflow.status_code == 429 and overflow.json()["error"]["code"] == "overloaded"
    assert codes == [200, 200, 200]  # queued work survives the crash and runs on the new worker


def test_deadline_cancels_generation_and_frees_the_worker(server) -> None:
    _wait_ready(server, "quick")
    r = _chat(server, 1500, model="quick")
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert "params.timeout" in r.json()["error"]["message"]
    info = _model(server, "quick")
    assert info["status"] == "ready" and info["restarts"] == 0  # generation stopped cooperatively
    assert _chat(server, 2, model="quick").status_code == 200


def test_client_disconnect_cancels_generation(server) -> None:
    before = _wait_ready(server)
    body = json.dumps({"model": "gemma", "stream": True, "max_tokens": 1800, "messages": [LONG]}).encode()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        received = b""
        while b"data: " not in received:  # generation has started
            chunk = s.recv(4096)
            assert chunk, received
            received += chunk
    deadline = time.monotonic() + 60
    while _model(server)["cancelled"] == before["cancelled"]:  # the worker itself stopped generating
        assert time.monotonic() < deadline, _model(server)
        time.sleep(0.1)
    assert _model(server)["restarts"] == before["restarts"]  # cooperatively, without a kill
    rows = server.sql("SELECT error FROM runtime.task_history WHERE task = 'chat' AND model = 'gemma' "
                      "ORDER BY task_id DESC LIMIT 1").json()
    assert "went away" in rows[0]["error"]
    assert _chat(server, 2).status_code == 200


def test_chat_task_rows_start_when_the_request_started(server) -> None:
    _wait_ready(server)
    t0 = time.time()
    assert _chat(server, 24).status_code == 200
    r = server.sql("SELECT started_at, duration_ms FROM runtime.task_history "
                   "WHERE task = 'chat' ORDER BY task_id DESC LIMIT 1", accept="application/vnd.apache.arrow.stream")
    import pyarrow as pa

    row = pa.ipc.open_stream(r.content).read_all().to_pylist()[0]
    started = row["started_at"].timestamp()
    assert t0 - 1 <= started <= t0 + row["duration_ms"] / 1000  # the start, not the end time
