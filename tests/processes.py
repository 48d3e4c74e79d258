"""Server processes the test fixtures start: each in its own process group (its children too),
stopped as a group; and the session-end check that nothing the tests started survives them.

Linux only (reads /proc; psutil may not be installed).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

PR_SET_CHILD_SUBREAPER = 36


def start_group(cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen(cmd)` as the leader of a new session and process group."""
    return subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)


def stop_group(proc: subprocess.Popen, first: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Send `first` to `proc`'s process group, SIGKILL the group if any of it is left after
    `grace` seconds, and return once the leader is reaped and the group is gone (bounded)."""
    pgid = proc.pid
    if proc.poll() is not None and not group_members(pgid):
        return  # all gone already (and the group id may be anyone's by now)
    _killpg(pgid, first)
    if not _wait_group(proc, grace):
        _killpg(pgid, signal.SIGKILL)
        _wait_group(proc, 5.0)


def _wait_group(proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        proc.poll()  # reaps the leader once it exits
        if proc.returncode is not None and not group_members(proc.pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a live process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children(pid: int) -> list[int]:
    """Live (not zombie) children of `pid`, e.g. a sidecar's federated engine workers."""
    return [p for p in _pids() if (s := _stat(p)) and s[1] == pid and s[0] != "Z"]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    s = _stat(pid)
    return s is not None and s[0] != "Z"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by `pid` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by `pid` and its live children."""
    return sum(cpu_seconds(p) for p in [pid, *children(pid)])


def total_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of `pid` and all its descendants, those they reaped
    included (a sidecar's federated engine workers, killed and replaced ones too)."""
    parents, ticks = {}, {}
    for p in _pids():
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[p], ticks[p] = int(fields[1]), sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    tree, grown = {pid}, True
    while grown:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that still run (zombies left out)."""
    return [pid for pid in _pids() if (s := _stat(pid)) and s[2] == pgid and s[0] != "Z"]


def processes_in(directory: Path) -> list[int]:
    """Running processes whose working directory is `directory` or below (a database server's)."""
    root = str(directory.resolve())
    found = []
    for pid in _pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (cwd == root or cwd.startswith(root + "/")) and (s := _stat(pid)) and s[0] != "Z":
            found.append(pid)
    return found


def kill_processes_in(directory: Path, timeout: float = 5.0) -> list[int]:
    """SIGKILL `processes_in(directory)` (a database server's backends, which leave their group
    and outlive a dead postmaster) and wait until they are gone (bounded); the pids killed."""
    found = processes_in(directory)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any((s := _stat(p)) and s[0] != "Z" for p in found) and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def reap_orphan(pid: int) -> bool:
    """Whether `pid` is gone; a zombie this process adopted as subreaper (see below) is reaped.
    Only for processes no subprocess.Popen waits for (e.g. a daemon a launcher left to us)."""
    s = _stat(pid)
    if s is None:
        return True
    if s[0] != "Z":
        return False
    if s[1] == os.getpid():
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    return True


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (a server a fixture's launcher leaves
    behind then shows up as our child). False where the kernel does not support it."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def surviving_children(grace: float = 3.0) -> list[tuple[int, str]]:
    """This process's children still running after up to `grace` seconds, as (pid, command
    line); zombie children are reaped on the way."""
    me = os.getpid()
    deadline = time.monotonic() + grace
    while True:
        alive = []
        for pid in _pids():
            s = _stat(pid)
            if s is None or s[1] != me:
                continue
            if s[0] == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                continue
            alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return [(pid, command_line(pid)) for pid in alive]
        time.sleep(0.1)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and, when it leads a process group, the group."""
    s = _stat(pid)
    if s and s[2] == pid:
        _killpg(pid, signal.SIGKILL)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
