"""The README's set-up commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_has_the_two_setup_commands():
    run, test = _readme_commands()
    assert run.endswith("satchel run")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command():
    _, test = _readme_commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert test in ci.splitlines()


def test_default_pod_is_valid_and_uses_shipped_files():
    from engine.config import load_pod

    pod = load_pod(REPO / "spicepod.yaml")
    engines = {d.acceleration.engine for d in pod.datasets if d.acceleration}
    assert engines == {"duckdb", "arrow"}
    assert any(d.acceleration is None for d in pod.datasets)
    for d in pod.datasets:
        assert d.connector_prefix == "file"
        assert (REPO / d.connector_path).exists(), d.connector_path
        assert d.description and all(c.description for c in d.columns)
