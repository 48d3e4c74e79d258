"""How a child process ended, in words for logs and errors."""

from __future__ import annotations

import signal


def describe_exit(returncode: int) -> str:
    """`killed by SIGSEGV`, `killed by signal 99` or `exit code 1` (a Popen's return code)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
