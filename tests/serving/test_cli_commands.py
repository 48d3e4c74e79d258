"""`satchel validate`, `satchel datasets` and `satchel refresh` as a user runs them (the installed
console script), the last two against a real running sidecar."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

SATCHEL = Path(sys.executable).with_name("satchel")


def satchel(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [str(SATCHEL)] if SATCHEL.exists() else [sys.executable, "-m", "serving.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


@pytest.fixture(scope="module")
def demo(module_satchel_server, module_demo_pod_dir):
    return module_satchel_server(pod_dir=module_demo_pod_dir)


def test_validate_ok_pod_exits_0(demo_pod_dir):
    done = satchel("validate", "--pod", str(demo_pod_dir / "spicepod.yaml"))
    assert done.returncode == 0, done.stderr
    assert "ok (4 datasets, 1 views)" in done.stdout


def test_validate_bad_pod_exits_2_with_file_line_key(tmp_path):
    pod = tmp_path / "spicepod.yaml"
    pod.write_text(
        "version: v1\n"
        "kind: Spicepod\n"
        "name: bad\n"
        "datasets:\n"
        "  - from: file:x.csv\n"
        "    name: x\n"
        "    acceleration:\n"
        "      engine: sqlite\n"
        "      refresh_check_interval: soon\n"
        "    colour: blue\n"
    )
    done = satchel("validate", "--pod", str(pod))
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert f"{pod}:8: datasets[0].acceleration.engine: invalid value 'sqlite'; allowed: arrow, duckdb" in lines
    assert any(line.startswith(f"{pod}:9: datasets[0].acceleration.refresh_check_interval: invalid duration 'soon'")
               for line in lines), lines
    assert any(line.startswith(f"{pod}:10: datasets[0].colour:") for line in lines), lines
    assert done.stdout == ""


def test_validate_missing_file_exits_2(tmp_path):
    done = satchel("validate", "--pod", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert "nope.yaml" in done.stderr and "cannot read" in done.stderr


def test_datasets_lists_the_running_sidecar(demo):
    done = satchel("datasets", "--http", f"127.0.0.1:{demo.http_port}")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for name in ("orders", "customers", "products", "regions", "order_details"):
        assert name in out
    orders_line = next(line for line in out.splitlines() if line.startswith("orders "))
    assert "duckdb" in orders_line and "6000" in orders_line and "ready" in orders_line


def test_refresh_triggers_a_refresh(demo):
    def count() -> int:
        rows = httpx.get(f"{demo.http_url}/v1/datasets", timeout=10).json()
        return {d["name"]: d for d in rows}["customers"]["refresh_count"]

    before = count()
    done = satchel("refresh", "customers", "--http", f"127.0.0.1:{demo.http_port}")
    assert done.returncode == 0, done.stderr
    assert "customers" in done.stdout
    deadline = time.monotonic() + 10
    while count() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count() == before + 1


def test_refresh_errors_exit_1_with_a_message(demo):
    done = satchel("refresh", "nope", "--http", f"127.0.0.1:{demo.http_port}")
    assert done.returncode == 1
    assert "404" in done.stderr and "unknown dataset 'nope'" in done.stderr
    done = satchel("refresh", "regions", "--http", f"127.0.0.1:{demo.http_port}")
    assert done.returncode == 1 and "not accelerated" in done.stderr


def test_client_commands_report_an_unreachable_sidecar():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = satchel("datasets", "--http", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "cannot reach the sidecar" in done.stderr and "Traceback" not in done.stderr
