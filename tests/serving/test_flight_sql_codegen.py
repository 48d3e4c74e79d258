"""serving/flight_sql/flight_sql_pb2.py is generated from its .proto and stays in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from serving.flight_sql import flight_sql_pb2

from tests.serving import flight_sql_codegen

REPO = flight_sql_codegen.REPO_ROOT
PB2 = flight_sql_codegen.OUTPUT


def _descriptor_of_proto(tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path / "set.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO}",
            f"--descriptor_set_out={out}",
            str(flight_sql_codegen.PROTO),
        ],
        check=True,
        capture_output=True,
    )
    proto = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in proto.message_type:  # protoc's Python output omits the derived json names
        for field in message.field:
            field.ClearField("json_name")
    return proto


def test_committed_module_matches_the_proto(tmp_path):
    committed = descriptor_pb2.FileDescriptorProto.FromString(
        flight_sql_pb2.DESCRIPTOR.serialized_pb
    )
    assert committed == _descriptor_of_proto(tmp_path), (
        "serving/flight_sql/flight_sql_pb2.py is stale: run `python tests/serving/flight_sql_codegen.py`"
    )


def test_regenerating_gives_the_committed_text():
    # Exact text depends on the protoc release; the descriptor check above is the invariant.
    text = flight_sql_codegen.render()
    committed = PB2.read_text()
    assert text == committed, "run `python tests/serving/flight_sql_codegen.py` and commit the result"


def test_module_is_runtime_version_neutral_and_uses_a_private_pool():
    text = PB2.read_text()
    assert "runtime_version" not in text  # works with every protobuf >= 4.25
    assert "_descriptor_pool.Default()" not in text


def test_coexists_with_another_copy_of_the_official_messages():
    import flightsql.flightsql_pb2 as theirs  # registers the same names in the default pool

    assert theirs.CommandStatementQuery.DESCRIPTOR.full_name == (
        flight_sql_pb2.CommandStatementQuery.DESCRIPTOR.full_name
    )
    wire = theirs.CommandGetTables(catalog="spice", include_schema=True).SerializeToString()
    ours = flight_sql_pb2.CommandGetTables.FromString(wire)
    assert ours.catalog == "spice" and ours.include_schema
    assert not ours.HasField("table_name_filter_pattern")
