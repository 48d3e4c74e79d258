"""Worker processes: the environment they start in, how one ended (in words for logs and
errors), and the worker's side: the kernel sacrifices it first and it ends with the sidecar."""

from __future__ import annotations

import importlib.abc
import os
import signal
import sys
import threading
import time
from pathlib import Path

_PROJECT = str(Path(__file__).resolve().parents[1])  # where `engine`, `connectors` ... are imported from


def worker_env(**extra: str) -> dict[str, str]:
    """The sidecar's environment with `extra`, and the project first on PYTHONPATH: a worker
    imports the sidecar's own code, whatever PYTHONPATH says."""
    return {**os.environ, **extra,
            "PYTHONPATH": os.pathsep.join(filter(None, [_PROJECT, os.environ.get("PYTHONPATH")]))}


def describe_exit(returncode: int) -> str:
    """`killed by SIGSEGV`, `killed by signal 99` or `exit code 1` (a Popen's return code)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def become_expendable() -> None:
    """In a worker process the sidecar started: the kernel's out-of-memory killer takes it before
    the sidecar, and it exits when the sidecar dies (a process busy in native code notices
    neither a closed pipe or socket nor its parent's death)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="satchel-exit-with-parent",
                     daemon=True).start()


class _Refused(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str]) -> None:
        self._names = names

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self._names:
            raise ModuleNotFoundError(f"{name} is not imported in this process", name=name)
        return None


def refuse_imports(*names: str) -> None:
    """In this process (the sidecar's, a worker's) the packages `names` and their submodules fail
    to import, as if not installed: for optional packages a library imports whether or not it
    needs them."""
    sys.meta_path.insert(0, _Refused(frozenset(names)))


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)
