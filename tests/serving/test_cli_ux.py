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
    run_help = satchel("run", "--help").stdout
    assert "HTTP bind address (default: 127.0.0.1:8090)" in run_help
    assert "SATCHEL_SHUTDOWN_TIMEOUT" in run_help and "SATCHEL_API_KEY" not in run_help
    assert "(default: table)" in satchel("sql", "--help").stdout
