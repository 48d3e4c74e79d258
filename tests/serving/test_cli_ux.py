"""The CLI a data person expects (issue 13): --version, --help with defaults and environment,
a clear line for a port in use, dataset refresh status, `refresh --wait`, `validate` hints.
The CLI runs as a subprocess (`python -m serving.cli` in this checkout), against real sidecars."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("run", "sql", "refresh", "validate", "mcp", "datasets")


def satchel(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`satchel ARGS` from this checkout (the console script may point at another one)."""
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=REPO, env={**os.environ, **(env or {})})


def test_version_is_the_package_metadata_version():
    done = satchel("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"satchel {version('satchel')}"


def test_every_subcommand_help_shows_defaults_and_its_environment_variables():
    from serving.cli import ENVIRONMENT

    read = set()  # every SATCHEL_* the program's code reads
    for folder in ("engine", "serving", "connectors", "accel"):
        for path in (REPO / folder).rglob("*.py"):
            read |= set(re.findall(r"\bSATCHEL_[A-Z_]+\b", path.read_text()))
    assert read == set(ENVIRONMENT), "ENVIRONMENT in serving/cli.py must list exactly what the code reads"
    shown = set()
    for command in COMMANDS:
        done = satchel(command, "--help", env={"SATCHEL_API_KEY": "s3cret-key"})
        assert done.returncode == 0, done.stderr
        assert "(default: " in done.stdout, command
        assert "s3cret-key" not in done.stdout  # never the key in --help
        epilog = done.stdout.split("environment variables:\n", 1)[1]
        shown |= set(re.findall(r"^  (SATCHEL_[A-Z_]+) ", epilog, re.M))
    assert shown == set(ENVIRONMENT)
    top = satchel("--help").stdout.split("environment variables:\n", 1)[1]
    assert set(re.findall(r"^  (SATCHEL_[A-Z_]+) ", top, re.M)) == set(ENVIRONMENT)
    run_help = satchel("run", "--help").stdout
    assert "HTTP bind address (default: 127.0.0.1:8090)" in run_help
    assert "SATCHEL_SHUTDOWN_TIMEOUT" in run_help and "SATCHEL_API_KEY" not in run_help
    assert "(default: table)" in satchel("sql", "--help").stdout


POD = """\
version: v1
kind: Spicepod
name: clitest
datasets:
  - from: file:good.csv
    name: good
    acceleration:
      engine: duckdb
      refresh_check_interval: 1h
      params:
        refresh_min_interval: 0s
  - from: file:flaky.csv
    name: flaky
    acceleration:
      engine: duckdb
      refresh_retry_enabled: false
      params:
        refresh_min_interval: 0s
  - from: file:gone.csv
    name: broken
    ready_state: on_registration
    acceleration:
      engine: arrow
      refresh_check_interval: 1h
"""
GOOD = "id,name\n1,a\n2,b\n3,c\n"


@pytest.fixture(scope="module")
def sidecar(module_satchel_server):
    return module_satchel_server(POD, files={"good.csv": GOOD, "flaky.csv": GOOD})


def _held_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("flag", ["--http", "--flight", "--metrics"])
def test_a_port_in_use_fails_start_up_with_one_line(sidecar, flag):
    """Another process's port, and the ports of a running sidecar (gRPC binds with SO_REUSEPORT:
    a second Flight server would silently share it)."""
    ports = {"--http": sidecar.http_port, "--flight": sidecar.flight_port, "--metrics": sidecar.metrics_port}
    with _held_port() as held:
        for port in (held.getsockname()[1], ports[flag]):
            addresses = {"--http": "127.0.0.1:0", "--flight": "127.0.0.1:0", "--metrics": "127.0.0.1:0",
                         flag: f"127.0.0.1:{port}"}
            done = satchel("run", "--pod", str(sidecar.pod_dir / "spicepod.yaml"),
                           *[x for item in addresses.items() for x in item], timeout=30)
            assert done.returncode == 1
            assert done.stderr == f"satchel: port {port} is already in use ({flag})\n"
            assert done.stdout == ""


def _line(out: str, name: str) -> list[str]:
    row = next(line for line in out.splitlines() if line.startswith(f"{name} "))
    return [cell.strip() for cell in row.split("|")]


def test_datasets_shows_last_and_next_refresh_and_a_failing_dataset_as_error(sidecar):
    import httpx

    from tests.integration.waiting import wait_for

    def broken() -> dict:
        return {d["name"]: d for d in httpx.get(f"{sidecar.http_url}/v1/datasets", timeout=10).json()}["broken"]

    assert wait_for(lambda: broken()["last_error"], timeout=20)  # its first attempt failed
    done = satchel("datasets", "--http", f"127.0.0.1:{sidecar.http_port}")
    assert done.returncode == 0, done.stderr
    header = [cell.strip() for cell in done.stdout.splitlines()[0].split("|")]
    assert header[:7] == ["name", "type", "status", "rows", "accelerated", "last refresh", "next refresh"]
    good = _line(done.stdout, "good")
    assert good[2:5] == ["ready", "3", "duckdb"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+\.\d\ds\)", good[5]), good
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", good[6]), good  # in about an hour
    broken = _line(done.stdout, "broken")
    assert broken[2] == "error" and broken[5] == "never", broken
    assert "rows so far" not in done.stdout
    errors = done.stdout.split("last errors:\n", 1)[1]
    assert f"  broken: dataset 'broken': file not found: {sidecar.pod_dir / 'gone.csv'}" in errors.splitlines()


def test_refresh_wait_prints_rows_and_duration(sidecar):
    (sidecar.pod_dir / "good.csv").write_text(GOOD + "4,d\n")
    try:
        done = satchel("refresh", "good", "--wait", "--http", f"127.0.0.1:{sidecar.http_port}")
        assert done.returncode == 0, done.stderr
        assert re.fullmatch(r"refreshed 'good': 4 rows in \d+\.\d\ds\n", done.stdout), done.stdout
        listed = satchel("datasets", "--http", f"127.0.0.1:{sidecar.http_port}").stdout
        assert _line(listed, "good")[3] == "4"  # it had ended when the command returned
    finally:
        (sidecar.pod_dir / "good.csv").write_text(GOOD)


def test_refresh_wait_reports_a_failed_refresh_with_exit_1(sidecar):
    (sidecar.pod_dir / "flaky.csv").unlink()
    try:
        done = satchel("refresh", "flaky", "--wait", "--http", f"127.0.0.1:{sidecar.http_port}")
        assert done.returncode == 1
        assert done.stdout == ""
        assert re.search(r"^error: refresh of 'flaky' failed in \d+\.\d\ds: dataset 'flaky': file not found: ",
                         done.stderr, re.M), done.stderr
        listed = satchel("datasets", "--http", f"127.0.0.1:{sidecar.http_port}").stdout
        assert _line(listed, "flaky")[2] == "ready (last refresh failed)"  # the last good data stays
    finally:
        (sidecar.pod_dir / "flaky.csv").write_text(GOOD)


def _pod(tmp_path: Path, datasets: str, views: str = "") -> Path:
    pod = tmp_path / "spicepod.yaml"
    pod.write_text(f"version: v1\nkind: Spicepod\nname: v\ndatasets:\n{datasets}{views}")
    return pod


def test_validate_names_the_dataset_and_path_of_a_missing_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "good.csv").write_text(GOOD)
    pod = _pod(tmp_path, "  - from: file:good.csv\n    name: good\n"
                         "  - from: file:data/orders.parquet\n    name: orders\n"
                         "  - from: file:logs/*.csv\n    name: logs\n")
    done = satchel("validate", "--pod", str(pod))
    assert done.returncode == 2, done.stdout
    assert done.stderr.splitlines() == [
        f"{pod}:7: datasets[1].from: dataset 'orders': file not found: {tmp_path / 'data/orders.parquet'}",
        f"{pod}:9: datasets[2].from: dataset 'logs': no files match '{tmp_path / 'logs/*.csv'}'",
    ]
    (tmp_path / "data/orders.parquet").write_bytes(b"PAR1")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/a.csv").write_text(GOOD)
    done = satchel("validate", "--pod", str(pod))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{pod}: ok (3 datasets, 0 views); files exist\n"


