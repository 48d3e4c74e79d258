"""Worker processes: the environment they start in, how one ended (in words for logs and
errors), and the worker's side: the kernel sacrifices it first and it ends with the sidecar."""

from __future__ import annotations

import os
import signal
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


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)
