"""The fixtures leave nothing running: a server is stopped with its whole process group, and a
test session whose children outlive it fails."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.integration.elasticsearch_server import start_es_server
from tests.integration.postgres_server import start_server
from tests.integration.waiting import wait_for
from tests.processes import group_members, processes_in

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_stopping_the_es_fixture_stops_the_server_its_launcher_started() -> None:
    server = start_es_server()
    pgid = server.process.pid
    assert len(group_members(pgid)) >= 2, "noida-db's launcher runs the server as a child"
    os.kill(server.process.pid, signal.SIGSTOP)  # a launcher that does not pass signals on
    server.stop(grace=2)
    assert group_members(pgid) == []


def test_stopping_postgres_after_its_postmaster_died_leaves_no_backend() -> None:
    """A backend busy with a CPU-bound statement does not notice its postmaster die (it runs in
    its own process group): the fixture must still stop it."""
    server = start_server()
    postmaster = int((server.root / "data" / "postmaster.pid").read_text().split()[0])

    def spin() -> None:
        try:
            server.fetch("SELECT count(*) FROM generate_series(1, 10000000000)")
        except Exception:  # noqa: BLE001 - the backend is killed under it
            pass

    threading.Thread(target=spin, daemon=True).start()
    assert wait_for(lambda: len(processes_in(server.root)) > 5, timeout=10)  # postmaster, helpers, backend
    os.kill(postmaster, signal.SIGKILL)
    server.stop()
    assert processes_in(server.root) == []


def test_a_session_fails_when_a_child_process_survives_it(tmp_path: Path) -> None:
    seconds = f"{300 + random.random():.6f}"  # no other process on the machine runs this very command
    (tmp_path / "test_leak.py").write_text(textwrap.dedent(f"""
        import subprocess

        def test_starts_a_server_and_forgets_it():
            subprocess.Popen(["sleep", "{seconds}"])
    """))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                          str(tmp_path / "test_leak.py")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0, run.stdout
    assert "1 passed" in run.stdout and "still running after the session" in run.stdout
    assert f"sleep {seconds}" in run.stdout
    leaked = subprocess.run(["pgrep", "-f", f"^sleep {seconds}$"], capture_output=True, text=True).stdout.split()
    assert not leaked, "the session-end check must also stop what it found"
