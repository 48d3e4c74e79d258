"""A file-mode DuckDB accelerator killed (SIGKILL) in the middle of loads gives the space back
when it is opened again: the file does not grow by a load per crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from accel.duckdb import DuckDBAccelerator

REPO = Path(__file__).resolve().parents[2]

KILLED_LOAD = textwrap.dedent("""
    import os, signal, sys
    import pyarrow as pa
    from accel.duckdb import DuckDBAccelerator

    acc = DuckDBAccelerator(sys.argv[1])
    schema = pa.schema([("id", pa.int64()), ("h", pa.string())])

    def batches():
        for i in range(8):
            ids = pa.array(range(i * 65536, (i + 1) * 65536), pa.int64())
            yield pa.record_batch([ids, pa.compute.cast(ids, pa.string())], schema=schema)

    # killed in the window between a load's commit and its checkpoint
    acc._checkpoint = lambda: os.kill(os.getpid(), signal.SIGKILL)
    acc.replace("t", pa.RecordBatchReader.from_batches(schema, batches()))
""")


def _killed_load(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_LOAD, str(path)], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]


def test_space_from_killed_loads_is_reclaimed_at_open(tmp_path) -> None:
    path = tmp_path / "acc.duckdb"
    acc = DuckDBAccelerator(str(path))
    acc.close()
    sizes = []
    for _ in range(6):  # a crash loop: each process replays the last one's log, loads, and is killed
        _killed_load(path)
        sizes.append(os.path.getsize(path))
    reopened = DuckDBAccelerator(str(path))
    assert reopened.row_count("t") == 8 * 65536  # the committed load survived every kill
    reopened.close()
    # one load is about 8 MB: without the reclaim the file grew by about that per kill
    assert sizes[-1] <= sizes[0] + (4 << 20), sizes
