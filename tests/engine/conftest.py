"""Fixtures for in-process engine tests: a real Runtime over a pod written to a temp dir."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Iterator

import pytest

from engine.config import load_pod
from engine.runtime import Runtime


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """`make_runtime(pod_yaml, files={relpath: bytes|str}, start=False, env=None)` -> Runtime (stopped at teardown).

    The pod lives in tmp_path/pod<n>/spicepod.yaml; file-mode data goes to <pod>/.satchel.
    """
    made: list[Runtime] = []

    def factory(pod_yaml: str, files: dict | None = None, start: bool = False, env: dict | None = None,
                pod_dir: Path | None = None, data_dir: Path | None = None) -> Runtime:
        target = pod_dir or tmp_path / f"pod{len(made)}"
        target.mkdir(parents=True, exist_ok=True)
        for name, content in (files or {}).items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        (target / "spicepod.yaml").write_text(textwrap.dedent(pod_yaml))
        pod = load_pod(target / "spicepod.yaml", env=env)
        runtime = Runtime(pod, data_dir=str(data_dir or target / ".satchel"))
        made.append(runtime)
        if start:
            runtime.start()
        return runtime

    yield factory
    for runtime in made:
        runtime.stop()