def test_validate_suggests_the_key_or_table_meant(tmp_path):
    (tmp_path / "orders.csv").write_text(GOOD)
    pod = _pod(tmp_path, "  - from: file:orders.csv\n    name: orders\n    acceleratoin:\n      engine: duckdb\n",
               "views:\n  - name: v\n    sql: SELECT * FROM ordres\n"
               "  - name: w\n    sql: WITH x AS (SELECT 1 AS a) SELECT * FROM x, v, runtime.task_history, zzz\n")
    done = satchel("validate", "--pod", str(pod))
    assert done.returncode == 2
    assert done.stderr.startswith(f"{pod}:7: datasets[0].acceleratoin: unknown key 'acceleratoin'; "
                                  "did you mean 'acceleration'? allowed: from, name,"), done.stderr
    valid = _pod(tmp_path, "  - from: file:orders.csv\n    name: orders\n",
                 "views:\n  - name: v\n    sql: SELECT * FROM ordres\n"
                 "  - name: w\n    sql: WITH x AS (SELECT 1 AS a) SELECT * FROM x, v, runtime.task_history, zzz\n")
    done = satchel("validate", "--pod", str(valid))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{valid}:9: views[0].sql: view 'v': unknown table 'ordres'; did you mean 'orders'?",
        f"{valid}:11: views[1].sql: view 'w': unknown table 'zzz'",  # a CTE, a view, the runtime table are known
    ]


def test_validate_connect_checks_that_sources_answer(tmp_path, source_server):
    source_server.files["/ok.csv"] = GOOD.encode()
    source_server.plan("/slow.csv", [(200, 30)])
    source_server.files["/slow.csv"] = GOOD.encode()
    pod = _pod(tmp_path, f"  - from: {source_server.url('/ok.csv')}\n    name: ok\n"
                         f"  - from: {source_server.url('/missing.csv')}\n    name: missing\n"
                         f"  - from: {source_server.url('/slow.csv')}\n    name: slow\n")
    assert satchel("validate", "--pod", str(pod)).returncode == 0  # without --connect no source is asked
    assert source_server.count("/ok.csv") == 0
    done = satchel("validate", "--pod", str(pod), "--connect", "--timeout", "2", env={"SATCHEL_LOG_LEVEL": "WARNING"})
    assert done.returncode == 2, done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{pod}:7: datasets[1].from: dataset 'missing': the source does not answer: ")
    assert "404" in lines[0]
    assert lines[1] == f"{pod}:9: datasets[2].from: dataset 'slow': the source does not answer: no answer in 2s"
    assert source_server.count("/ok.csv") >= 1


def test_an_invalid_address_fails_start_up_with_one_line(tmp_path):
    (tmp_path / "good.csv").write_text(GOOD)
    pod = _pod(tmp_path, "  - from: file:good.csv\n    name: good\n")
    done = satchel("run", "--pod", str(pod), "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0",
                   "--metrics", "localhost:metrics")
    assert done.returncode == 1
    assert done.stderr == "satchel: invalid address 'localhost:metrics' (--metrics); expected host:port\n"
