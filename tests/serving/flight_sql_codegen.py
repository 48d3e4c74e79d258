"""Regenerate `serving/flight_sql/flight_sql_pb2.py` from `serving/flight_sql/flight_sql.proto`.

A developer script, not part of the package: run `python tests/serving/flight_sql_codegen.py`
(needs grpcio-tools, the `dev` extra).

protoc's Python output is post-processed in two ways, both deterministic:

* The runtime-version guard is removed. New protoc releases emit
  `ValidateProtobufRuntimeVersion(...)`, which refuses any protobuf runtime older than the
  generator (and `google.protobuf.runtime_version` does not exist before protobuf 5.26).
  The remaining builder-based code works on every runtime the project allows
  (protobuf >= 4.25).
* The messages are registered in a private descriptor pool instead of the process-wide
  default. Other libraries (flightsql-dbapi, for one) register the official
  `arrow.flight.protocol.sql` names too; two files defining the same symbols in one pool is
  a hard error. Wire names, `Any` type URLs and field numbers are unaffected.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("serving/flight_sql/flight_sql.proto")
OUTPUT = REPO_ROOT / "serving" / "flight_sql" / "flight_sql_pb2.py"

_VERSION_GUARD = re.compile(
    r"from google\.protobuf import runtime_version as _runtime_version\n", re.MULTILINE
)
_VERSION_CALL = re.compile(r"_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:.*\n)*?\)\n")
_VERSION_COMMENT = re.compile(r"# Protobuf Python Version: .*\n")
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "# Private pool: other libraries may register the same official message names.\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def run_protoc() -> str:
    """Run grpc_tools' protoc on the proto and return the raw generated module text."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO_ROOT}",
            f"--python_out={out}",
            str(PROTO),
        ]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return (Path(out) / PROTO.with_name("flight_sql_pb2.py")).read_text()


def postprocess(generated: str) -> str:
    """Make protoc's output runtime-version neutral and bind it to a private pool."""
    text = _VERSION_COMMENT.sub("", generated)
    text, guards = _VERSION_GUARD.subn("", text)
    text, calls = _VERSION_CALL.subn("", text)
    if guards != calls:
        raise RuntimeError("unexpected protoc output: runtime version guard not recognised")
    if text.count("DESCRIPTOR = " + _DEFAULT_POOL) != 1:
        raise RuntimeError("unexpected protoc output: descriptor pool registration not found")
    text = text.replace("DESCRIPTOR = " + _DEFAULT_POOL, _PRIVATE_POOL)
    header = "# Post-processed by tests/serving/flight_sql_codegen.py; regenerate, do not edit.\n"
    return header + text


def render() -> str:
    """The exact text `serving/flight_sql/flight_sql_pb2.py` should have."""
    return postprocess(run_protoc())


def main() -> None:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
