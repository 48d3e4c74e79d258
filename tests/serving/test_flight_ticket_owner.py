"""A DoGet with another principal's ticket is refused as unknown and leaves the ticket to its
owner (found: the handle was removed before the owner check). Real sidecar, two API keys."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2
from pyarrow import flight

from serving.flight_sql import flight_sql_pb2 as pb


def test_another_principals_ticket_is_refused_and_kept(satchel_server) -> None:
    server = satchel_server("""
version: v1
kind: Spicepod
name: owners
runtime:
  auth:
    api_key:
      enabled: true
      keys: ["${env:KEY_A}", "${env:KEY_B}"]
datasets:
  - from: file:t.csv
    name: t
""", files={"t.csv": "id\n1\n2\n3\n"}, env={"KEY_A": "key-a-1234", "KEY_B": "key-b-5678"},
        api_key="key-a-1234")
    client = flight.FlightClient(server.flight_uri)
    as_a = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer key-a-1234")])
    as_b = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer key-b-5678")])
    packed = any_pb2.Any()
    packed.Pack(pb.CommandStatementQuery(query="SELECT id FROM t ORDER BY id"))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(packed.SerializeToString()), as_a)
    ticket = info.endpoints[0].ticket
    with pytest.raises(KeyError, match="not_found: unknown or expired statement ticket"):  # NOT_FOUND
        client.do_get(ticket, as_b).read_all()
    assert client.do_get(ticket, as_a).read_all().column("id").to_pylist() == [1, 2, 3]  # the owner still has it
    client.close()
