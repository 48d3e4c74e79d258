"""The bare baseline: a `pyarrow.flight` server answering DoGet with one in-memory Arrow table.

Run as `python bench/_flight_baseline.py <parquet> <port>`; it prints `ready` once listening.
No SQL, no planning: the floor for moving the same bytes over Flight on this machine.
"""

from __future__ import annotations

import sys

import pyarrow.flight as flight
import pyarrow.parquet as pq


class TableServer(flight.FlightServerBase):
    def __init__(self, location: str, table) -> None:
        super().__init__(location)
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    table = pq.read_table(path)
    server = TableServer(f"grpc+tcp://127.0.0.1:{port}", table)
    print("ready", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
